import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import NIOHTTP1
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real daemons on one real PostgreSQL, each with its own directories, ports and displays:
/// the shared queue, admission per host, rescue after kill -9 and after a partition.
@Suite("Cluster mode", .serialized)
struct ClusterTests {
    /// One kioskd of a test cluster.
    final class Host: Sendable {
        let id: String
        let dir: String
        let client: ControlClient
        let config: String
        let daemon: Mutex<DaemonProcess?> = Mutex(nil)

        init(id: String, index: Int, root: String, storeURL: String, secret: String, maxSessions: Int) throws {
            self.id = id
            dir = root + "/" + id
            guard mkdir(dir, 0o755) == 0 else { throw TestFailure("mkdir \(dir): errno \(errno)") }
            client = ControlClient(socketPath: dir + "/run/control.sock")
            config = dir + "/kioskd.yaml"
            let cluster = testClusterConfig(id: id, storeURL: storeURL, internalPort: try freePort(), secret: secret,
                                            timing: ["heartbeat: 300ms", "lease_ttl: 3s", "claim_grace: 200ms"])
            try writeFile(config, testDaemonConfig(dir: dir, port: try freePort(), cluster + """
                tasks:
                  max_sessions: \(maxSessions)
                capacity:
                  # Three daemons share two cores: one boot at a time each.
                  max_starting: 1
                sessions:
                  displays: \(600 + index * 20)-\(619 + index * 20)
                  ports: \(14500 + index * 500)-\(14999 + index * 500)
                """))
        }

        func start() async throws {
            let kioskd = try builtProduct("kioskd")
            let process = try DaemonProcess(executable: kioskd, arguments: ["serve", "--config", config],
                                            environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
            daemon.withLock { $0 = process }
            try await process.log.wait(for: "\(id)'s control socket", timeout: .seconds(60)) { $0.contains("kioskd/control: ready") }
        }

        var process: DaemonProcess? { daemon.withLock { $0 } }

        /// This host's session programs now (their marker names the session's directory).
        var sessionProcesses: [Int32] { processesWithEnvironment(containing: "KIOSKD_SESSION=\(dir)/run/sessions/") }

        func stop() async throws {
            guard let process, isAlive(process.pid) else { return }
            process.signal(SIGTERM)
            let code = try await process.waitExit(timeout: .seconds(60))
            #expect(code == 0, "\(id) exit \(code): \(process.stderr.suffix(1500))")
        }

        func json(_ method: HTTPMethod, _ path: String, _ body: String? = nil, status: Int = 200) async throws -> JSONValue {
            let answer = try await client.request(method, path, json: body)
            guard answer.status == status else { throw TestFailure("\(id) \(method) \(path): \(answer.status) \(answer.text)") }
            return try JSONDecoder().decode(JSONValue.self, from: Data(answer.body))
        }
    }

    /// A cluster of `n` hosts on a fresh database; stopped (SIGTERM, exit 0 expected) after `body`.
    func withCluster(_ name: String, hosts n: Int, maxSessions: Int = 2, proxied: Bool = false,
                     _ body: ([Host], TCPProxy?) async throws -> Void) async throws {
        let pg = try await PostgresFixture.shared.value
        let url = try await pg.createDatabase("\(name)_\(UInt32.random(in: 0...UInt32.max))")
        // The last host reaches PostgreSQL through a proxy the test can cut.
        let proxy = proxied ? try TCPProxy(to: pg.port) : nil
        let root = try makeTempDir("kioskd-cluster")
        defer { removeTree(root) }
        let secret = root + "/cluster.key"
        try Kiosk.writeFile(secret, randomBytes(32), mode: 0o600, owner: nil)
        let hosts = try (0..<n).map { i in
            let storeURL = (i == n - 1 ? proxy : nil).map { url.replacingOccurrences(of: ":\(pg.port)/", with: ":\($0.port)/") } ?? url
            return try Host(id: "h\(i + 1)", index: i, root: root, storeURL: storeURL, secret: secret, maxSessions: maxSessions)
        }
        do {
            for host in hosts { try await host.start() }
            try await body(hosts, proxy)
        } catch {
            for host in hosts { host.process?.signal(SIGKILL) }
            proxy?.cut()
            throw error
        }
        for host in hosts { try await host.stop() }
        proxy?.cut()
    }

    func state(_ task: JSONValue) -> String { task["state"]?.string ?? "?" }

    /// Waits on the shared store, read through `host`, until `done` holds for the task.
    @discardableResult
    func waitTask(_ host: Host, _ id: String, _ what: String, timeout: Duration = .seconds(60),
                  _ done: @escaping @Sendable (JSONValue) -> Bool) async throws -> JSONValue {
        try await waitForTask(id, what, timeout: timeout, get: { try await host.json(.GET, $0) }, done)
    }

    func events(_ host: Host, _ id: String) async throws -> [JSONValue] {
        try await host.json(.GET, "/v1/tasks/\(id)/events?limit=1000").array ?? []
    }

    @Test func thirtyTasksThroughThreeSocketsRunOnceEachWithinItsHostsAdmission() async throws {
        try await withCluster("cluster_thirty", hosts: 3) { hosts, _ in
            let cluster = try await hosts[0].json(.GET, "/v1/cluster")
            #expect(cluster["hosts"]?.array?.filter { $0["alive"]?.bool == true }.count == 3, "\(cluster)")
            #expect(cluster["signals"]?["live_hosts"]?.number == 3)
            let listing = try await runTool(try builtProduct("kioskd"), ["cluster", "--socket", hosts[1].dir + "/run/control.sock"])
            #expect(listing.contains("h2 (this host)") && listing.components(separatedBy: "· alive ·").count == 4 && listing.contains("suggested hosts"), "\(listing)")
            for n in 0..<30 {
                let created = try await hosts[n % 3].json(.POST, "/v1/tasks", #"{"task_id":"c\#(n)","url":"data:text/html,task \#(n)"}"#, status: 201)
                #expect(["queued", "starting"].contains(state(created)))
            }
            let signals = try await hosts[1].json(.GET, "/v1/cluster")["signals"]
            #expect((signals?["queue_depth"]?.number ?? 0) + (signals?["running"]?.number ?? 0) > 0)
            var completed: Set<String> = []
            var ranOn: [String: String] = [:]
            var busiest = 0
            let deadline = ContinuousClock.now + .seconds(300)
            while completed.count < 30 {
                let all = try await hosts[2].json(.GET, "/v1/tasks?limit=100").array ?? []
                if let ended = all.first(where: { !["queued", "starting", "running", "completed"].contains(state($0)) }) {
                    let id = ended["task_id"]?.string ?? "?"
                    let owner = hosts.first { $0.id == ended["host"]?.string }
                    throw TestFailure("task \(id) ended \(state(ended)): \(ended)\nevents: \(try await events(hosts[0], id))"
                                      + "\n\(owner?.id ?? "no host") log tail:\n" + (owner?.process?.stderr.suffix(6000) ?? ""))
                }
                guard ContinuousClock.now < deadline else {
                    let waiting = all.filter { state($0) != "completed" }
                    var detail = ""
                    for task in waiting { detail += "\n\(task)\n  events: \(try await events(hosts[0], task["task_id"]?.string ?? "?"))" }
                    for host in hosts { detail += "\n\(host.id) log tail:\n" + (host.process?.stderr.suffix(3000) ?? "") }
                    throw TestFailure("only \(completed.count) of 30 tasks ran within 300 s; unfinished:\(detail)")
                }
                let running = all.filter { state($0) == "running" }
                var perHost: [String: Int] = [:]
                for task in running { perHost[task["host"]?.string ?? "none", default: 0] += 1 }
                #expect(perHost["none"] == nil, "a running task names its host")
                busiest = max(busiest, perHost.values.max() ?? 0)
                for host in hosts { busiest = max(busiest, Set(host.sessionProcesses.compactMap(Self.sessionDirectory)).count) }
                for (i, task) in running.enumerated() {
                    guard let id = task["task_id"]?.string, !completed.contains(id) else { continue }
                    ranOn[id] = task["host"]?.string
                    // Completed through another host's socket than the one that runs it, now and then.
                    _ = try await hosts[i % 3].json(.POST, "/v1/tasks/\(id)/complete", #"{"result":{"ok":true}}"#)
                    completed.insert(id)
                }
                if running.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(busiest <= 2, "no host ran more sessions than its max_sessions (2); saw \(busiest)")
            #expect(Set(ranOn.values) == ["h1", "h2", "h3"], "every host ran some: \(ranOn)")
            for n in 0..<30 {
                let id = "c\(n)"
                let history = try await events(hosts[0], id)
                let claims = history.filter { $0["type"]?.string == "claimed" }
                let boots = history.filter { $0["type"]?.string == "session_booting" }
                let runs = history.filter { $0["data"]?["to"]?.string == "running" }
                #expect(claims.count == 1 && boots.count == 1 && runs.count == 1, "\(id) ran once: \(history)")
                #expect(claims.first?["data"]?["host"]?.string == ranOn[id], "\(id) ran where it was claimed")
                #expect(history.allSatisfy { $0["type"]?.string != "requeued" })
            }
            // Every session ends on the host that ran it (the stop was heard through NOTIFY).
            try await withTimeout(.seconds(60), "every session to end") {
                while hosts.contains(where: { !$0.sessionProcesses.isEmpty }) { try await Task.sleep(for: .milliseconds(100)) }
            }
        }
    }

    /// `…/run/sessions/<dir>/…` in a marker: the session's directory.
    static func sessionDirectory(_ pid: Int32) -> String? {
        guard let environ = try? readText("/proc/\(pid)/environ") else { return nil }
        return environ.split(separator: "\0").first { $0.hasPrefix("KIOSKD_SESSION=") }.map(String.init)
    }

    @Test func aKilledHostsTasksAreInterruptedWithinItsLeaseAndItRejoins() async throws {
        try await withCluster("cluster_kill", hosts: 2) { hosts, _ in
            let (h1, h2) = (hosts[0], hosts[1])
            for id in ["k1", "k2"] { _ = try await h2.json(.POST, "/v1/tasks", #"{"task_id":"\#(id)","url":"data:text/html,\#(id)"}"#, status: 201) }
            for id in ["k1", "k2"] {
                let task = try await waitTask(h1, id, "running") { $0["state"]?.string == "running" }
                #expect(task["host"]?.string == "h2", "the creating host with room claims its own tasks")
            }
            let before = try await h1.json(.GET, "/v1/cluster")["hosts"]?.array?.first { $0["id"]?.string == "h2" }
            let killed = ContinuousClock.now
            h2.process?.signal(SIGKILL)
            #expect(try await h2.process?.waitExit() == 128 + SIGKILL)
            for id in ["k1", "k2"] {
                let task = try await waitTask(h1, id, "interrupted", timeout: .seconds(30)) { $0["state"]?.string == "interrupted" }
                #expect(task["reason"]?.string?.contains("host h2 stopped renewing its lease") == true, "\(task)")
                #expect(try await events(h1, id).last?["data"]?["host"]?.string == "h2", "the event names the host")
            }
            let rescue = ContinuousClock.now - killed
            #expect(rescue < .seconds(30), "rescued in \(rescue)")
            // A task created while h2 is dead runs on h1.
            _ = try await h1.json(.POST, "/v1/tasks", #"{"task_id":"k3","url":"data:text/html,k3"}"#, status: 201)
            #expect(try await waitTask(h1, "k3", "running") { $0["state"]?.string == "running" }["host"]?.string == "h1")
            // h2 comes back: it sweeps what the kill left and joins with a new epoch.
            try await h2.start()
            #expect(h2.sessionProcesses.isEmpty, "the restarted host swept its killed sessions")
            let after = try await h2.json(.GET, "/v1/cluster")["hosts"]?.array?.first { $0["id"]?.string == "h2" }
            #expect(after?["alive"]?.bool == true && (after?["epoch"]?.number ?? 0) > (before?["epoch"]?.number ?? .infinity), "\(String(describing: after))")
            _ = try await h1.json(.POST, "/v1/tasks/k3/complete", "{}")
        }
    }

    @Test func aDrainingHostClaimsNothingButStillTakesCreatesForTheOthers() async throws {
        try await withCluster("cluster_drain", hosts: 2) { hosts, _ in
            let (h1, h2) = (hosts[0], hosts[1])
            _ = try await h1.json(.POST, "/v1/tasks", #"{"task_id":"d1","url":"data:text/html,d1"}"#, status: 201)
            #expect(try await waitTask(h1, "d1", "running") { $0["state"]?.string == "running" }["host"]?.string == "h1")
            // A long poll on the other host ends with an event appended on the owner (NOTIFY).
            let last = Int(try await h2.json(.GET, "/v1/tasks/d1")["last_event"]?.number ?? 0)
            let asked = ContinuousClock.now
            async let polled = h2.json(.GET, "/v1/tasks/d1/events?since=\(last)&wait=20")
            _ = try await h1.json(.POST, "/v1/tasks/d1/events", #"{"type":"agent_step","data":{"n":1}}"#, status: 201)
            // The session's own events after `running` (its page loading) may wake the poll
            // first: each answer is a wake, so ask again after it until the agent's step is heard.
            var heard = try await polled.array ?? []
            while !heard.contains(where: { $0["type"]?.string == "agent_step" }), let seq = heard.last?["seq"]?.number {
                heard = try await h2.json(.GET, "/v1/tasks/d1/events?since=\(Int(seq))&wait=20").array ?? []
            }
            #expect(heard.first { $0["type"]?.string == "agent_step" }?["data"]?["n"]?.number == 1, "\(heard)")
            // Woken, not timed out: without the notification it would answer after its 20 s.
            #expect(ContinuousClock.now - asked < .seconds(10))
            _ = try await h1.json(.POST, "/v1/drain")
            // Created on the draining host: queued for the cluster, run by the other.
            _ = try await h1.json(.POST, "/v1/tasks", #"{"task_id":"d2","url":"data:text/html,d2"}"#, status: 201)
            #expect(try await waitTask(h1, "d2", "running") { $0["state"]?.string == "running" }["host"]?.string == "h2")
            try await withTimeout(.seconds(10), "the cluster to see h1 draining") {
                while try await h2.json(.GET, "/v1/cluster")["hosts"]?.array?.first(where: { $0["id"]?.string == "h1" })?["draining"]?.bool != true {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            // Its running task goes on, and ends as asked.
            #expect(try await h2.json(.GET, "/v1/tasks/d1")["state"]?.string == "running")
            for id in ["d1", "d2"] { _ = try await h2.json(.POST, "/v1/tasks/\(id)/complete", "{}") }
        }
    }

    @Test func aHostCutOffFromPostgresStopsItsSessionsAndTheOthersCarryOn() async throws {
        try await withCluster("cluster_partition", hosts: 2, proxied: true) { hosts, proxy in
            let (h1, h2) = (hosts[0], hosts[1])
            guard let proxy else { throw TestFailure("no proxy") }
            _ = try await h2.json(.POST, "/v1/tasks", #"{"task_id":"p1","url":"data:text/html,p1"}"#, status: 201)
            #expect(try await waitTask(h1, "p1", "running") { $0["state"]?.string == "running" }["host"]?.string == "h2")
            #expect(!h2.sessionProcesses.isEmpty)
            let lines = h2.process?.log.count ?? 0
            proxy.cut()
            // h2 cannot renew: by the end of its lease it stops its sessions and claims nothing.
            try await h2.process?.log.wait(for: "h2 to give up its lease", after: lines, timeout: .seconds(20)) { $0.contains("lost its cluster lease") }
            try await withTimeout(.seconds(30), "h2's sessions to stop") {
                while !h2.sessionProcesses.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            }
            // The others see its lease end and end its task, naming it.
            let task = try await waitTask(h1, "p1", "interrupted", timeout: .seconds(30)) { $0["state"]?.string == "interrupted" }
            #expect(task["reason"]?.string?.contains("h2") == true)
            // New work goes to the hosts that can reach the store.
            _ = try await h1.json(.POST, "/v1/tasks", #"{"task_id":"p2","url":"data:text/html,p2"}"#, status: 201)
            #expect(try await waitTask(h1, "p2", "running") { $0["state"]?.string == "running" }["host"]?.string == "h1")
            // Healed, h2 joins again under a new epoch and takes work.
            try proxy.mend()
            try await h2.process?.log.wait(for: "h2 to join again", after: lines, timeout: .seconds(30)) { $0.contains("joined the cluster") }
            _ = try await h1.json(.POST, "/v1/tasks/p2/complete", "{}")
        }
    }
}
