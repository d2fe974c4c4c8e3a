import NIOCore
import NIOWebSocket

/// RFC 6455's rules for a viewer's frames, after NIO's codec (whose decoder already refuses a
/// frame over the limit, a control frame over 125 bytes and a fragmented one: `ViewerHandler`
/// answers those with 1009 and 1002). A pure value fed each frame in order; it says what the
/// frame is for the connection, or how to fail it:
///
/// - no extension is ever negotiated, so a frame with an RSV bit set fails with 1002, and so does
///   a reserved opcode, a frame a client did not mask (§5.1), a continuation outside a message
///   or a new message inside one;
/// - a message (all its frames together) over `maxMessage` bytes fails with 1009;
/// - text: refused with 1003 by the bridge (`acceptsText` false: RFB is binary); accepted only
///   by the conformance endpoint, where it must be UTF-8, checked as it arrives, so a message
///   fails with 1007 at the first byte that cannot begin or continue a character (and at its
///   last frame if a character is left unfinished);
/// - a close frame is answered with its own code; a 1-byte payload or a code no endpoint may
///   send (any but RFC 6455's 1000–1003 and 1007–1011, IANA's 1012–1014 and 3000–4999) fails
///   with 1002, a reason that is not UTF-8 with 1007.
struct ViewerFrames {
    enum Event: Equatable {
        /// Message bytes (unmasked): `first` frame of a message (`text` or binary), `fin` its last.
        case data(ByteBuffer, text: Bool, first: Bool, fin: Bool)
        /// Answer with a pong carrying the same bytes.
        case ping(ByteBuffer)
        case pong
        /// The viewer's own close: answer with `code` (its own, or 1000 when it gave none).
        case closed(code: UInt16)
        /// A broken rule: fail the connection with `code` and `reason`; `why` is for the log
        /// and the task event.
        case fail(code: UInt16, reason: String, why: String)
    }

    let maxMessage: Int
    let acceptsText: Bool
    /// The message under way: whether it is text, and its bytes so far.
    private var message: (text: Bool, bytes: Int)?
    private var utf8 = UTF8Check()

    init(maxMessage: Int, acceptsText: Bool) {
        self.maxMessage = maxMessage
        self.acceptsText = acceptsText
    }

    mutating func receive(_ frame: WebSocketFrame) -> Event {
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            return Self.broken("set a reserved bit (no extension was negotiated)", 1002, "reserved bit set")
        }
        guard frame.maskKey != nil else { return Self.broken("sent an unmasked frame", 1002, "client frames must be masked") }
        switch frame.opcode {
        case .text, .binary, .continuation:
            return data(frame)
        case .ping:
            return .ping(frame.unmaskedData)
        case .pong:
            return .pong
        case .connectionClose:
            return close(frame.unmaskedData)
        default:
            return Self.broken("sent an unknown frame type", 1002, "unknown opcode")
        }
    }

    private mutating func data(_ frame: WebSocketFrame) -> Event {
        let first = frame.opcode != .continuation
        guard first != (message != nil) else {
            return first
                ? Self.broken("broke the WebSocket protocol (a message inside a message)", 1002, "message inside a message")
                : Self.broken("broke the WebSocket protocol (a continuation outside a message)", 1002, "unexpected continuation")
        }
        let text = first ? frame.opcode == .text : message?.text ?? false
        if text && !acceptsText { return Self.broken("sent a text frame", 1003, "binary frames only") }
        let bytes = (message?.bytes ?? 0) + frame.length
        guard bytes <= maxMessage else { return Self.broken("sent a message over \(maxMessage) bytes", 1009, "message too large") }
        let payload = frame.unmaskedData
        if text {
            if first { utf8 = UTF8Check() }
            guard utf8.feed(payload.readableBytesView), !frame.fin || utf8.complete else {
                return Self.broken("sent a text message that is not UTF-8", 1007, "invalid UTF-8")
            }
        }
        message = frame.fin ? nil : (text, bytes)
        return .data(payload, text: text, first: first, fin: frame.fin)
    }

    private func close(_ payload: ByteBuffer) -> Event {
        var payload = payload
        guard payload.readableBytes > 0 else { return .closed(code: 1000) }
        guard let code = payload.readInteger(as: UInt16.self) else {
            return Self.broken("sent a close frame with a 1-byte payload", 1002, "close payload of 1 byte")
        }
        guard Self.mayBeSent(code) else { return Self.broken("sent close code \(code), which no endpoint may send", 1002, "invalid close code") }
        var reason = UTF8Check()
        guard reason.feed(payload.readableBytesView), reason.complete else {
            return Self.broken("sent a close reason that is not UTF-8", 1007, "invalid UTF-8 in close reason")
        }
        return .closed(code: code)
    }

    /// Whether an endpoint may put `code` in a close frame: RFC 6455's (1000–1003, 1007–1011),
    /// IANA's registered additions (1012–1014), and the ranges for libraries and applications.
    static func mayBeSent(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }

    private static func broken(_ why: String, _ code: UInt16, _ reason: String) -> Event {
        .fail(code: code, reason: reason, why: why)
    }
}

/// UTF-8 checked as it streams in (Unicode's table 3-7: no overlong forms, no surrogates,
/// nothing past U+10FFFF), so a byte that cannot belong to a valid text is seen where it
/// arrives, whatever the frames' boundaries.
struct UTF8Check {
    /// Continuation bytes still owed by the character under way, and the range the next must fall in.
    private var owed = 0
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    /// Whether no character is left unfinished.
    var complete: Bool { owed == 0 }

    /// False at the first byte that makes the text invalid.
    mutating func feed(_ bytes: ByteBufferView) -> Bool {
        bytes.withContiguousStorageIfAvailable { feed($0) } ?? bytes.allSatisfy { step($0) }
    }

    mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var i = 0
        while i < bytes.count {
            // ASCII runs go eight bytes at a time.
            if owed == 0, bytes.count - i >= 8, UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                i += 8
                continue
            }
            guard step(base[i]) else { return false }
            i += 1
        }
        return true
    }

    private mutating func step(_ byte: UInt8) -> Bool {
        if owed > 0 {
            guard byte >= lower && byte <= upper else { return false }
            owed -= 1
            (lower, upper) = (0x80, 0xBF)
            return true
        }
        switch byte {
        case 0x00...0x7F: return true
        case 0xC2...0xDF: owed = 1
        case 0xE0: (owed, lower) = (2, 0xA0)
        case 0xE1...0xEC, 0xEE...0xEF: owed = 2
        case 0xED: (owed, upper) = (2, 0x9F)
        case 0xF0: (owed, lower) = (3, 0x90)
        case 0xF1...0xF3: owed = 3
        case 0xF4: (owed, upper) = (3, 0x8F)
        default: return false
        }
        return true
    }
}
