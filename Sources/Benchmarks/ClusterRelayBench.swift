// A viewer and an agent on a task's own host vs on another host of the cluster: two daemons in
// cluster mode on one PostgreSQL (loopback), the task on host A; the same client connects to A's
// public listener (direct) and to B's, which relays to A's internal listener with the cluster's
// proof. Measured as BridgeBench measures a viewer through a real x11vnc: a 1×1 update's round
// trip, connect → first RFB byte, full-screen updates back to back, and what a viewer of a
// changing page gets; and an agent's CDP round trip (Runtime.evaluate of 1+1 on the page, over
// the task's CDP endpoint with an agent token, no Playwright).
import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// One kioskd of the relay benchmark (displays 1000–1019, ports 54000–54999: nobody else's).
private struct RelayBenchHost {
    let id: String
    let dir: String
    let publicPort: Int
    let daemon: DaemonProcess
    var control: ControlClient { ControlClient(socketPath: dir + "/run/control.sock") }

    static func start(_ id: String, index: Int, root: String, store: String, secret: String) async throws -> RelayBenchHost {
        let dir = root + "/" + id
        guard mkdir(dir, 0o755) == 0 else { throw TestFailure("mkdir \(dir): errno \(errno)") }
        let publicPort = try freePort(), internalPort = try freePort()
        try writeText(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: publicPort, """
            sessions:
              displays: \(1000 + index * 10)-\(1009 + index * 10)
              ports: \(9700 + index * 150)-\(9849 + index * 150)

            """ + testClusterConfig(id: id, storeURL: store, internalPort: internalPort, secret: secret)))
        let daemon = try DaemonProcess(executable: sibling("kioskd"), arguments: ["serve", "--config", dir + "/kioskd.yaml"],
                                       environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
        do {
            try await daemon.log.wait(for: "\(id)'s public listener", timeout: .seconds(90)) { $0.contains("kioskd/public: ready") }
            try await daemon.log.wait(for: "\(id)'s internal listener", timeout: .seconds(90)) { $0.contains("kioskd/internal: ready") }
        } catch {
            daemon.signal(SIGKILL)
            throw TestFailure("\(id) did not start: \(error)\n\(daemon.stderr.suffix(2000))")
        }
        return RelayBenchHost(id: id, dir: dir, publicPort: publicPort, daemon: daemon)
    }

    func post(_ path: String, _ body: String) async throws -> JSONValue {
        let answer = try await control.request(.POST, path, json: body)
        guard (200..<300).contains(answer.status) else { throw TestFailure("\(id) POST \(path): \(answer.status) \(answer.text)") }
        return try JSONValue(parsing: answer.body)
    }

    /// A running task created here (so this host claims it) and a token of `role` for it.
    func task(_ id: String, page: String) async throws {
        let task = try await post("/v1/tasks?wait=true", #"{"task_id":"\#(id)","url":"\#(page)"}"#)
        guard task["state"]?.string == "running", task["host"]?.string == self.id else { throw TestFailure("task \(id) is not running on \(self.id): \(task)") }
    }

    func token(_ task: String, role: String) async throws -> String {
        guard let token = try await post("/v1/tasks/\(task)/viewer-token", #"{"role":"\#(role)"}"#)["token"]?.string else {
            throw TestFailure("no \(role) token for \(task)")
        }
        return token
    }
}

/// What one path (a listener's port) measured.
private struct RelayPathResult {
    var frameRTT: [Double] = []
    var firstByte: [Double] = []
    var fullScreen: [Double] = []
    var changing: [Double] = []
    var updatesPerSecond: [Double] = []
    var cdpRTT: [Double] = []
}

/// `rounds` 1×1 non-incremental update requests, each answered (20 bytes of raw pixels) before the next.
private func relayFrameRTTs(port: Int, path: String, rounds: Int) async throws -> [Double] {
    try await blocking {
        let viewer = try BlockingWSClient(port: port, path: path)
        defer { viewer.close() }
        let screen = try viewer.rfbHandshake()
        var times: [Double] = []
        for _ in 0..<rounds {
            let start = monotonic()
            try viewer.requestUpdate(incremental: false, width: 1, height: 1)
            try viewer.readUpdate(screen)
            times.append(monotonic() - start)
        }
        try viewer.closeHandshake()
        return times
    }
}

/// Connect (TCP, upgrade, the relay's own upgrade when relayed) → the RFB banner (one frame).
/// The viewer then goes on to ServerInit before it leaves, as a real one does.
private func relayFirstByte(port: Int, path: String) async throws -> Double {
    try await blocking {
        let start = monotonic()
        var took = 0.0
        let viewer = try BlockingWSClient(port: port, path: path)
        defer { viewer.close() }
        _ = try viewer.rfbHandshake { took = monotonic() - start }
        try viewer.closeHandshake()
        return took
    }
}

/// MiB/s of framebuffer updates for `seconds`: full-screen non-incremental requests back to back
/// (the path's capacity), or incremental ones (what a viewer of a changing page gets; also
/// returns updates per second).
private func relayUpdateRate(port: Int, path: String, incremental: Bool, seconds: Double) async throws -> (mibPerSecond: Double, updatesPerSecond: Double) {
    try await blocking {
        let viewer = try BlockingWSClient(port: port, path: path)
        defer { viewer.close() }
        let screen = try viewer.rfbHandshake()
        if incremental {
            // The first incremental update is the whole screen: start counting after it.
            try viewer.requestUpdate(incremental: false, width: screen.width, height: screen.height)
            try viewer.readUpdate(screen)
        }
        var bytes = 0, updates = 0
        let start = monotonic()
        while monotonic() - start < seconds {
            try viewer.requestUpdate(incremental: incremental, width: screen.width, height: screen.height)
            bytes += try viewer.readUpdate(screen)
            updates += 1
        }
        let elapsed = monotonic() - start
        try viewer.closeHandshake()
        return (Double(bytes) / 1_048_576 / elapsed, Double(updates) / elapsed)
    }
}

/// `rounds` Runtime.evaluate of 1+1 on the task's page, over its CDP endpoint (a browser-level
/// connection: attached to the page with a flat session first).
private func relayCDPRTTs(port: Int, path: String, rounds: Int) async throws -> [Double] {
    try await blocking {
        let agent = try BlockingWSClient(port: port, path: path)
        defer { agent.close() }
        let session = try agent.attachToPage()
        var times: [Double] = []
        for i in 0..<rounds {
            let start = monotonic()
            let result = try agent.cdp(100 + i, "Runtime.evaluate", params: #"{"expression":"1+1"}"#, session: session)
            times.append(monotonic() - start)
            guard result["result"]?["value"]?.number == 2 else { throw TestFailure("Runtime.evaluate 1+1 gave \(result)") }
        }
        try agent.closeHandshake()
        return times
    }
}

func printClusterRelay(smoke: Bool) async throws {
    let (rounds, framesPerRound, connects, cdpPerRound, rateSeconds) = smoke ? (1, 20, 5, 10, 0.3) : (5, 200, 30, 100, 2.0)
    print("\nviewer and agent via another host vs on the task's own host (cluster mode, 2 hosts on one PostgreSQL, loopback; the task on A, 1280x800; "
        + "\(rounds) interleaved rounds of \(framesPerRound) 1×1 updates and \(cdpPerRound) CDP evaluates per path; \(connects) connects; "
        + "\(rounds) × \(rateSeconds) s of updates per path and kind)")
    let pg = try await PostgresFixture.shared.value
    let store = try await pg.createDatabase("bench_relay_\(UInt32.random(in: 0...UInt32.max))")
    let root = try makeTempDir("kioskd-bench-relay")
    defer { removeTree(root) }
    let secret = root + "/cluster.key"
    try writeFile(secret, randomBytes(32), mode: 0o600, owner: nil)
    let a = try await RelayBenchHost.start("a", index: 0, root: root, store: store, secret: secret)
    let b: RelayBenchHost
    do { b = try await RelayBenchHost.start("b", index: 1, root: root, store: store, secret: secret) } catch {
        a.daemon.signal(SIGKILL)
        throw error
    }
    var results = [RelayPathResult](repeating: RelayPathResult(), count: 2)
    do {
        let ports = [b.publicPort, a.publicPort]   // relayed first, the peer column second
        try await a.task("still", page: "data:text/html,<body style=background:rgb(20,120,200)>")
        let view = try await a.token("still", role: "view"), agent = try await a.token("still", role: "agent")
        let vnc = "/api/v1/vnc/ws?task_id=still&token=\(view)", cdp = "/api/v1/cdp/ws?task_id=still&token=\(agent)"
        progress("connects, relayed and direct")
        for (i, port) in ports.enumerated() {
            for _ in 0..<connects { results[i].firstByte.append(try await relayFirstByte(port: port, path: vnc)) }
        }
        progress("1×1 updates and CDP evaluates, relayed and direct")
        // Interleaved, each path first every other round: a noisy moment on this shared
        // machine hits both alike.
        func order(_ round: Int) -> [(Int, Int)] {
            let both = Array(ports.enumerated())
            return round % 2 == 0 ? both : both.reversed()
        }
        for round in 0..<rounds {
            for (i, port) in order(round) {
                results[i].frameRTT += try await relayFrameRTTs(port: port, path: vnc, rounds: framesPerRound)
                results[i].cdpRTT += try await relayCDPRTTs(port: port, path: cdp, rounds: cdpPerRound)
            }
        }
        progress("full-screen updates, relayed and direct")
        for round in 0..<rounds {
            for (i, port) in order(round) {
                results[i].fullScreen.append(try await relayUpdateRate(port: port, path: vnc, incremental: false, seconds: rateSeconds).mibPerSecond)
            }
        }
        _ = try await a.post("/v1/tasks/still/complete", "{}")
        // Every animation frame paints the whole page another colour.
        let moving = "data:text/html,<body style=margin:0><div id=d style=width:100vw;height:100vh></div>"
            + "<script>i=0;f=()=>{i=(i+7)&255;d.style.background='rgb('+i+','+(255-i)+',90)';requestAnimationFrame(f)};f()</script>"
        try await a.task("moving", page: moving)
        let movingPath = "/api/v1/vnc/ws?task_id=moving&token=\(try await a.token("moving", role: "view"))"
        // Running is not yet painting: measured once its updates come at the page's pace.
        progress("a changing page: waiting for it to paint")
        try await withTimeout(.seconds(30), "the changing page to paint 10 updates a second") {
            while try await relayUpdateRate(port: a.publicPort, path: movingPath, incremental: true, seconds: 0.5).updatesPerSecond < 10 {}
        }
        progress("a changing page, relayed and direct")
        for round in 0..<rounds {
            for (i, port) in order(round) {
                let rate = try await relayUpdateRate(port: port, path: movingPath, incremental: true, seconds: rateSeconds)
                results[i].changing.append(rate.mibPerSecond)
                results[i].updatesPerSecond.append(rate.updatesPerSecond)
            }
        }
        _ = try await a.post("/v1/tasks/moving/complete", "{}")
    } catch {
        for host in [a, b] { host.daemon.signal(SIGKILL) }
        throw error
    }
    for host in [a, b] { host.daemon.signal(SIGTERM) }
    for host in [a, b] { _ = try await host.daemon.waitExit(timeout: .seconds(60)) }

    func line(_ name: String, _ relayed: String, _ direct: String) -> String {
        "| " + name.padding(toLength: 42) + " | " + relayed.padding(toLength: 20) + " | " + direct.padding(toLength: 20) + " |"
    }
    func row(_ name: String, _ cell: (RelayPathResult) -> String) -> String { line(name, cell(results[0]), cell(results[1])) }
    let median = { (values: [Double]) in values.isEmpty ? "–" : String(Int(percentile(values, 0.5).rounded())) }
    print(line("measure", "via host B (relayed)", "direct (owner host)"))
    print(line(String(repeating: "-", count: 42), String(repeating: "-", count: 20), String(repeating: "-", count: 20)))
    print(row("1×1 update round trip p50 (ms)") { ms(percentile($0.frameRTT, 0.5)) })
    print(row("1×1 update round trip p99 (ms)") { ms(percentile($0.frameRTT, 0.99)) })
    print(row("connect → first RFB byte p50 (ms)") { ms(percentile($0.firstByte, 0.5)) })
    print(row("full-screen updates, median (MiB/s)") { median($0.fullScreen) })
    print(row("changing page, median (MiB/s)") { median($0.changing) })
    print(row("changing page, median (updates/s)") { median($0.updatesPerSecond) })
    print(row("CDP Runtime.evaluate 1+1 p50 (ms)") { ms(percentile($0.cdpRTT, 0.5)) })
    print(row("CDP Runtime.evaluate 1+1 p99 (ms)") { ms(percentile($0.cdpRTT, 0.99)) })
    print("\ntarget: the relay adds ≤ 1 ms to a round trip and keeps ≥ 50 % of the direct throughput")
}
