import Essentials

#if canImport(Glibc)
import Glibc
#endif

/// A WebSocket upgrade the server refused: its status and body (kioskd's JSON error).
public struct WebSocketRefused: Error, CustomStringConvertible {
    public let status: Int
    public let body: String
    public var description: String { "upgrade refused with \(status): \(body)" }
}

/// The server's close frame, where data was expected.
public struct WebSocketClosed: Error, CustomStringConvertible {
    public let code: Int
    public let reason: String
    public var description: String { "the server closed the WebSocket with \(code) \(reason)" }
}

/// A blocking WebSocket client on a plain socket to any IPv4 `host:port` (a network
/// namespace's address too), for tests whose target lacks the NIO client and for the benchmark:
/// RFB as noVNC speaks it (`rfbHandshake`, `readUpdate`) and CDP messages (`cdp`). Every call
/// blocks, bounded by `timeout` seconds per read: run it on a thread of its own (`blocking`),
/// never on the cooperative pool beside listeners in the same process.
public final class BlockingWSClient {
    public let fd: Int32
    /// Payload bytes of data messages received so far.
    public private(set) var payloadReceived = 0
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 8)
    private var head = 0, tail = 0
    /// The current data frame: payload bytes still to come, its opcode and FIN.
    private var dataLeft = 0
    private var dataOpcode: UInt8 = 0
    private var dataFin = true

    /// Connects and upgrades at `path`; throws `WebSocketRefused` for any answer but 101.
    public init(host: String = "127.0.0.1", port: Int, path: String, protocols: String? = nil, timeout: Int = 30) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        // Every stored property is set from here: a throw runs deinit, which closes and frees.
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw TestFailure("not an IPv4 address: '\(host)'") }
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { throw TestFailure("cannot connect to \(host):\(port): errno \(errno)") }
        try upgrade(host: host, port: port, path: path, protocols: protocols)
    }

    deinit {
        Glibc.close(fd)
        buffer.deallocate()
    }

    /// Ends the connection at once (no close handshake).
    public func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    /// A normal closure, as a browser ends it: a close frame (1000), then everything the
    /// server still sends is passed over until its close frame (or its end), then the end.
    public func closeHandshake() throws {
        try send(opcode: 8, [0x03, 0xE8])
        defer { close() }
        while true {
            do {
                try nextDataFrame()
                try skip(dataLeft)
            } catch let closed as WebSocketClosed {
                guard closed.code == 1000 else { throw closed }
                return
            }
        }
    }

    private func upgrade(host: String, port: Int, path: String, protocols: String?) throws {
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if let protocols { request += "Sec-WebSocket-Protocol: \(protocols)\r\n" }
        try sendAll(Array((request + "\r\n").utf8))
        let end = Array("\r\n\r\n".utf8)
        var headLength = 0
        while true {
            try fill()
            let bytes = Array(UnsafeRawBufferPointer(rebasing: buffer[head..<tail]))
            if let range = bytes.firstRange(of: end) {
                headLength = range.upperBound
                break
            }
            guard bytes.count < 65536 else { throw TestFailure("an answer head over 64 KiB from \(host):\(port)") }
        }
        let headText = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[head..<(head + headLength)]), as: UTF8.self)
        head += headLength
        let statusLine = headText.split(separator: "\r\n").first ?? ""
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        guard status == 101 else {
            // The refusal's JSON, as long as Content-Length says.
            let length = headText.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingSpaces) } ?? 0
            while tail - head < length { try fill() }
            let body = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[head..<(head + length)]), as: UTF8.self)
            throw WebSocketRefused(status: status, body: body.isEmpty ? String(statusLine) : body)
        }
    }

    // MARK: - Frames out

    public func send(binary payload: [UInt8]) throws { try send(opcode: 2, payload) }

    public func send(text: String) throws { try send(opcode: 1, Array(text.utf8)) }

    /// One masked frame with FIN.
    public func send(opcode: UInt8, _ payload: [UInt8]) throws {
        var frame: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            frame += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame.reserveCapacity(frame.count + payload.count)
        for (i, byte) in payload.enumerated() { frame.append(byte ^ mask[i & 3]) }
        try sendAll(frame)
    }

    private func sendAll(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw TestFailure("send: errno \(errno)") }
            sent += n
        }
    }

    // MARK: - Frames in

    /// At least one more byte into the buffer (moved to its start when the end is reached).
    private func fill() throws {
        if head == tail { head = 0; tail = 0 }
        if tail == buffer.count {
            guard head > 0 else { throw TestFailure("a frame header over \(buffer.count) bytes") }
            let base = buffer.baseAddress!
            memmove(base, base + head, tail - head)
            tail -= head
            head = 0
        }
        while true {
            let n = recv(fd, buffer.baseAddress! + tail, buffer.count - tail, 0)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw TestFailure("nothing received for the read timeout") }
            guard n > 0 else { throw TestFailure("the server closed the connection" + (n < 0 ? " (errno \(errno))" : "")) }
            tail += n
            return
        }
    }

    private func need(_ n: Int) throws {
        while tail - head < n {
            if buffer.count - head < n {
                let base = buffer.baseAddress!
                memmove(base, base + head, tail - head)
                tail -= head
                head = 0
            }
            try fill()
        }
    }

    /// Reads frame headers until a data frame's (answering pings; a close frame is an error
    /// naming its code and reason).
    private func nextDataFrame() throws {
        while dataLeft == 0 {
            try need(2)
            let first = buffer[head], second = buffer[head + 1]
            let short = Int(second & 0x7F)
            let extra = short == 126 ? 2 : short == 127 ? 8 : 0
            try need(2 + extra)
            var length = short
            if extra > 0 { length = (0..<extra).reduce(0) { $0 << 8 | Int(buffer[head + 2 + $1]) } }
            head += 2 + extra
            let opcode = first & 0x0F
            if opcode >= 8 {
                try need(length)
                let payload = Array(buffer[head..<(head + length)])
                head += length
                switch opcode {
                case 9: try send(opcode: 10, payload)
                case 8:
                    throw WebSocketClosed(code: payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : 1005,
                                          reason: String(decoding: payload.dropFirst(2), as: UTF8.self))
                default: break
                }
                continue
            }
            if opcode != 0 { dataOpcode = opcode }
            dataFin = first & 0x80 != 0
            dataLeft = length
            if length == 0 && dataFin { return }
        }
    }

    /// Walks `n` payload bytes of data frames, handing each available run to `body`.
    private func consume(_ n: Int, _ body: (UnsafeRawBufferPointer) -> Void) throws {
        var left = n
        while left > 0 {
            if dataLeft == 0 { try nextDataFrame() }
            if head == tail { try fill() }
            let take = min(left, dataLeft, tail - head)
            body(UnsafeRawBufferPointer(rebasing: buffer[head..<(head + take)]))
            head += take
            dataLeft -= take
            left -= take
            payloadReceived += take
        }
    }

    /// The next `n` bytes of the data stream (RFB over binary messages, however framed).
    public func read(_ n: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(n)
        try consume(n) { out += $0 }
        return out
    }

    /// Passes over `n` bytes of the data stream without copying them.
    public func skip(_ n: Int) throws { try consume(n) { _ in } }

    /// The next whole data message (fragments joined): whether it was text, and its payload.
    public func message() throws -> (text: Bool, payload: [UInt8]) {
        var out: [UInt8] = []
        try nextDataFrame()
        let text = dataOpcode == 1
        while true {
            let fin = dataFin
            if dataLeft > 0 { try consume(dataLeft) { out += $0 } }
            if fin { return (text, out) }
            try nextDataFrame()
        }
    }
}

// MARK: - RFB, as a viewer speaks it through kioskd

public struct RFBScreen: Sendable {
    public let width: Int
    public let height: Int
    public let bytesPerPixel: Int
}

extension BlockingWSClient {
    /// RFB 3.8 up to ServerInit (security None, ClientInit shared), then SetEncodings raw only:
    /// every update after is raw pixels, its size known from its rectangles. `banner` is called
    /// as soon as the server's version has arrived (a benchmark's clock).
    public func rfbHandshake(banner seen: () -> Void = {}) throws -> RFBScreen {
        let banner = try read(12)
        seen()
        guard banner == Array("RFB 003.008\n".utf8) else { throw TestFailure("RFB banner \(banner)") }
        try send(binary: Array("RFB 003.008\n".utf8))
        let count = Int(try read(1)[0])
        guard count > 0 else { throw TestFailure("the server offers no security type: \(String(decoding: try read(Int(try read(4)[3])), as: UTF8.self))") }
        guard try read(count).contains(1) else { throw TestFailure("the server does not offer security None") }
        try send(binary: [1])
        guard try read(4) == [0, 0, 0, 0] else { throw TestFailure("RFB security failed") }
        try send(binary: [1])
        let serverInit = try read(24)
        let nameLength = Int(serverInit[20]) << 24 | Int(serverInit[21]) << 16 | Int(serverInit[22]) << 8 | Int(serverInit[23])
        try skip(nameLength)
        try send(binary: [2, 0, 0, 1, 0, 0, 0, 0])
        return RFBScreen(width: Int(serverInit[0]) << 8 | Int(serverInit[1]), height: Int(serverInit[2]) << 8 | Int(serverInit[3]),
                         bytesPerPixel: Int(serverInit[4]) / 8)
    }

    /// A FramebufferUpdateRequest.
    public func requestUpdate(incremental: Bool, x: Int = 0, y: Int = 0, width: Int, height: Int) throws {
        try send(binary: [3, incremental ? 1 : 0, UInt8(x >> 8), UInt8(x & 0xFF), UInt8(y >> 8), UInt8(y & 0xFF),
                          UInt8(width >> 8), UInt8(width & 0xFF), UInt8(height >> 8), UInt8(height & 0xFF)])
    }

    /// Reads server messages until a whole FramebufferUpdate has been read; returns its size
    /// in bytes. Bells and clipboard texts on the way are passed over.
    @discardableResult
    public func readUpdate(_ screen: RFBScreen) throws -> Int {
        while true {
            let type = try read(1)[0]
            switch type {
            case 0:
                let header = try read(3)
                let rects = Int(header[1]) << 8 | Int(header[2])
                var size = 4
                for _ in 0..<rects {
                    let rect = try read(12)
                    let width = Int(rect[4]) << 8 | Int(rect[5]), height = Int(rect[6]) << 8 | Int(rect[7])
                    let encoding = rect[8...11].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                    guard encoding == 0 else { throw TestFailure("an update rectangle in encoding \(Int32(bitPattern: encoding)), not raw (asked for raw only)") }
                    try skip(width * height * screen.bytesPerPixel)
                    size += 12 + width * height * screen.bytesPerPixel
                }
                return size
            case 2:
                continue
            case 3:
                let header = try read(7)
                try skip(Int(header[3]) << 24 | Int(header[4]) << 16 | Int(header[5]) << 8 | Int(header[6]))
            default:
                throw TestFailure("an RFB server message of type \(type), not expected here")
            }
        }
    }
}

// MARK: - CDP on a browser-level endpoint

extension BlockingWSClient {
    /// Sends one CDP command and reads messages until its answer (events on the way are passed
    /// over); the answer's `result`, or a failure with its `error`.
    @discardableResult
    public func cdp(_ id: Int, _ method: String, params: String = "{}", session: String? = nil) throws -> JSONValue {
        let sessionField = session.map { #","sessionId":"\#($0)""# } ?? ""
        try send(text: #"{"id":\#(id),"method":"\#(method)","params":\#(params)\#(sessionField)}"#)
        while true {
            let answer = try JSONValue(parsing: try message().payload)
            guard answer["id"]?.number == Double(id) else { continue }
            if let error = answer["error"] { throw TestFailure("CDP \(method): \(error)") }
            return answer["result"] ?? .null
        }
    }

    /// Attaches to the browser's first page target (flat sessions); its session id.
    public func attachToPage() throws -> String {
        let targets = try cdp(1, "Target.getTargets")["targetInfos"]?.array ?? []
        guard let page = targets.first(where: { $0["type"]?.string == "page" })?["targetId"]?.string else {
            throw TestFailure("the browser has no page target: \(targets)")
        }
        guard let session = try cdp(2, "Target.attachToTarget", params: #"{"targetId":"\#(page)","flatten":true}"#)["sessionId"]?.string else {
            throw TestFailure("Target.attachToTarget gave no sessionId")
        }
        return session
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
