import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Logging
import NIOCore
import Supervision
import Testing
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// Two real daemons in cluster mode on one PostgreSQL: a task runs on host A; a viewer and a
/// Playwright agent connected to host B's public listener reach it, relayed to A's internal
/// listener with the cluster's proof; tokens minted on B work for A's task; wrong ones are
/// refused on B before anything is relayed; A's internal listener answers nothing without a proof.
@Suite("Cluster: any host serves any task's viewers and agents", .serialized)
struct ClusterRelayTests {
    let quiet: Logger = { var l = Logger(label: "test.cluster"); l.logLevel = .critical; return l }()

    struct Host {
        let dir: String
        let publicPort: Int
        let internalPort: Int
        let daemon: DaemonProcess
        var control: ControlClient { ControlClient(socketPath: dir + "/run/control.sock") }
    }

    func start(_ id: String, root: String, store: String, secret: String, displays: String, ports: String) async throws -> Host {
        let dir = root + "/" + id
        guard mkdir(dir, 0o755) == 0 else { throw TestFailure("cannot make \(dir): errno \(errno)") }
        let publicPort = try freePort(), internalPort = try freePort()
        let cluster = testClusterConfig(id: id, storeURL: store, internalPort: internalPort, secret: secret)
        try writeFile(dir + "/kioskd.yaml", Array(testDaemonConfig(dir: dir, port: publicPort, cluster + """
            sessions:
              displays: \(displays)
              ports: \(ports)
            """).utf8), mode: 0o644, owner: nil)
        let daemon = try DaemonProcess(executable: try builtProduct("kioskd"), arguments: ["serve", "--config", dir + "/kioskd.yaml"],
                                       environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
        try await daemon.log.wait(for: "\(id)'s internal listener", timeout: .seconds(60)) { $0.contains("kioskd/internal: ready") }
        try await daemon.log.wait(for: "\(id)'s public listener", timeout: .seconds(60)) { $0.contains("kioskd/public: ready") }
        return Host(dir: dir, publicPort: publicPort, internalPort: internalPort, daemon: daemon)
    }

    func json(_ answer: ControlClient.Answer) throws -> JSONValue {
        try JSONValue(parsing: answer.body)
    }

    @Test func aViewerAndAnAgentOnHostBReachTheTaskOnHostA() async throws {
        let root = try makeTempDir("kioskd-cluster-relay")
        defer { removeTree(root) }
        let store = try await PostgresFixture.shared.value.createDatabase("relay_\(UInt32.random(in: 0...UInt32.max))")
        let secret = root + "/cluster.key"
        try writeFile(root + "/cluster.key", randomBytes(32), mode: 0o600, owner: nil)
        let a = try await start("a", root: root, store: store, secret: secret, displays: "680-689", ports: "16000-16499")
        let b = try await start("b", root: root, store: store, secret: secret, displays: "690-699", ports: "16500-16999")
        defer {
            a.daemon.signal(SIGTERM)
            b.daemon.signal(SIGTERM)
        }
        // Created on A, so A claims it.
        let page = "data:text/html,<title>on-a</title><body>a</body>"
        let created = try json(try await a.control.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"x1","url":"\#(page)"}"#))
        #expect(created["state"]?.string == "running" && created["host"]?.string == "a", "\(created)")
        // Tokens minted on B are good for A's task.
        func token(_ role: String, _ task: String = "x1") async throws -> String {
            let answer = try await b.control.request(.POST, "/v1/tasks/\(task)/viewer-token", json: #"{"role":"\#(role)"}"#)
            guard answer.status == 201, let token = try json(answer)["token"]?.string else { throw TestFailure("token: \(answer.status) \(answer.text)") }
            return token
        }
        let view = try await token("view"), agent = try await token("agent")

        // A's internal listener: nothing without the proof, whatever the token.
        let bare = try await upgradeOffPool(port: a.internalPort, "task_id=x1&token=\(view)")
        close(bare.fd)
        #expect(bare.status == 401 && bare.text.contains(#""code":"cluster_proof_missing""#), "\(bare.text)")

        // B refuses wrong tokens itself, before any relay.
        let forged = try await upgradeOffPool(port: b.publicPort, "task_id=x1&token=forged.token.here", path: "/api/v1/cdp/ws")
        close(forged.fd)
        #expect(forged.status == 401 && forged.text.contains("token_invalid"), "\(forged.text)")
        _ = try json(try await b.control.request(.POST, "/v1/tasks", json: #"{"task_id":"x2","url":"about:blank"}"#))
        let otherTask = try await token("agent", "x2")
        for (query, path, status, code) in [("task_id=x1&token=\(otherTask)", "/api/v1/cdp/ws", 403, "token_other_task"),
                                            ("task_id=x1&token=\(view)", "/api/v1/cdp/ws", 403, "token_other_role"),
                                            ("task_id=x1&token=\(agent)", "/api/v1/vnc/ws", 403, "token_other_role")] {
            let answer = try await upgradeOffPool(port: b.publicPort, query, path: path)
            close(answer.fd)
            #expect(answer.status == status && answer.text.contains(#""code":"\#(code)""#), "\(path) \(code): \(answer.text)")
        }

        // A viewer on B sees A's session.
        try await WebSocketClient.connect(url: "ws://127.0.0.1:\(b.publicPort)/api/v1/vnc/ws?task_id=x1&token=\(view)",
                                          configuration: WebSocketClientConfiguration(maxFrameSize: 1 << 24), logger: quiet) { inbound, outbound, _ in
            var viewer = WSViewer(inbound, outbound)
            let size = try await viewer.handshake()
            #expect(size.width > 0 && size.height > 0)
            try await viewer.roundTrip(size)
            try await outbound.close(.normalClosure, reason: nil)
        }
        // Playwright on B drives A's browser.
        let python = repositoryRoot + "/.build/venv/bin/python3"
        guard access(python, X_OK) == 0 else { throw TestFailure("no \(python): run scripts/setup.sh --tests (it installs playwright from PyPI there)") }
        let output = root + "/agent.out"
        let status = try await runToExit(python, [repositoryRoot + "/Tests/BridgeTests/Agent/cdp_agent.py",
                                                  "ws://127.0.0.1:\(b.publicPort)/api/v1/cdp/ws?task_id=x1&token=\(agent)", "on-a"],
                                         environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": root], timeout: .seconds(120), output: output)
        let printed = (try? readText(output)) ?? ""
        #expect(status == 0 && printed.contains("ok navigate\n") && printed.contains("ok disconnected\n"), "\(printed)")

        // Both connections were A's: its bridge wrote their events (the store is shared).
        let events = try await a.control.request(.GET, "/v1/tasks/x1/events?since=0")
        for type in ["viewer_connected", "viewer_disconnected", "agent_connected", "agent_disconnected"] {
            #expect(events.text.contains(#""type":"\#(type)""#), "\(type): \(events.text.prefix(2000))")
        }
        // And B relayed them.
        let metrics = try await b.control.request(.GET, "/metrics")
        #expect(metrics.text.contains(#"kioskd_bridge_relayed_total{door="viewer"} 1"#) && metrics.text.contains(#"kioskd_bridge_relayed_total{door="agent"} 1"#),
                "\(metrics.text.split(separator: "\n").filter { $0.contains("relay") })")
        a.daemon.signal(SIGTERM)
        b.daemon.signal(SIGTERM)
        #expect(try await a.daemon.waitExit(timeout: .seconds(30)) == 0, "\(a.daemon.stderr.suffix(3000))")
        #expect(try await b.daemon.waitExit(timeout: .seconds(30)) == 0, "\(b.daemon.stderr.suffix(3000))")
    }

    /// noVNC in a real Chromium, served by host B, shows host A's task; a control viewer on B
    /// types into A's page (the RFB client's KeyEvent, relayed).
    @Test func noVNCInChromiumOnHostBShowsTheTaskOnHostAAndAControlViewerTypesIntoIt() async throws {
        let root = try makeTempDir("kioskd-cluster-novnc")
        defer { removeTree(root) }
        let store = try await PostgresFixture.shared.value.createDatabase("novnc_\(UInt32.random(in: 0...UInt32.max))")
        let secret = root + "/cluster.key"
        try writeFile(secret, randomBytes(32), mode: 0o600, owner: nil)
        let a = try await start("a", root: root, store: store, secret: secret, displays: "680-689", ports: "16000-16499")
        let b = try await start("b", root: root, store: store, secret: secret, displays: "690-699", ports: "16500-16999")
        defer {
            a.daemon.signal(SIGTERM)
            b.daemon.signal(SIGTERM)
        }
        let page = "data:text/html,<title>on-a</title><body style='margin:0;background:rgb(200,30,30)' onkeydown='document.title=event.key'><h1>a</h1></body>"
        let shown = try json(try await a.control.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"n1","url":"\#(page)"}"#))
        #expect(shown["state"]?.string == "running" && shown["host"]?.string == "a", "\(shown)")
        let taskCDP = try #require(shown["session"]?["cdp_url"]?.string)
        func token(_ role: String) async throws -> String {
            let answer = try await b.control.request(.POST, "/v1/tasks/n1/viewer-token", json: #"{"role":"\#(role)"}"#)
            guard answer.status == 201, let token = try json(answer)["token"]?.string else { throw TestFailure("token: \(answer.status) \(answer.text)") }
            return token
        }
        // The viewer's browser: a task of its own (on B, where it is created), at B's viewer page.
        let viewerPage = "http://127.0.0.1:\(b.publicPort)/viewer?task_id=n1&token=\(try await token("view"))"
        _ = try json(try await b.control.request(.POST, "/v1/tasks", json: #"{"task_id":"v1","url":"\#(viewerPage)","width":800,"height":600}"#))
        // A busy machine boots a browser slowly: its state in the store is the signal.
        let viewer = try await withTimeout(.seconds(90), "the viewer's browser to run") {
            while true {
                let task = try self.json(try await b.control.request(.GET, "/v1/tasks/v1"))
                if task["state"]?.string == "running" { return task }
                guard task["state"]?.string.map({ ["queued", "starting"].contains($0) }) == true else { throw TestFailure("the viewer's task: \(task)") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let viewerCDP = try #require(viewer["session"]?["cdp_url"]?.string, "\(viewer)")
        _ = try await waitForPage(cdpURL: viewerCDP, url: "http://127.0.0.1:\(b.publicPort)/novnc/", timeout: .seconds(60))
        #expect(try await withTimeout(.seconds(30), "noVNC on B to show A's page") {
            try await withPage(cdpURL: viewerCDP) { cdp, s in try await evaluate(cdp, s, noVNCPaintedTestColour) }
        } == "painted")

        // A control viewer on B presses a key: A's page gets it.
        let control = try await token("control")
        try await WebSocketClient.connect(url: "ws://127.0.0.1:\(b.publicPort)/api/v1/vnc/ws?task_id=n1&token=\(control)",
                                          configuration: WebSocketClientConfiguration(maxFrameSize: 1 << 24), logger: quiet) { inbound, outbound, _ in
            var rfb = WSViewer(inbound, outbound)
            _ = try await rfb.handshake()
            for down: UInt8 in [1, 0] { try await rfb.send([4, down, 0, 0, 0, 0, 0, 0x71]) }  // KeyEvent, keysym 'q'
            let typed = "new Promise(r => { const t = () => document.title === 'q' ? r('q') : requestAnimationFrame(t); t(); })"
            #expect(try await withTimeout(.seconds(20), "A's page to get the key") {
                try await withPage(cdpURL: taskCDP) { cdp, s in try await evaluate(cdp, s, typed) }
            } == "q")
            try await outbound.close(.normalClosure, reason: nil)
        }
        // A's bridge writes a viewer's events beside its relay: long-polled until both are there.
        let events = try await withTimeout(.seconds(30), "A's events of both viewers") {
            var since = 0, seen = ""
            while !(seen.contains(#""role":"view""#) && seen.contains(#""role":"control""#)) {
                let answer = try await a.control.request(.GET, "/v1/tasks/n1/events?since=\(since)&wait=5")
                for event in try self.json(answer).array ?? [] { since = max(since, Int(event["seq"]?.number ?? 0)) }
                seen += answer.text
            }
            return seen
        }
        #expect(events.contains("viewer_connected"), "A's bridge served noVNC (view) and the control viewer")
        a.daemon.signal(SIGTERM)
        b.daemon.signal(SIGTERM)
        #expect(try await a.daemon.waitExit(timeout: .seconds(30)) == 0, "\(a.daemon.stderr.suffix(3000))")
        #expect(try await b.daemon.waitExit(timeout: .seconds(30)) == 0, "\(b.daemon.stderr.suffix(3000))")
    }
}
