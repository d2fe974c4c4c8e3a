import Bridge
import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Logging
import NIOCore
import NIOSSL
import Store
import Supervision
import ViewerInput
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// Real sessions (as the kioskd user), a task service on SQLite, and the public listener on a
/// loopback port: what a viewer reaches behind the ALB.
struct BridgeHarness {
    let dir: String
    let manager: SessionManager
    let service: TaskService
    let port: Int

    /// A harness for `body`: the listener and the service run beside it and are cancelled and
    /// awaited once it ends; then every session is stopped, the store closed and the directory
    /// removed. `portGuard`: the sessions' ports refuse other local users (its own narrow port
    /// range, so other suites' loopback servers never fall in it while it is installed).
    static func with<T>(_ name: String, settings: BridgeSettings = BridgeSettings(), bridge: BridgeMode = .builtin, external: ExternalTokens? = nil,
                        tls: NIOSSLContext? = nil, portGuard: Bool = false, _ body: (BridgeHarness) async throws -> T) async throws -> T {
        for (path, package) in [(Xvfb.executable, "xvfb"), (X11VNC.executable, "x11vnc"), (Chromium.executable, "chromium"),
                                (Websockify.executable, "websockify")] {
            _ = try systemProgram(path, package: package)
        }
        guard access("/usr/share/novnc/vnc.html", R_OK) == 0 else { throw TestFailure("noVNC is missing: install the Debian package 'novnc' (scripts/setup.sh does)") }
        let dir = try makeTempDir("kioskd-bridge-\(name)")
        defer { removeTree(dir) }
        var logger = Logger(label: "test.bridge")
        logger.logLevel = .warning
        let host = SessionHost(sessionsDir: dir + "/sessions", recordsDir: dir + "/records", user: try SessionHost.sessionUser(named: "kioskd"),
                               displays: Self.displays, ports: portGuard ? Self.guardedPorts : Self.ports,
                               portGuard: portGuard ? PortGuard(ports: Self.guardedRange) : nil, logger: logger)
        let manager = SessionManager(host: host)
        let store = try SQLiteTaskStore(path: dir + "/kioskd.sqlite")
        do {
            let result = try await serve(manager, store, dir: dir, settings: settings, bridge: bridge, external: external, tls: tls, logger: logger, body)
            await manager.stopAll(reason: "test over")
            await store.close()
            return result
        } catch {
            await manager.stopAll(reason: "test over")
            await store.close()
            throw error
        }
    }

    private static func serve<T>(_ manager: SessionManager, _ store: any TaskStore, dir: String, settings: BridgeSettings, bridge: BridgeMode,
                                 external: ExternalTokens?, tls: NIOSSLContext?, logger: Logger,
                                 _ body: (BridgeHarness) async throws -> T) async throws -> T {
        _ = try await manager.start()
        try await store.migrate()
        let tokens = await ViewerTokens(secret: try ViewerTokens.secret(at: dir + "/viewer-token.key"))
        let service = TaskService(store: store, sessions: manager, tokens: tokens, limits: TaskLimits(),
                                  template: { id, request in SessionSettings(id: id, url: request.url, width: 800, height: 600, bridge: bridge) },
                                  logger: logger)
        _ = try await service.interruptUnfinished()
        let access = ViewerAccess(service: service, settings: settings, external: external) { id in await target(manager, id) }
        let server = PublicServer(access: access, settings: settings, tls: tls)
        let bound = OnceValue<Int>()
        return try await withBackground({
            try await race({ await service.run() }, { try await server.run(.hostname("127.0.0.1", port: 0), logger: logger) { bound.set($0) } })
        }) {
            let port = try await withTimeout(.seconds(10), "the public listener") { try await bound.wait() }
            return try await body(BridgeHarness(dir: dir, manager: manager, service: service, port: port))
        }
    }

    /// Where a task's viewers and agents go, as the daemon's public child says.
    static func target(_ manager: SessionManager, _ id: String) async -> BridgeTarget? {
        guard let session = await manager.session(id) else { return nil }
        let info = await session.info()
        var browser: (@Sendable () async -> String?)?
        if let port = Int(info.cdpURL.split(separator: ":").last ?? "") { browser = { await browserDebuggerURL(cdpPort: port) } }
        return BridgeTarget(vncSocket: info.vncSocket, websockify: info.websockifyPort.map { ($0, session.websockifySecret ?? "") },
                            browser: browser) {
            _ = try? await session.releaseHeldInput()
        }
    }

    /// One allocator of each kind for every harness of the test process: suites run in
    /// parallel, and two allocators could hand out the same display before either X server
    /// is up.
    static let displays = DisplayAllocator(range: 700...769, logger: Logger(label: "test.displays"))
    static let ports = PortAllocator(range: 10000...10499)
    /// The port guard's range: narrow, apart from every other suite's ranges, and below the
    /// kernel's ephemeral ports, so no loopback server of another suite is in it.
    static let guardedRange = 31950...31979
    static let guardedPorts = PortAllocator(range: guardedRange)

    /// A running task (a real session) and a token for it.
    func task(_ id: String, url: String, role: ViewerRole = .view) async throws -> (info: SessionInfo, token: String) {
        _ = try await service.create(CreateTask(taskID: id, url: url))
        let task = try await service.waitRunning(id, timeout: .seconds(25))
        guard task.state == .running, let session = await manager.session(id) else { throw TestFailure("task \(id) is \(task.state): \(task.reason ?? "")") }
        return (await session.info(), try await service.tokens.mint(task: id, role: role, ttl: 300).token)
    }

    var url: String { "ws://127.0.0.1:\(port)/api/v1/vnc/ws" }

    /// A WebSocket upgrade written by hand: the raw answer (status line, headers, body), so a
    /// refusal's status and JSON can be read; the socket is left open when it upgraded. Read a
    /// byte at a time: the bridge's greeting follows the 101 at once and belongs to the caller.
    func upgrade(_ query: String, origin: String? = nil, protocols: String? = nil, path: String = "/api/v1/vnc/ws", port: Int? = nil,
                 headers: [String] = []) throws -> (status: Int, text: String, fd: Int32) {
        try rawUpgrade(port: port ?? self.port, query, origin: origin, protocols: protocols, path: path, headers: headers)
    }
}

/// A WebSocket upgrade written by hand to a listener on `port` (`BridgeHarness.upgrade`).
func rawUpgrade(port: Int, _ query: String, origin: String? = nil, protocols: String? = nil, path: String = "/api/v1/vnc/ws",
            headers: [String] = []) throws -> (status: Int, text: String, fd: Int32) {
    let fd = try connectLoopback(port: port, timeout: 5)
    var request = "GET \(path)?\(query) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    for header in headers { request += header + "\r\n" }
    if let origin { request += "Origin: \(origin)\r\n" }
    if let protocols { request += "Sec-WebSocket-Protocol: \(protocols)\r\n" }
    request += "\r\n"
    _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    var answer: [UInt8] = []
    var byte: UInt8 = 0
    while true {
        guard recv(fd, &byte, 1, 0) == 1 else { break }
        answer.append(byte)
        let text = String(decoding: answer, as: UTF8.self)
        if text.hasPrefix("HTTP/1.1 101"), text.contains("\r\n\r\n") { break }
        if let end = text.range(of: "\r\n\r\n"), let length = text.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") })
            .flatMap({ Int($0.split(separator: ":")[1].filter { !$0.isWhitespace }) }),
           text[end.upperBound...].utf8.count >= length { break }
    }
    let text = String(decoding: answer, as: UTF8.self)
    let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
    return (status, text, fd)
}

/// `rawUpgrade` on a thread of its own: its blocking reads must not hold one of the few
/// cooperative threads (two on a 2-core machine) that the listeners under test, in this process,
/// need to answer; with suites running side by side, two such reads starved every listener.
func upgradeOffPool(port: Int, _ query: String, path: String = "/api/v1/vnc/ws", headers: [String] = []) async throws -> (status: Int, text: String, fd: Int32) {
    try await blocking { try rawUpgrade(port: port, query, path: path, headers: headers) }
}

/// RFB 3.8 over the bridge's WebSocket, as noVNC speaks it.
struct WSViewer {
    var pending: [UInt8] = []
    var iterator: WebSocketInboundMessageStream.AsyncIterator
    let outbound: WebSocketOutboundWriter

    init(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter) {
        iterator = inbound.messages(maxSize: 64 << 20).makeAsyncIterator()
        self.outbound = outbound
    }

    mutating func read(_ n: Int) async throws -> [UInt8] {
        while pending.count < n {
            guard let message = try await iterator.next() else { throw TestFailure("the bridge closed after \(pending.count) of \(n) bytes") }
            guard case .binary(let buffer) = message else { throw TestFailure("a text frame from the bridge") }
            pending += buffer.readableBytesView
        }
        defer { pending.removeFirst(n) }
        return Array(pending.prefix(n))
    }

    func send(_ bytes: [UInt8]) async throws { try await outbound.write(.binary(ByteBuffer(bytes: bytes))) }

    /// Version, security None, ClientInit; returns the screen size.
    mutating func handshake() async throws -> (width: Int, height: Int) {
        let banner = try await read(12)
        guard banner == Array("RFB 003.008\n".utf8) else { throw TestFailure("banner \(banner)") }
        try await send(Array("RFB 003.008\n".utf8))
        let count = Int(try await read(1)[0])
        guard try await read(count).contains(1) else { throw TestFailure("no None security") }
        try await send([1])
        guard try await read(4) == [0, 0, 0, 0] else { throw TestFailure("security failed") }
        try await send([0])   // exclusive: the bridge must force shared
        let serverInit = try await read(24)
        _ = try await read(Int(serverInit[20]) << 24 | Int(serverInit[21]) << 16 | Int(serverInit[22]) << 8 | Int(serverInit[23]))
        return (Int(serverInit[0]) << 8 | Int(serverInit[1]), Int(serverInit[2]) << 8 | Int(serverInit[3]))
    }

    /// A full update request answered: everything sent before it has been processed by x11vnc.
    mutating func roundTrip(_ size: (width: Int, height: Int)) async throws {
        try await send([3, 0, 0, 0, 0, 0, UInt8(size.width >> 8), UInt8(size.width & 0xFF), UInt8(size.height >> 8), UInt8(size.height & 0xFF)])
        while try await read(1) != [0] {}
        pending = []
    }
}

/// What the bridge sends on an upgraded socket until it closes it (or `timeout` seconds pass
/// without a byte): each frame's opcode and payload.
func serverFrames(_ fd: Int32, timeout: Int = 10) -> [(opcode: UInt8, payload: [UInt8])] {
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &chunk, chunk.count, 0)
        guard n > 0 else { break }
        bytes += chunk[..<n]
    }
    var frames: [(opcode: UInt8, payload: [UInt8])] = []
    var i = 0
    while i + 2 <= bytes.count {
        let short = Int(bytes[i + 1] & 0x7F), extra = short == 126 ? 2 : short == 127 ? 8 : 0
        guard i + 2 + extra <= bytes.count else { break }
        let length = extra == 0 ? short : bytes[(i + 2)..<(i + 2 + extra)].reduce(0) { $0 << 8 | Int($1) }
        let start = i + 2 + extra
        guard start + length <= bytes.count else { break }
        frames.append((bytes[i] & 0x0F, Array(bytes[start..<(start + length)])))
        i = start + length
    }
    return frames
}

/// The next frame the bridge sends on an upgraded socket (nil if it closes or stays silent
/// for `timeout` seconds), read a byte at a time so nothing after it is consumed.
func serverFrame(_ fd: Int32, timeout: Int = 10) -> (opcode: UInt8, payload: [UInt8])? {
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    func read(_ n: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: n), got = 0
        while got < n {
            let r = bytes[got...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, n - got, 0) }
            guard r > 0 else { return nil }
            got += r
        }
        return bytes
    }
    guard let head = read(2) else { return nil }
    let short = Int(head[1] & 0x7F), extra = short == 126 ? 2 : short == 127 ? 8 : 0
    guard let more = read(extra) else { return nil }
    let length = extra == 0 ? short : more.reduce(0) { $0 << 8 | Int($1) }
    guard let payload = read(length) else { return nil }
    return (head[0] & 0x0F, payload)
}

/// A close frame's code and reason.
func closeOf(_ frames: [(opcode: UInt8, payload: [UInt8])]) -> (code: Int, reason: String)? {
    guard let close = frames.last(where: { $0.opcode == 8 }), close.payload.count >= 2 else { return nil }
    return (Int(close.payload[0]) << 8 | Int(close.payload[1]), String(decoding: close.payload.dropFirst(2), as: UTF8.self))
}
