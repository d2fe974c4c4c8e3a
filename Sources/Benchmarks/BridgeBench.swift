// The VNC bridge beside Debian's websockify and raw TCP, on the same stream from the same
// target: server → viewer throughput, a 10-byte echo's round trip, connect → first RFB byte,
// and memory per idle viewer. The bridge runs in a child process (kioskd-bench --serve-bridge)
// so its memory is its own; websockify forks a process per connection. Then what a viewer feels
// through a real session's x11vnc: connect → first RFB byte, and a 1×1 update's round trip,
// through the bridge, websockify and straight to x11vnc's socket.
import Bridge
import Control
import Dispatch
import Essentials
import Kiosk
import KioskdTestSupport
import Logging
import Store
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// A stand-in VNC server: greets with the RFB banner, reads the viewer's 14 handshake bytes,
/// then echoes (echo target) or streams `streamBytes` (stream target). It listens on loopback
/// TCP (websockify, raw TCP) and on a Unix socket (the bridge, as it reaches x11vnc).
struct TargetServer: Sendable {
    let port: Int
    let socket: String

    init(stream streamBytes: Int?) {
        socket = (try? makeTempDir("kioskd-bench-target")).map { $0 + "/vnc.sock" } ?? ""
        let unixFD = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard withUnixSocketAddress(socket, { bind(unixFD, $0, $1) }) == 0, listen(unixFD, 512) == 0 else { fail("target bind \(socket)") }
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard withLoopbackAddress(port: 0, { bind(fd, $0, $1) }) == 0, listen(fd, 512) == 0 else { fail("target bind") }
        var addr = sockaddr_in(), len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        for listener in [fd, unixFD] {
            Thread.detach {
                while true {
                    let c = accept(listener, nil, nil)
                    guard c >= 0 else { continue }
                    Thread.detach { Self.serve(c, streamBytes) }
                }
            }
        }
    }

    private static func serve(_ c: Int32, _ streamBytes: Int?) {
        defer { close(c) }
        var one: Int32 = 1
        setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let banner = Array("RFB 003.008\n".utf8)
        guard send(c, banner, banner.count, Int32(MSG_NOSIGNAL)) == banner.count else { return }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var got = 0
        while got < 14 {
            let n = recv(c, &buffer, 14 - got, 0)
            guard n > 0 else { return }
            got += n
        }
        if let total = streamBytes {
            let chunk = [UInt8](repeating: 0x5A, count: 65536)
            var sent = 0
            while sent < total {
                let n = chunk.withUnsafeBytes { send(c, $0.baseAddress, min(chunk.count, total - sent), Int32(MSG_NOSIGNAL)) }
                guard n > 0 else { return }
                sent += n
            }
            shutdown(c, Int32(SHUT_WR))
            while recv(c, &buffer, buffer.count, 0) > 0 {}
        } else {
            while true {
                let n = recv(c, &buffer, buffer.count, 0)
                guard n > 0, send(c, buffer, n, Int32(MSG_NOSIGNAL)) == n else { return }
            }
        }
    }
}

/// The client's first bytes: version, security None, ClientInit (shared).
let rfbHello: [UInt8] = Array("RFB 003.008\n".utf8) + [1, 1]
/// A FramebufferUpdateRequest: 10 bytes the filter lets through (the view role's kind).
let updateRequest: [UInt8] = [3, 1, 0, 0, 0, 0, 0, 16, 0, 16]

// MARK: - The three paths, driven the same way

/// One viewer connection, whatever carries it: a plain socket (raw TCP) or a WebSocket.
protocol BenchLink: AnyObject {
    /// Blocks until `count` payload bytes have arrived; returns how many did (fewer: it ended).
    func receive(atLeast count: Int) -> Int
    func send(_ payload: [UInt8])
    func close()
}

extension BlockingWebSocket: BenchLink {}

/// Raw TCP straight to the target: the floor every relay is measured against.
final class RawLink: BenchLink {
    let fd: Int32
    private let scratch = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 1 << 20)

    init(port: Int) {
        guard let fd = try? connectLoopback(port: port) else { fail("raw connect to \(port)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        self.fd = fd
    }

    /// x11vnc's Unix socket, as the bridge reaches it.
    init(socket: String) {
        guard let fd = try? connectUnix(socket) else { fail("connect to \(socket)") }
        self.fd = fd
    }

    func receive(atLeast count: Int) -> Int {
        var got = 0
        while got < count {
            let n = recv(fd, scratch.baseAddress, scratch.count, 0)
            guard n > 0 else { break }
            got += n
        }
        return got
    }

    func send(_ payload: [UInt8]) {
        guard payload.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == payload.count else { fail("send: errno \(errno)") }
    }

    func close() { Glibc.close(fd) }

    deinit { scratch.deallocate() }
}

/// How to reach the echo and stream targets through one path, and its server's memory.
struct BenchPath {
    let echo: () -> any BenchLink
    let stream: () -> any BenchLink
    let memory: (() -> Int)?
}

struct PathResult {
    var mibPerSecond: [Double] = []
    var browserMiBPerSecond: [Double] = []
    var rtt: [Double] = []
    var firstByte: [Double] = []
    var kibPerViewer: Double?
}

/// Connect → the greeting's first byte.
func firstByte(_ connect: () -> any BenchLink) -> Double {
    let start = monotonic()
    let link = connect()
    guard link.receive(atLeast: 1) > 0 else { fail("no greeting") }
    let took = monotonic() - start
    link.close()
    return took
}

/// A FramebufferUpdateRequest's round trip through the echo target, `rounds` times.
func echoes(_ path: BenchPath, rounds: Int) -> [Double] {
    let link = path.echo()
    defer { link.close() }
    guard link.receive(atLeast: 12) == 12 else { fail("no greeting") }
    link.send(rfbHello)
    return (0..<rounds).map { _ in
        let start = monotonic()
        link.send(updateRequest)
        guard link.receive(atLeast: updateRequest.count) == updateRequest.count else { fail("the echo ended") }
        return monotonic() - start
    }
}

/// MiB/s from the stream target after the handshake.
func streamRate(_ path: BenchPath, bytes: Int) -> Double {
    let link = path.stream()
    defer { link.close() }
    guard link.receive(atLeast: 12) == 12 else { fail("no greeting") }
    link.send(rfbHello)
    let start = monotonic()
    // websockify resets the connection once the target is done: count what arrived until then.
    let total = link.receive(atLeast: bytes)
    if total < bytes { progress("a stream ended after \(total >> 20) MiB") }
    return Double(total) / 1_048_576 / (monotonic() - start)
}

/// Server memory per viewer holding an idle connection after the handshake.
func idleCost(_ path: BenchPath, viewers: Int) -> Double? {
    guard let memory = path.memory else { return nil }
    let before = memory()
    let links = (0..<viewers).map { _ in
        let link = path.echo()
        guard link.receive(atLeast: 12) == 12 else { fail("no greeting") }
        link.send(rfbHello)
        return link
    }
    // Let the servers settle (buffers allocated at connect are part of the cost).
    usleep(500_000)
    let cost = Double(memory() - before) / Double(viewers)
    for link in links { link.close() }
    return cost
}

// MARK: - The bridge's own process

/// `kioskd-bench --serve-bridge PORT SECRETFILE TASK=SOCKET…`: a public listener whose tasks
/// are relayed to those Unix sockets.
func serveBridge(_ args: [String]) async throws -> Never {
    guard args.count >= 3, let port = Int(args[0]) else { fail("--serve-bridge PORT SECRETFILE TASK=SOCKET…") }
    let targets = Dictionary(uniqueKeysWithValues: args.dropFirst(2).map { pair in
        let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
        return (parts[0], parts.count == 2 ? parts[1] : "")
    })
    var logger = Logger(label: "bench.bridge")
    logger.logLevel = .error
    let dir = try makeTempDir("kioskd-bench-bridge")
    let store = try SQLiteTaskStore(path: dir + "/k.sqlite")
    try await store.migrate()
    let service = TaskService(store: store, sessions: InstantSessions(), tokens: await ViewerTokens(secret: readSmallFileBytes(args[1], limit: 64) ?? []),
                              limits: TaskLimits(), template: { id, r in SessionSettings(id: id, url: r.url) }, logger: logger)
    _ = try await service.interruptUnfinished()
    var settings = BridgeSettings()
    settings.maxViewers = 10_000
    let access = ViewerAccess(service: service, settings: settings) { id in
        BridgeTarget(vncSocket: targets[id] ?? "", websockify: nil) {}
    }
    let limits = settings
    try await race({ await service.run() }, { [logger] in
        for id in targets.keys {
            _ = try await service.create(CreateTask(taskID: id, url: "about:blank"))
            _ = try await service.waitRunning(id, timeout: .seconds(5))
        }
        try await PublicServer(access: access, settings: limits).run(.hostname("127.0.0.1", port: port), logger: logger) { _ in }
    })
    exit(0)
}

func waitListening(_ port: Int) {
    for _ in 0..<500 {
        if let fd = try? connectLoopback(port: port, timeout: 1) {
            close(fd)
            return
        }
        usleep(10_000)
    }
    fail("nothing listens on \(port)")
}

/// PSS of every process whose command line carries `marker` (websockify forks one process per
/// connection, with the parent's command line).
func markedPSS(_ marker: String) -> Int {
    var total = 0
    for name in directoryEntries("/proc") {
        guard let pid = Int32(name), let cmdline = readSmallFileBytes("/proc/\(name)/cmdline", limit: 4096) else { continue }
        if String(decoding: cmdline.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(marker) { total += pssKiB(pid) }
    }
    return total
}

func printBridge() async throws {
    try await printX11VNC()
    let (streamBytes, browserBytes, rounds, echoesPerRound, connects, idle) = isSmokeRun
        ? (8 << 20, 4 << 20, 1, 20, 5, 5) : (512 << 20, 256 << 20, 7, 300, 200, 100)
    print("\nVNC WebSocket bridge vs Debian's websockify vs raw TCP (same targets and client; \(rounds) interleaved rounds of a \(streamBytes >> 20) MiB stream "
        + "and \(echoesPerRound) echoes; \(browserBytes >> 20) MiB to a Chromium page; \(connects) connects; \(idle) idle viewers)")
    let echo = TargetServer(stream: nil), stream = TargetServer(stream: streamBytes)

    let secretFile = try makeTempDir("kioskd-bench-secret") + "/secret"
    let secret = randomBytes(32)
    try writeFile(secretFile, secret, mode: 0o600, owner: nil)
    let bridgePort = try freePort()
    let bridgePID = spawn(sibling("kioskd-bench"), ["--serve-bridge", "\(bridgePort)", secretFile, "echo=\(echo.socket)", "stream=\(stream.socket)"])
    let wsEcho = try freePort(), wsStream = try freePort()
    let websockifyPIDs = [spawn("/usr/bin/websockify", ["127.0.0.1:\(wsEcho)", "127.0.0.1:\(echo.port)"]),
                          spawn("/usr/bin/websockify", ["127.0.0.1:\(wsStream)", "127.0.0.1:\(stream.port)"])]
    for port in [bridgePort, wsEcho, wsStream] { waitListening(port) }
    defer {
        kill(bridgePID, SIGTERM)
        for pid in websockifyPIDs { kill(pid, SIGTERM) }
    }
    let tokens = await ViewerTokens(secret: secret)
    let echoPath = "/api/v1/vnc/ws?task_id=echo&token=\(try await tokens.mint(task: "echo", role: .view, ttl: 3600).token)"
    let streamPath = "/api/v1/vnc/ws?task_id=stream&token=\(try await tokens.mint(task: "stream", role: .view, ttl: 3600).token)"

    let paths: [BenchPath] = [
        BenchPath(echo: { BlockingWebSocket(port: bridgePort, path: echoPath) }, stream: { BlockingWebSocket(port: bridgePort, path: streamPath) },
                  memory: { rssKiB(bridgePID) }),
        BenchPath(echo: { BlockingWebSocket(port: wsEcho, path: "/") }, stream: { BlockingWebSocket(port: wsStream, path: "/") },
                  memory: { markedPSS("websockify 127.0.0.1:\(wsEcho) ") }),
        BenchPath(echo: { RawLink(port: echo.port) }, stream: { RawLink(port: stream.port) }, memory: nil),
    ]
    var results = [PathResult](repeating: PathResult(), count: paths.count)
    // Memory first, on fresh heaps (later phases leave freed buffers that new viewers reuse).
    progress("idle viewers")
    for (i, path) in paths.enumerated() { results[i].kibPerViewer = idleCost(path, viewers: idle) }
    progress("connects")
    for (i, path) in paths.enumerated() { results[i].firstByte = (0..<connects).map { _ in firstByte(path.echo) } }
    // Interleaved, so a noisy moment on this shared machine hits every path alike.
    progress("streams and echoes")
    for _ in 0..<rounds {
        for (i, path) in paths.enumerated() {
            results[i].mibPerSecond.append(streamRate(path, bytes: streamBytes))
            results[i].rtt += echoes(path, rounds: echoesPerRound)
        }
    }
    progress("a browser as the viewer")
    let browser = try await BrowserViewer.start(page: "http://127.0.0.1:\(bridgePort)/health")
    for _ in 0..<3 {
        results[0].browserMiBPerSecond.append(try await browser.rate(url: "ws://127.0.0.1:\(bridgePort)\(streamPath)", bytes: browserBytes))
        results[1].browserMiBPerSecond.append(try await browser.rate(url: "ws://127.0.0.1:\(wsStream)/", bytes: browserBytes))
    }
    await browser.stop()

    func row4(_ n: String, _ x: String, _ y: String, _ z: String) -> String {
        "| " + n.padding(toLength: 40) + " | " + x.padding(toLength: 12) + " | " + y.padding(toLength: 12) + " | " + z.padding(toLength: 12) + " |"
    }
    func row(_ name: String, _ cell: (PathResult) -> String) -> String {
        row4(name, cell(results[0]), cell(results[1]), cell(results[2]))
    }
    let rate = { (values: [Double]) in values.isEmpty ? "–" : String(Int(percentile(values, 0.5))) }
    print(row4("measure", "kioskd", "websockify", "raw TCP"))
    print(row4(String(repeating: "-", count: 40), String(repeating: "-", count: 12), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    print(row("server → viewer, median (MiB/s)") { rate($0.mibPerSecond) })
    print(row("server → Chromium page, median (MiB/s)") { rate($0.browserMiBPerSecond) })
    print(row("echo RTT p50 (µs)") { us(percentile($0.rtt, 0.5)) })
    print(row("echo RTT p99 (µs)") { us(percentile($0.rtt, 0.99)) })
    print(row("connect → first RFB byte p50 (ms)") { ms(percentile($0.firstByte, 0.5)) })
    print(row("memory per idle viewer (KiB)") { $0.kibPerViewer.map { String(Int($0)) } ?? "–" })
    print("\ntargets: ≥ 3× websockify's throughput and ≥ 50 % of raw TCP; RTT p50 ≤ 2× raw; ≤ 64 KiB per idle viewer; first byte ≤ 2 ms")
}

// MARK: - Through a real x11vnc

/// RFB 3.8 up to ServerInit, as a viewer speaks it: it waits for the server's greeting.
func rfbHandshake(_ link: any BenchLink) {
    guard link.receive(atLeast: 12) == 12 else { fail("no greeting") }
    link.send(Array("RFB 003.008\n".utf8))
    guard link.receive(atLeast: 2) == 2 else { fail("no security types") }   // x11vnc -nopw: None only
    link.send([1])
    guard link.receive(atLeast: 4) == 4 else { fail("no security result") }
    link.send([1])
    // ServerInit (24 bytes and the desktop's name) leaves x11vnc in one write.
    guard link.receive(atLeast: 24) >= 24 else { fail("no ServerInit") }
}

/// A 1×1 full update request's round trip: raw encoding at 32 bpp, 20 bytes back.
func frameRoundTrips(_ connect: () -> any BenchLink, rounds: Int) -> [Double] {
    let link = connect()
    defer { link.close() }
    rfbHandshake(link)
    let request: [UInt8] = [3, 0, 0, 0, 0, 0, 0, 1, 0, 1]
    return (0..<rounds).map { _ in
        let start = monotonic()
        link.send(request)
        guard link.receive(atLeast: 20) == 20 else { fail("no 1×1 update") }
        return monotonic() - start
    }
}

/// One real kiosk session showing `page`, as SessionBench boots them, on displays of its own.
func benchSession(_ id: String, page: String, width: Int = 1280, height: Int = 800,
                  displays: ClosedRange<Int>) async throws -> (SessionManager, SessionInfo, String) {
    let dir = try makeTempDir("kioskd-bench-\(id)")
    var logger = Logger(label: "bench.\(id)")
    logger.logLevel = .error
    let host = SessionHost(sessionsDir: dir + "/sessions", recordsDir: dir + "/records", user: try SessionHost.sessionUser(named: "kioskd"),
                           displays: DisplayAllocator(range: displays, logger: logger), ports: PortAllocator(range: 18000...18499), logger: logger)
    let manager = SessionManager(host: host)
    _ = try await manager.start()
    let session = try await manager.create(SessionSettings(id: id, url: page, width: width, height: height))
    return (manager, await session.info(), dir)
}

func printX11VNC() async throws {
    let connects = 20, rounds = 5, perRound = 100
    print("\nWhat a viewer feels through a real x11vnc (one session; x11vnc \(X11VNC.pacing.joined(separator: " ")); \(connects) connects; "
        + "\(rounds) interleaved rounds of \(perRound) 1×1 update requests per path)")
    let (manager, info, dir) = try await benchSession("vnc", page: "data:text/html,<body style='background:rgb(20,120,200)'>", displays: 950...999)
    defer { removeTree(dir) }
    let secretFile = dir + "/secret"
    let secret = randomBytes(32)
    try writeFile(secretFile, secret, mode: 0o600, owner: nil)
    let bridgePort = try freePort(), wsPort = try freePort()
    let bridgePID = spawn(sibling("kioskd-bench"), ["--serve-bridge", "\(bridgePort)", secretFile, "vnc=\(info.vncSocket)"])
    let websockifyPID = spawn("/usr/bin/websockify", ["--unix-target=\(info.vncSocket)", "127.0.0.1:\(wsPort)"])
    for port in [bridgePort, wsPort] { waitListening(port) }
    let path = "/api/v1/vnc/ws?task_id=vnc&token=\(try await ViewerTokens(secret: secret).mint(task: "vnc", role: .view, ttl: 3600).token)"
    let links: [() -> any BenchLink] = [
        { BlockingWebSocket(port: bridgePort, path: path) }, { BlockingWebSocket(port: wsPort, path: "/") }, { RawLink(socket: info.vncSocket) },
    ]
    progress("connects through a real x11vnc")
    let first = links.map { link in (0..<connects).map { _ in firstByte(link) } }
    progress("1×1 updates through a real x11vnc")
    var frames = [[Double]](repeating: [], count: links.count)
    for _ in 0..<rounds {
        for (i, link) in links.enumerated() { frames[i] += frameRoundTrips(link, rounds: perRound) }
    }
    kill(bridgePID, SIGTERM)
    kill(websockifyPID, SIGTERM)
    await manager.stopAll(reason: "bench over")

    func row4(_ n: String, _ x: String, _ y: String, _ z: String) -> String {
        "| " + n.padding(toLength: 40) + " | " + x.padding(toLength: 12) + " | " + y.padding(toLength: 12) + " | " + z.padding(toLength: 12) + " |"
    }
    print(row4("measure", "kioskd", "websockify", "direct"))
    print(row4(String(repeating: "-", count: 40), String(repeating: "-", count: 12), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    print(row4("connect → first RFB byte p50 (ms)", ms(percentile(first[0], 0.5)), ms(percentile(first[1], 0.5)), ms(percentile(first[2], 0.5))))
    print(row4("1×1 update round trip p50 (ms)", ms(percentile(frames[0], 0.5)), ms(percentile(frames[1], 0.5)), ms(percentile(frames[2], 0.5))))
    print(row4("1×1 update round trip p99 (ms)", ms(percentile(frames[0], 0.99)), ms(percentile(frames[1], 0.99)), ms(percentile(frames[2], 0.99))))
    print("\ntargets: first RFB byte through the bridge ≤ 5 ms; update round trip p50 ≤ 6 ms, p99 ≤ 10 ms")
}

func progress(_ what: String) {
    var line = Array("kioskd-bench: \(what)…\n".utf8)
    _ = write(2, &line, line.count)
}
