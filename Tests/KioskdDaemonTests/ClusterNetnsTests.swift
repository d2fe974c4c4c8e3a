import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import NIOHTTP1
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Host-to-host across a real link: host A runs inside a network namespace, joined to the root
/// namespace by a veth pair, its internal listener on its end's address; host B runs in the root
/// namespace; both on one PostgreSQL that listens on loopback and on the link's root end. A
/// viewer and Playwright on B's public listener reach A's task across the link; taking A's end
/// of the link down partitions A from the store and from B. Root only (ip netns).
@Suite("Cluster across a real link (network namespace)", .serialized)
struct ClusterNetnsTests {
    struct Host {
        let id: String
        let dir: String
        let publicPort: Int
        let internalPort: Int
        let daemon: DaemonProcess
        var control: ControlClient { ControlClient(socketPath: dir + "/run/control.sock") }

        /// This host's session programs now (their marker names the session's directory).
        var sessionProcesses: [Int32] { processesWithEnvironment(containing: "KIOSKD_SESSION=\(dir)/run/sessions/") }

        func json(_ method: HTTPMethod, _ path: String, _ body: String? = nil, status: Int = 200) async throws -> JSONValue {
            let answer = try await control.request(method, path, json: body)
            guard answer.status == status else { throw TestFailure("\(id) \(method) \(path): \(answer.status) \(answer.text)") }
            return try JSONValue(parsing: answer.body)
        }

        func token(_ role: String, _ task: String) async throws -> String {
            guard let token = try await json(.POST, "/v1/tasks/\(task)/viewer-token", #"{"role":"\#(role)"}"#, status: 201)["token"]?.string else {
                throw TestFailure("no token in the answer")
            }
            return token
        }
    }

    /// Starts one host: inside `namespace` when given (through nsenter), its internal listener on
    /// `internalHost`. Displays 660–679 and ports 50000–50999 are this suite's.
    func start(_ id: String, root: String, store: String, secret: String, internalHost: String, namespace: NetworkNamespace?,
               displays: String, ports: String) async throws -> Host {
        let dir = root + "/" + id
        guard mkdir(dir, 0o755) == 0 else { throw TestFailure("cannot make \(dir): errno \(errno)") }
        let publicPort = try freePort(), internalPort = try freePort()
        try writeFile(dir + "/kioskd.yaml", Array(testDaemonConfig(dir: dir, port: publicPort, """
            store:
              url: "\(store)"
            sessions:
              displays: \(displays)
              ports: \(ports)
            cluster:
              enabled: true
              host_id: \(id)
              advertise: \(internalHost):\(internalPort)
              listen: \(internalHost):\(internalPort)
              secret_file: \(secret)
              heartbeat: 300ms
              lease_ttl: 3s
              claim_grace: 200ms
            """).utf8), mode: 0o644, owner: nil)
        let kioskd = try builtProduct("kioskd"), arguments = ["serve", "--config", dir + "/kioskd.yaml"]
        let command = try namespace?.command(kioskd, arguments) ?? (executable: kioskd, arguments: arguments)
        let daemon = try DaemonProcess(executable: command.executable, arguments: command.arguments,
                                       environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
        do {
            try await daemon.log.wait(for: "\(id)'s internal listener", timeout: .seconds(60)) { $0.contains("kioskd/internal: ready") }
            try await daemon.log.wait(for: "\(id)'s public listener", timeout: .seconds(60)) { $0.contains("kioskd/public: ready") }
        } catch {
            daemon.signal(SIGKILL)
            throw TestFailure("\(id) did not start: \(error)\n\(daemon.stderr.suffix(3000))")
        }
        return Host(id: id, dir: dir, publicPort: publicPort, internalPort: internalPort, daemon: daemon)
    }

    /// A in a fresh namespace, B in the root one, on a PostgreSQL of their own (A reaches it
    /// across the link); both stopped after `body` (SIGTERM, exit 0 expected; SIGKILL if it
    /// threw), then the server and the namespace removed, however the body ended.
    func withLinkedHosts(_ name: String, _ body: (NetworkNamespace, Host, Host) async throws -> Void) async throws {
        // Removed last: after the namespace, whose removal kills whatever still runs in it.
        let root = try makeTempDir("kioskd-cluster-netns")
        defer { removeTree(root) }
        let secret = root + "/cluster.key"
        try writeFile(secret, randomBytes(32), mode: 0o600, owner: nil)
        try await withNetworkNamespace { ns in
            let pg = try await PostgresFixture.start(durable: false, alsoListen: [ns.outsideAddress], trusting: [ns.insideAddress + "/32"])
            defer { pg.stop() }
            let local = try await pg.createDatabase("\(name)_\(UInt32.random(in: 0...UInt32.max))")
            let acrossTheLink = local.replacingOccurrences(of: "@127.0.0.1:", with: "@\(ns.outsideAddress):")
            let a = try await start("a", root: root, store: acrossTheLink, secret: secret, internalHost: ns.insideAddress, namespace: ns,
                                    displays: "660-669", ports: "17000-17499")
            let b: Host
            do {
                b = try await start("b", root: root, store: local, secret: secret, internalHost: "127.0.0.1", namespace: nil,
                                    displays: "670-679", ports: "17500-17999")
            } catch {
                a.daemon.signal(SIGKILL)
                _ = try? await a.daemon.waitExit()
                throw error
            }
            do {
                try await body(ns, a, b)
            } catch {
                for host in [a, b] { host.daemon.signal(SIGKILL) }
                for host in [a, b] { _ = try? await host.daemon.waitExit() }
                // A killed daemon leaves its sessions behind: they go too.
                for pid in a.sessionProcesses + b.sessionProcesses { kill(pid, SIGKILL) }
                throw error
            }
            for host in [a, b] { host.daemon.signal(SIGTERM) }
            for host in [a, b] {
                let code = try await host.daemon.waitExit(timeout: .seconds(60))
                #expect(code == 0, "\(host.id) exit \(code): \(host.daemon.stderr.suffix(3000))")
            }
        }
    }

    /// Waits on the shared store, read through `host`, until `done` holds for the task.
    @discardableResult
    func waitTask(_ host: Host, _ id: String, _ what: String, timeout: Duration,
                  _ done: @escaping @Sendable (JSONValue) -> Bool) async throws -> JSONValue {
        try await waitForTask(id, what, timeout: timeout, get: { try await host.json(.GET, $0) }, done)
    }

    @Test func aViewerAndPlaywrightOnBReachTheTaskOnAAcrossTheLink() async throws {
        try await withLinkedHosts("netns_relay") { ns, a, b in
            let created = try await a.json(.POST, "/v1/tasks?wait=true", #"{"task_id":"n1","url":"data:text/html,<title>over-veth</title><body>a</body>"}"#, status: 201)
            #expect(created["state"]?.string == "running" && created["host"]?.string == "a", "\(created)")
            // B reaches A at the link's address, not at a loopback one.
            let hosts = try await b.json(.GET, "/v1/cluster")["hosts"]?.array ?? []
            let seen = hosts.first { $0["id"]?.string == "a" }
            #expect(seen?["address"]?.string == "\(ns.insideAddress):\(a.internalPort)" && seen?["alive"]?.bool == true, "\(hosts)")
            let view = try await b.token("view", "n1"), agent = try await b.token("agent", "n1")

            // A viewer on B: a whole screen of A's session, every byte of it across the link.
            let before = ns.outsideBytes
            let (screen, update, crossing) = try await blocking { [a, ns] () throws -> (RFBScreen, Int, [String]) in
                let viewer = try BlockingWSClient(port: b.publicPort, path: "/api/v1/vnc/ws?task_id=n1&token=\(view)")
                defer { viewer.close() }
                let screen = try viewer.rfbHandshake()
                try viewer.requestUpdate(incremental: false, width: screen.width, height: screen.height)
                let update = try viewer.readUpdate(screen)
                // While it is open: A's internal listener holds a connection from B's end of the link.
                let crossing = establishedConnections(of: a.daemon.pid)
                    .filter { $0.local == "\(ns.insideAddress):\(a.internalPort)" && $0.remote.hasPrefix(ns.outsideAddress + ":") }
                    .map { "\($0.remote) → \($0.local)" }
                try viewer.closeHandshake()
                return (screen, update, crossing)
            }
            let after = ns.outsideBytes
            #expect(screen.width > 0 && screen.height > 0 && update >= screen.width * screen.height * screen.bytesPerPixel, "\(screen) \(update)")
            #expect(after.received - before.received >= update, "the update (\(update) bytes) came over \(ns.outsideInterface): it received \(after.received - before.received)")
            #expect(crossing.count == 1, "one relayed connection from B over the link into A's internal listener: \(establishedConnections(of: a.daemon.pid))")

            // Playwright on B drives A's browser; its 3 MB answer crosses the link too.
            let python = repositoryRoot + "/.build/venv/bin/python3"
            guard access(python, X_OK) == 0 else { throw TestFailure("no \(python): run scripts/setup.sh --tests (it installs playwright from PyPI there)") }
            let output = a.dir + "/agent.out"
            let agentBefore = ns.outsideBytes
            let status = try await runToExit(python, [repositoryRoot + "/Tests/BridgeTests/Agent/cdp_agent.py",
                                                      "ws://127.0.0.1:\(b.publicPort)/api/v1/cdp/ws?task_id=n1&token=\(agent)", "over-veth"],
                                             environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": a.dir], timeout: .seconds(120), output: output)
            let printed = (try? readText(output)) ?? ""
            #expect(status == 0 && printed.contains("ok large message\n") && printed.contains("ok disconnected\n"), "\(printed)")
            #expect(ns.outsideBytes.received - agentBefore.received >= 3 << 20, "the agent's 3 MiB answer came over \(ns.outsideInterface)")

            // Both were A's connections (its bridge wrote their events, the last once the
            // closes crossed back), relayed by B.
            let types = ["viewer_connected", "viewer_disconnected", "agent_connected", "agent_disconnected"]
            try await withTimeout(.seconds(15), "A's events of both connections") {
                while true {
                    let events = try await a.json(.GET, "/v1/tasks/n1/events?limit=1000").array ?? []
                    if Set(types).isSubset(of: events.compactMap { $0["type"]?.string }) { return }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            let metrics = try await b.control.request(.GET, "/metrics")
            #expect(metrics.text.contains(#"kioskd_bridge_relayed_total{door="viewer"} 1"#) && metrics.text.contains(#"kioskd_bridge_relayed_total{door="agent"} 1"#),
                    "\(metrics.text.split(separator: "\n").filter { $0.contains("relay") })")
            _ = try await b.json(.POST, "/v1/tasks/n1/complete", "{}")
        }
    }

    @Test func takingALinkDownPartitionsAFromTheStoreAndFromB() async throws {
        try await withLinkedHosts("netns_partition") { ns, a, b in
            let created = try await a.json(.POST, "/v1/tasks?wait=true", #"{"task_id":"p1","url":"data:text/html,<title>cut</title>"}"#, status: 201)
            #expect(created["state"]?.string == "running" && created["host"]?.string == "a", "\(created)")
            #expect(!a.sessionProcesses.isEmpty)
            let view = try await b.token("view", "p1")
            let path = "/api/v1/vnc/ws?task_id=p1&token=\(view)"
            let lines = a.daemon.log.count
            let cut = ContinuousClock.now
            try await ns.setLink(up: false)

            // A still holds its lease for B (up to lease_ttl): B relays, and A cannot be reached.
            let refusal = try await upgradeRefusal(port: b.publicPort, path: path)
            let relayAnswered = ContinuousClock.now - cut
            #expect(refusal?.status == 502 && refusal?.body.contains(#""code":"owner_unreachable""#) == true, "\(String(describing: refusal))")

            // B sees A's lease end and ends its task, naming A.
            let task = try await waitTask(b, "p1", "interrupted", timeout: .seconds(30)) { $0["state"]?.string == "interrupted" }
            let rescued = ContinuousClock.now - cut
            #expect(rescued < .seconds(30), "interrupted \(rescued) after the link went down")
            #expect(task["reason"]?.string?.contains("host a stopped renewing its lease") == true, "\(task)")
            let history = try await b.json(.GET, "/v1/tasks/p1/events?limit=1000").array ?? []
            #expect(history.last?["data"]?["host"]?.string == "a", "the event names the host: \(history.suffix(3))")
            // Ended, the task is refused by B itself: nothing is relayed any more.
            let ended = try await upgradeRefusal(port: b.publicPort, path: path)
            #expect(ended?.status == 404 && ended?.body.contains(#""code":"task_ended""#) == true, "\(String(describing: ended))")

            print("netns partition: B's relay answered 502 after \(relayAnswered); A's task interrupted after \(rescued)")

            // A could not renew either: its lease ended (B saw it end) on its own clock too, so
            // it has given it up and stops its sessions, though no store call of its returns.
            try await a.daemon.log.wait(for: "a to give up its lease (3 s lease_ttl; B ended its task \(rescued) after the link went down)",
                                        after: lines, timeout: .seconds(5)) { $0.contains("lost its cluster lease") }
            try await withTimeout(.seconds(30), "a's sessions to stop") {
                while !a.sessionProcesses.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            }

            // The link back up: A joins again under a new epoch, and stops cleanly after.
            try await ns.setLink(up: true)
            try await a.daemon.log.wait(for: "a to join again", after: lines, timeout: .seconds(30)) { $0.contains("joined the cluster") }
        }
    }
}

/// The refusal of a viewer's upgrade at `port` (nil if it was upgraded), on a thread of its own.
func upgradeRefusal(port: Int, path: String) async throws -> WebSocketRefused? {
    try await blocking {
        do {
            _ = try BlockingWSClient(port: port, path: path)
            return nil
        } catch let refused as WebSocketRefused {
            return refused
        }
    }
}

/// The established TCP connections in `pid`'s network namespace (its /proc/PID/net/tcp): local
/// and remote as `a.b.c.d:port`.
func establishedConnections(of pid: Int32) -> [(local: String, remote: String)] {
    func address(_ field: Substring) -> String {
        let parts = field.split(separator: ":")
        guard parts.count == 2, let ip = UInt32(parts[0], radix: 16), let port = Int(parts[1], radix: 16) else { return "?" }
        return "\(ip & 0xFF).\(ip >> 8 & 0xFF).\(ip >> 16 & 0xFF).\(ip >> 24):\(port)"
    }
    let table = (try? readText("/proc/\(pid)/net/tcp")) ?? ""
    return table.split(separator: "\n").dropFirst().compactMap { line in
        let fields = line.split(separator: " ")
        guard fields.count > 3, fields[3] == "01" else { return nil }
        return (address(fields[1]), address(fields[2]))
    }
}
