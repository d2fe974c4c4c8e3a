// A minimal blocking WebSocket client for the bridge benchmark: the same blocking send/recv
// loop the raw-TCP path uses, so the client's own cost is equal on every path and the table
// shows what the relay adds. Only what the benchmark needs: one upgrade, masked binary frames
// out, frame headers parsed in and payload counted without copying.
import KioskdTestSupport

#if canImport(Glibc)
import Glibc
#endif

final class BlockingWebSocket {
    let fd: Int32
    /// Received bytes not yet consumed (after the upgrade answer, or a split frame header).
    private var pending: [UInt8] = []
    /// Payload bytes of the current frame still to come, and whether they count (binary or
    /// continuation) or are skipped (ping, pong, close).
    private var payloadLeft = 0
    private var counting = true
    private let scratch = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 1 << 20)

    /// Connects to 127.0.0.1:`port`, upgrades at `path`; fails on anything but 101.
    init(port: Int, path: String) {
        guard let fd = try? connectLoopback(port: port) else { fail("cannot connect to \(port)") }
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
        sendAll(Array(request.utf8))
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        var head: [UInt8] = []
        while true {
            let n = recv(fd, scratch.baseAddress, scratch.count, 0)
            guard n > 0 else { fail("upgrade at \(port): connection ended") }
            head += scratch[0..<n]
            if let at = head.firstRange(of: end) {
                guard head.starts(with: Array("HTTP/1.1 101".utf8)) else { fail("upgrade at \(port): \(String(decoding: head[..<at.lowerBound], as: UTF8.self))") }
                pending = Array(head[at.upperBound...])
                return
            }
        }
    }

    /// One masked binary frame (the mask is fixed: the server unmasks whatever it is).
    func send(_ payload: [UInt8]) {
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        var frame: [UInt8] = [0x82, 0x80 | UInt8(payload.count)] + mask
        for (i, byte) in payload.enumerated() { frame.append(byte ^ mask[i & 3]) }
        sendAll(frame)
    }

    private func sendAll(_ bytes: [UInt8]) {
        guard bytes.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else { fail("send: errno \(errno)") }
    }

    /// Reads until `count` payload bytes have arrived (or more, up to one read's worth); returns
    /// how many did, or fewer when the connection ended.
    func receive(atLeast count: Int) -> Int {
        var got = 0
        if !pending.isEmpty { got += takePending([]) }
        while got < count {
            let n = recv(fd, scratch.baseAddress, scratch.count, 0)
            guard n > 0 else { return got }
            let read = UnsafeBufferPointer(rebasing: scratch[0..<n])
            got += pending.isEmpty ? consume(read) : takePending(Array(read))
        }
        return got
    }

    private func takePending(_ more: [UInt8]) -> Int {
        let bytes = pending + more
        pending = []
        return bytes.withUnsafeBufferPointer { consume($0) }
    }

    /// Walks frame headers in `bytes`, counting payload; keeps a split header for the next read.
    private func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var i = 0, counted = 0
        while i < bytes.count {
            if payloadLeft > 0 {
                let take = min(payloadLeft, bytes.count - i)
                if counting { counted += take }
                payloadLeft -= take
                i += take
                continue
            }
            let available = bytes.count - i
            guard available >= 2 else { pending = Array(bytes[i...]); return counted }
            let opcode = bytes[i] & 0x0F, short = Int(bytes[i + 1] & 0x7F)
            let extra = short == 126 ? 2 : short == 127 ? 8 : 0
            guard available >= 2 + extra else { pending = Array(bytes[i...]); return counted }
            var length = short
            if extra > 0 { length = bytes[(i + 2)..<(i + 2 + extra)].reduce(0) { $0 << 8 | Int($1) } }
            counting = opcode == 0 || opcode == 2
            payloadLeft = length
            i += 2 + extra
        }
        return counted
    }

    func close() { Glibc.close(fd) }

    deinit { scratch.deallocate() }
}
