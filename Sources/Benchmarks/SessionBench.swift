// Session cold start: create → every program ready (Chromium answering CDP, the watch attached)
// → a first frame over VNC, with per-stage times and the memory of one session.
import Kiosk
import KioskdTestSupport
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

struct SessionStart {
    /// Seconds from create() to each program's readiness, by child id.
    var stages: [String: Double] = [:]
    var ready = 0.0
    var firstFrame = 0.0
}

struct SessionResults {
    var starts: [SessionStart] = []
    /// Proportional set size of all processes of one idle session (KiB): Chromium's processes
    /// share pages, so RSS would count them many times.
    var pssKiB = 0
    var processes = 0
}

func benchSessions(count: Int) async throws -> SessionResults {
    let dir = try makeTempDir("kioskd-bench-sessions")
    defer { removeTree(dir) }
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    let host = SessionHost(sessionsDir: dir + "/sessions", recordsDir: dir + "/records",
                           user: try SessionHost.sessionUser(named: "kioskd"),
                           displays: DisplayAllocator(range: 800...899, logger: logger), ports: PortAllocator(range: 18500...18999),
                           logger: logger)
    let manager = SessionManager(host: host)
    _ = try await manager.start()
    let page = "data:text/html,<body style='background:rgb(20,120,200)'><h1>bench</h1>"
    var results = SessionResults()
    for i in 0..<count {
        let events = manager.events.subscribe()
        let stages = Recorder<(String, Double)>()
        let t0 = monotonic()
        // Cancelled and awaited at the end of this iteration.
        async let _: Void = {
            for await (_, event) in events {
                guard case .supervision(let e) = event else { continue }
                if case .ready(let child, _) = e.kind { stages.record((child, monotonic() - t0)) }
                if case .spawned(let child, _) = e.kind { stages.record((child + " spawned", monotonic() - t0)) }
            }
        }()
        let session = try await manager.create(SessionSettings(id: "bench-\(i)", url: page, width: 1280, height: 800))
        var start = SessionStart()
        start.ready = monotonic() - t0
        let info = await session.info()
        try await firstFramebufferUpdate(socket: info.vncSocket)
        start.firstFrame = monotonic() - t0
        for (child, t) in stages.items { start.stages[child] = t }
        results.starts.append(start)
        if i == count - 1 {
            let pids = descendants(of: Set(info.pids.values))
            results.processes = pids.count
            results.pssKiB = pids.map(pssKiB).reduce(0, +)
        }
        await session.stop(reason: "bench")
    }
    await manager.stopAll(reason: "bench over")
    return results
}

/// The processes and every descendant of them (by PPid in /proc).
func descendants(of roots: Set<Int32>) -> [Int32] {
    var parents: [Int32: Int32] = [:]
    for pid in allPIDs() {
        guard let status = try? readText("/proc/\(pid)/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("PPid:") }),
              let ppid = Int32(line.dropFirst(5).filter { !$0.isWhitespace }) else { continue }
        parents[pid] = ppid
    }
    return parents.keys.filter { pid in
        var p: Int32? = pid
        while let current = p, current > 1 {
            if roots.contains(current) { return true }
            p = parents[current]
        }
        return false
    }
}

func pssKiB(_ pid: Int32) -> Int {
    guard let f = fopen("/proc/\(pid)/smaps_rollup", "r") else { return 0 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), f) != nil {
        let s = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        if s.hasPrefix("Pss:") { return Int(s.split(separator: " ").dropFirst().first ?? "") ?? 0 }
    }
    return 0
}

/// RFB 3.8 as a viewer does it: the handshake, then one full FramebufferUpdateRequest;
/// returns when the FramebufferUpdate's header arrives.
func firstFramebufferUpdate(socket: String) async throws {
    try await blocking {
        let viewer = try RFBClient(socket: socket)
        defer { viewer.close() }
        try viewer.firstFramebufferUpdate()
    }
}
