// Cluster mode on one PostgreSQL: claims per second from the shared queue (the store alone),
// create → running through the queue with 1 and 3 hosts (warm pool on), and the time from a
// host's kill -9 to its tasks interrupted elsewhere, beside the rescue defaults of the job
// queues built the same way (published, not run here).
import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Logging
import Store

#if canImport(Glibc)
import Glibc
#endif

/// One kioskd of a benchmark cluster.
private final class BenchHost: @unchecked Sendable {
    let id: String
    let dir: String
    let client: ControlClient
    var process: DaemonProcess?

    init(id: String, index: Int, root: String, storeURL: String, secret: String, warm: Int, heartbeat: String, leaseTTL: String) throws {
        self.id = id
        dir = root + "/" + id
        guard mkdir(dir, 0o755) == 0 else { throw TestFailure("mkdir \(dir): errno \(errno)") }
        client = ControlClient(socketPath: dir + "/run/control.sock")
        let cluster = testClusterConfig(id: id, storeURL: storeURL, internalPort: try freePort(), secret: secret,
                                        timing: ["heartbeat: \(heartbeat)", "lease_ttl: \(leaseTTL)"])
        try writeText(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: try freePort(), cluster + """
            tasks:
              max_sessions: 3
            sessions:
              warm: \(warm)
              displays: \(950 + index * 15)-\(964 + index * 15)
              ports: \(8500 + index * 400)-\(8899 + index * 400)
            """))
    }

    func start() async throws {
        let started = try DaemonProcess(executable: sibling("kioskd"), arguments: ["serve", "--config", dir + "/kioskd.yaml"],
                                        environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
        process = started
        try await started.log.wait(for: "\(id)'s control socket", timeout: .seconds(90)) { $0.contains("kioskd/control: ready") }
    }

    func stop() async throws {
        guard let process, isAlive(process.pid) else { return }
        process.signal(SIGTERM)
        _ = try await process.waitExit(timeout: .seconds(90))
    }

    func get(_ path: String) async throws -> JSONValue {
        try decoded(try await client.request(.GET, path), path)
    }

    func post(_ path: String, _ body: String) async throws -> JSONValue {
        try decoded(try await client.request(.POST, path, json: body), path)
    }

    private func decoded(_ answer: ControlClient.Answer, _ path: String) throws -> JSONValue {
        guard (200..<300).contains(answer.status) else { throw TestFailure("\(id) \(path): \(answer.status) \(answer.text)") }
        return try JSONDecoder().decode(JSONValue.self, from: Data(answer.body))
    }

    /// Waits (polling the store) until this host's warm pool is full again.
    func warmReady(_ want: Int) async throws {
        try await withTimeout(.seconds(60), "\(id)'s warm pool") {
            while (try await self.get("/v1/capacity")["warm"]?.number ?? 0) < Double(want) { try await Task.sleep(for: .milliseconds(50)) }
        }
    }
}

/// `hosts` daemons on a fresh database, stopped after `body` (killed if it throws).
private func withBenchCluster<T>(_ name: String, hosts n: Int, warm: Int, heartbeat: String = "2s", leaseTTL: String = "15s",
                                 _ body: ([BenchHost]) async throws -> T) async throws -> T {
    let pg = try await PostgresFixture.shared.value
    let url = try await pg.createDatabase("\(name)_\(UInt32.random(in: 0...UInt32.max))")
    let root = try makeTempDir("kioskd-cluster-bench")
    defer { removeTree(root) }
    let secret = root + "/cluster.key"
    try writeFile(secret, randomBytes(32), mode: 0o600, owner: nil)
    let hosts = try (0..<n).map { try BenchHost(id: "b\($0 + 1)", index: $0, root: root, storeURL: url, secret: secret, warm: warm,
                                                heartbeat: heartbeat, leaseTTL: leaseTTL) }
    do {
        for host in hosts { try await host.start() }
        let result = try await body(hosts)
        for host in hosts { try await host.stop() }
        return result
    } catch {
        for host in hosts { host.process?.signal(SIGKILL) }
        throw error
    }
}

/// create?wait=true → running, one task after another, each created on the next host in turn,
/// then completed; the next waits for the warm pools to be full again.
private func createToRunning(hosts n: Int, runs: Int) async throws -> (times: [Double], warmHits: Int) {
    try await withBenchCluster("bench_start\(n)", hosts: n, warm: 1) { hosts in
        var times: [Double] = [], warmHits = 0
        for host in hosts { try await host.warmReady(1) }
        for i in 0..<runs {
            let host = hosts[i % n]
            let t0 = monotonic()
            let task = try await host.post("/v1/tasks?wait=true", #"{"task_id":"s\#(i)","url":"data:text/html,bench \#(i)"}"#)
            times.append(monotonic() - t0)
            guard task["state"]?.string == "running" else { throw TestFailure("task s\(i) is \(task["state"]?.string ?? "?"), not running: \(task)") }
            let events = try await host.get("/v1/tasks/s\(i)/events?limit=100").array ?? []
            if events.contains(where: { $0["data"]?["warm_session"] != nil }) { warmHits += 1 }
            _ = try await host.post("/v1/tasks/s\(i)/complete", "{}")
            for h in hosts { try await h.warmReady(1) }
        }
        return (times, warmHits)
    }
}

/// Claims per second from a queue of `tasks`, `claimers` stores claiming `batch` at a time at once.
private func claimRate(tasks: Int, claimers: Int, batch: Int) async throws -> Double {
    let pg = try await PostgresFixture.shared.value
    let url = try await pg.createDatabase("bench_claims_\(UInt32.random(in: 0...UInt32.max))")
    guard case .postgres(let settings) = try StoreLocation(url: url) else { throw TestFailure("not a postgres URL") }
    var logger = Logger(label: "bench.claims")
    logger.logLevel = .warning
    let stores = try (0..<claimers).map { _ in try PostgresTaskStore(settings, logger: logger) }
    defer { Task { for store in stores { await store.close() } } }
    try await stores[0].migrate()
    let idle = HostLoad(maxSessions: tasks, active: 0, available: tasks, draining: false)
    var fences: [Fence] = []
    for (i, store) in stores.enumerated() {
        fences.append(try await store.register(host: "c\(i)", address: "127.0.0.1:\(i + 1)", version: "bench", load: idle, ttlMS: 600_000))
    }
    for n in 0..<tasks {
        _ = try await stores[n % claimers].create(TaskRecord(id: "q\(n)", state: .queued, request: #"{"url":"about:blank"}"#, createdAt: Int64(n),
                                                             updatedAt: Int64(n), origin: "c\(n % claimers)"),
                                                  event: NewEvent(type: "state_changed", time: Int64(n), data: #"{"to":"queued"}"#))
    }
    let t0 = monotonic()
    let claimed = try await withThrowingTaskGroup(of: Int.self) { group in
        for (store, fence) in zip(stores, fences) {
            group.addTask {
                var mine = 0
                while true {
                    let got = try await store.claim(fence, limit: batch, graceMS: 0).count
                    if got == 0 { return mine }
                    mine += got
                }
            }
        }
        return try await group.reduce(0, +)
    }
    let elapsed = monotonic() - t0
    guard claimed == tasks else { throw TestFailure("\(claimed) of \(tasks) claimed") }
    for store in stores { await store.close() }
    return Double(tasks) / elapsed
}

/// kill -9 of a host running `tasks` tasks → each seen interrupted through another host.
private func rescueTime(heartbeat: String, leaseTTL: String, tasks: Int) async throws -> Double {
    try await withBenchCluster("bench_rescue", hosts: 2, warm: 0, heartbeat: heartbeat, leaseTTL: leaseTTL) { hosts in
        let (survivor, victim) = (hosts[0], hosts[1])
        for i in 0..<tasks {
            let task = try await victim.post("/v1/tasks?wait=true", #"{"task_id":"r\#(i)","url":"data:text/html,r\#(i)"}"#)
            guard task["state"]?.string == "running", task["host"]?.string == victim.id else { throw TestFailure("r\(i) is not running on \(victim.id): \(task)") }
        }
        let t0 = monotonic()
        victim.process?.signal(SIGKILL)
        _ = try await victim.process?.waitExit()
        try await withTimeout(.seconds(120), "the victim's tasks to be interrupted") {
            for i in 0..<tasks {
                while try await survivor.get("/v1/tasks/r\(i)")["state"]?.string != "interrupted" { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
        let rescued = monotonic() - t0
        // Back once, as systemd would bring it: its start sweeps the killed sessions' cgroups and
        // its port-guard table, and its clean stop leaves neither behind on the machine.
        try await victim.start()
        return rescued
    }
}

func printCluster(_ options: Options) async throws {
    let smoke = isSmokeRun
    let runs = smoke ? 2 : max(6, options.capacityRuns)
    print("\ncluster mode: \(runs) tasks one after the other through the shared queue (create?wait=true → running, sessions.warm: 1 per host), each created on the next host in turn:")
    let one = try await createToRunning(hosts: 1, runs: runs)
    let three = try await createToRunning(hosts: 3, runs: runs)
    print(row("create → running (ms)", "1 host", "3 hosts"))
    print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    print(row("p50", ms(percentile(one.times, 0.5)), ms(percentile(three.times, 0.5))))
    print(row("p99", ms(percentile(one.times, 0.99)), ms(percentile(three.times, 0.99))))
    print(row("tasks that took a warm session", "\(one.warmHits)/\(runs)", "\(three.warmHits)/\(runs)"))

    let queue = smoke ? 60 : 3000
    print("\nclaims from a shared queue of \(queue) tasks (FOR UPDATE SKIP LOCKED, one transaction per claim with its event), hosts claiming at once:")
    print(row("claims per second", "1 at a time", "8 at a time"))
    print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    for claimers in [1, 3] {
        let single = try await claimRate(tasks: queue, claimers: claimers, batch: 1)
        let batched = try await claimRate(tasks: queue, claimers: claimers, batch: 8)
        print(row("\(claimers) host\(claimers == 1 ? "" : "s")", String(Int(single)), String(Int(batched))))
    }

    print("\nrescue: kill -9 of a host running 2 tasks → both interrupted, seen through the other host:")
    print(row("lease (heartbeat)", "rescue (s)", "peers (s)"))
    print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    let leases: [(String, String)] = smoke ? [("300ms", "3s")] : [("300ms", "3s"), ("2s", "15s")]
    for (heartbeat, ttl) in leases {
        let t = try await rescueTime(heartbeat: heartbeat, leaseTTL: ttl, tasks: 2)
        print(row("\(ttl) (\(heartbeat))" + (ttl == "15s" ? ", the default" : ""), format1(t), "3600 / 14400"))
    }
    print("peers: their defaults for the work of a dead worker (published, not run here): River RescueStuckJobsAfter 1 h and Oban Lifeline 60 min (3600 s), graphile-worker 4 h (14400 s)")
    try await printClusterRelay(smoke: smoke)
}

private func format1(_ seconds: Double) -> String { String(Int((seconds * 10).rounded())).withDecimal(1) }
