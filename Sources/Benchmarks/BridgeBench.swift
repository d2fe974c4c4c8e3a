// The VNC bridge beside Debian's websockify and raw TCP, on the same stream from the same
// target: server → viewer throughput, a 10-byte echo's round trip, connect → first RFB byte,
// and memory per idle viewer. The bridge runs in a child process (kioskd-bench --serve-bridge)
// so its memory is its own; websockify forks a process per connection.
import Bridge
import Control
import Dispatch
import Kiosk
import KioskdTestSupport
import Logging
import NIOCore
import Store
import Supervision
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// A stand-in VNC server: greets with the RFB banner, reads the viewer's 14 handshake bytes,
/// then echoes (echo target) or streams `streamBytes` (stream target).
struct TargetServer: Sendable {
    let port: Int

    init(stream streamBytes: Int?) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard withLoopbackAddress(port: 0, { bind(fd, $0, $1) }) == 0, listen(fd, 512) == 0 else { fail("target bind") }
        var addr = sockaddr_in(), len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        let listener = fd
        Thread.detach {
            while true {
                let c = accept(listener, nil, nil)
                guard c >= 0 else { continue }
                Thread.detach { Self.serve(c, streamBytes) }
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

struct PathResult {
    var mibPerSecond = 0.0
    var rtt: [Double] = []
    var firstByte: [Double] = []
    var kibPerViewer: Double?
}

// MARK: - Raw TCP

func rawPath(echo: Int, stream: Int, streamBytes: Int, rounds: Int, connects: Int) -> PathResult {
    var result = PathResult()
    for _ in 0..<connects {
        let start = monotonic()
        guard let fd = try? connectLoopback(port: echo) else { fail("raw connect") }
        var banner = [UInt8](repeating: 0, count: 12)
        _ = recv(fd, &banner, 12, Int32(MSG_WAITALL))
        result.firstByte.append(monotonic() - start)
        close(fd)
    }
    guard let fd = try? connectLoopback(port: echo) else { fail("raw connect") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    var scratch = [UInt8](repeating: 0, count: 65536)
    _ = recv(fd, &scratch, 12, Int32(MSG_WAITALL))
    _ = send(fd, rfbHello, rfbHello.count, 0)
    for _ in 0..<rounds {
        let start = monotonic()
        _ = send(fd, updateRequest, updateRequest.count, 0)
        _ = recv(fd, &scratch, updateRequest.count, Int32(MSG_WAITALL))
        result.rtt.append(monotonic() - start)
    }
    close(fd)
    guard let s = try? connectLoopback(port: stream) else { fail("raw connect") }
    _ = recv(s, &scratch, 12, Int32(MSG_WAITALL))
    _ = send(s, rfbHello, rfbHello.count, 0)
    let start = monotonic()
    var total = 0
    while total < streamBytes {
        let n = recv(s, &scratch, scratch.count, 0)
        guard n > 0 else { break }
        total += n
    }
    result.mibPerSecond = Double(total) / 1_048_576 / (monotonic() - start)
    close(s)
    return result
}

// MARK: - WebSocket paths (the bridge, websockify)

func wsPath(echoURL: String, streamURL: String, streamBytes: Int, rounds: Int, connects: Int, memory: @Sendable () -> Int, idle: Int) async throws -> PathResult {
    var result = PathResult()
    let quiet = { var l = Logger(label: "bench.ws"); l.logLevel = .critical; return l }()
    let configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 24)
    progress("connects")
    for _ in 0..<connects {
        let start = monotonic()
        let took = OnceValue<Double>()
        try await WebSocketClient.connect(url: echoURL, configuration: configuration, logger: quiet) { inbound, outbound, _ in
            for try await _ in inbound.messages(maxSize: 1 << 24) {
                took.set(monotonic() - start)
                break
            }
            try await outbound.close(.normalClosure, reason: nil)
        }
        if let t = took.current { result.firstByte.append(t) }
    }
    progress("echo")
    let rtts = OnceValue<[Double]>()
    try await WebSocketClient.connect(url: echoURL, configuration: configuration, logger: quiet) { inbound, outbound, _ in
        var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
        var pending = 0
        func drain(_ n: Int) async throws {
            while pending < n {
                guard case .binary(let b)? = try await messages.next() else { throw TestFailure("echo ended") }
                pending += b.readableBytes
            }
            pending -= n
        }
        try await drain(12)
        try await outbound.write(.binary(ByteBuffer(bytes: rfbHello)))
        var out: [Double] = []
        for _ in 0..<rounds {
            let start = monotonic()
            try await outbound.write(.binary(ByteBuffer(bytes: updateRequest)))
            try await drain(updateRequest.count)
            out.append(monotonic() - start)
        }
        rtts.set(out)
        try await outbound.close(.normalClosure, reason: nil)
    }
    result.rtt = rtts.current ?? []
    progress("stream")
    let rate = OnceValue<Double>()
    // websockify resets the connection once the target is done: count what arrived until then.
    _ = try? await WebSocketClient.connect(url: streamURL, configuration: configuration, logger: quiet) { inbound, outbound, _ in
        var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
        _ = try await messages.next()
        try await outbound.write(.binary(ByteBuffer(bytes: rfbHello)))
        let start = monotonic()
        var total = 0
        do {
            while total < streamBytes, case .binary(let b)? = try await messages.next() { total += b.readableBytes }
        } catch {}
        rate.set(Double(total) / 1_048_576 / (monotonic() - start))
        if total < streamBytes { progress("stream ended after \(total >> 20) MiB") }
        try? await outbound.close(.normalClosure, reason: nil)
    }
    result.mibPerSecond = rate.current ?? 0

    progress("idle viewers")
    // Idle viewers: each holds its connection after the handshake; the server's memory grows.
    let before = memory()
    let opened = Broadcast<Int>()
    let hold = OnceValue<Void>()
    let counter = opened.subscribe()
    let viewers = Task {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<idle {
                group.addTask {
                    try await WebSocketClient.connect(url: echoURL, configuration: configuration, logger: quiet) { inbound, outbound, _ in
                        var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                        _ = try await messages.next()
                        try await outbound.write(.binary(ByteBuffer(bytes: rfbHello)))
                        opened.publish(i)
                        try await hold.wait()
                        try await outbound.close(.normalClosure, reason: nil)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
    try await withTimeout(.seconds(60), "\(idle) idle viewers to connect") {
        var ready = 0
        for await _ in counter {
            ready += 1
            if ready == idle { return }
        }
    }
    // Let the servers settle (buffers allocated at connect are part of the cost).
    try await Task.sleep(for: .milliseconds(500))
    result.kibPerViewer = Double(memory() - before) / Double(idle)
    hold.set(())
    try await viewers.value
    return result
}

// MARK: - The bridge's own process

/// `kioskd-bench --serve-bridge PORT ECHO STREAM SECRETFILE`: a public listener whose tasks
/// "echo" and "stream" are relayed to the two targets.
func serveBridge(_ args: [String]) async throws -> Never {
    guard args.count == 4, let port = Int(args[0]), let echo = Int(args[1]), let stream = Int(args[2]) else { fail("--serve-bridge PORT ECHO STREAM SECRET") }
    var logger = Logger(label: "bench.bridge")
    logger.logLevel = .error
    let dir = try makeTempDir("kioskd-bench-bridge")
    let store = try SQLiteTaskStore(path: dir + "/k.sqlite")
    try await store.migrate()
    let service = TaskService(store: store, sessions: InstantSessions(), tokens: await ViewerTokens(secret: readSmallFileBytes(args[3], limit: 64) ?? []),
                              limits: TaskLimits(), template: { id, r in SessionSettings(id: id, url: r.url) }, logger: logger)
    _ = try await service.start()
    for id in ["echo", "stream"] {
        _ = try await service.create(CreateTask(taskID: id, url: "about:blank"))
        _ = try await service.waitRunning(id, timeout: .seconds(5))
    }
    var settings = BridgeSettings()
    settings.maxViewers = 10_000
    let access = ViewerAccess(service: service, settings: settings) { id in
        BridgeTarget(vncPort: id == "echo" ? echo : stream, websockifyPort: nil) {}
    }
    try await PublicServer(access: access, settings: settings) { false }.run(host: "127.0.0.1", port: port, logger: logger) { _ in }
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
    let streamBytes = 512 << 20, rounds = 2000, connects = 200, idle = 100
    print("\nVNC WebSocket bridge vs Debian's websockify vs raw TCP (same targets; \(streamBytes >> 20) MiB stream, \(rounds) echoes, \(connects) connects, \(idle) idle viewers)")
    let echo = TargetServer(stream: nil), stream = TargetServer(stream: streamBytes)
    let raw = rawPath(echo: echo.port, stream: stream.port, streamBytes: streamBytes, rounds: rounds, connects: connects)

    let secretFile = try makeTempDir("kioskd-bench-secret") + "/secret"
    let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
    try writeFile(secretFile, secret, mode: 0o600, owner: nil)
    let bridgePort = try freePort()
    let bridgePID = spawn(sibling("kioskd-bench"), ["--serve-bridge", "\(bridgePort)", "\(echo.port)", "\(stream.port)", secretFile])
    waitListening(bridgePort)
    let tokens = await ViewerTokens(secret: secret)
    let echoToken = try await tokens.mint(task: "echo", role: .view, ttl: 3600).token
    let streamToken = try await tokens.mint(task: "stream", role: .view, ttl: 3600).token
    let bridge = try await wsPath(echoURL: "ws://127.0.0.1:\(bridgePort)/api/v1/vnc/ws?task_id=echo&token=\(echoToken)",
                                  streamURL: "ws://127.0.0.1:\(bridgePort)/api/v1/vnc/ws?task_id=stream&token=\(streamToken)",
                                  streamBytes: streamBytes, rounds: rounds, connects: connects, memory: { rssKiB(bridgePID) }, idle: idle)
    kill(bridgePID, SIGTERM)

    let wsEcho = try freePort(), wsStream = try freePort()
    let a = spawn("/usr/bin/websockify", ["127.0.0.1:\(wsEcho)", "127.0.0.1:\(echo.port)"])
    let b = spawn("/usr/bin/websockify", ["127.0.0.1:\(wsStream)", "127.0.0.1:\(stream.port)"])
    waitListening(wsEcho)
    waitListening(wsStream)
    let websockify = try await wsPath(echoURL: "ws://127.0.0.1:\(wsEcho)/", streamURL: "ws://127.0.0.1:\(wsStream)/",
                                      streamBytes: streamBytes, rounds: rounds, connects: connects, memory: { markedPSS("websockify 127.0.0.1:\(wsEcho) ") }, idle: idle)
    kill(a, SIGTERM)
    kill(b, SIGTERM)

    func row4(_ n: String, _ x: String, _ y: String, _ z: String) -> String {
        "| " + n.padding(toLength: 36) + " | " + x.padding(toLength: 12) + " | " + y.padding(toLength: 12) + " | " + z.padding(toLength: 12) + " |"
    }
    print(row4("measure", "kioskd", "websockify", "raw TCP"))
    print(row4(String(repeating: "-", count: 36), String(repeating: "-", count: 12), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    print(row4("server → viewer (MiB/s)", String(Int(bridge.mibPerSecond)), String(Int(websockify.mibPerSecond)), String(Int(raw.mibPerSecond))))
    print(row4("echo RTT p50 (ms)", ms(percentile(bridge.rtt, 0.5)), ms(percentile(websockify.rtt, 0.5)), ms(percentile(raw.rtt, 0.5))))
    print(row4("echo RTT p99 (ms)", ms(percentile(bridge.rtt, 0.99)), ms(percentile(websockify.rtt, 0.99)), ms(percentile(raw.rtt, 0.99))))
    print(row4("connect → first RFB byte p50 (ms)", ms(percentile(bridge.firstByte, 0.5)), ms(percentile(websockify.firstByte, 0.5)), ms(percentile(raw.firstByte, 0.5))))
    print(row4("memory per idle viewer (KiB)", String(Int(bridge.kibPerViewer ?? 0)), String(Int(websockify.kibPerViewer ?? 0)), "–"))
    print("\ntargets: ≥ 3× websockify's throughput and ≥ 50 % of raw TCP; RTT p50 ≤ 2× raw; ≤ 64 KiB per idle viewer; first byte ≤ 2 ms")
}

func progress(_ what: String) {
    var line = Array("kioskd-bench: \(what)…\n".utf8)
    _ = write(2, &line, line.count)
}
