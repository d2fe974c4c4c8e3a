@testable import Bridge
import NIOCore
import NIOWebSocket
import Testing

/// RFC 6455's rules for a viewer's frames, without sockets (found by Autobahn|Testsuite: the
/// bridge passed frames with reserved bits on, and echoed any close code, 1005 and 0 included).
@Suite struct ViewerFramesTests {
    static let mask: WebSocketMaskingKey = [1, 2, 3, 4]

    static func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true, rsv1: Bool = false, rsv2: Bool = false, rsv3: Bool = false,
                      masked: Bool = true) -> WebSocketFrame {
        var data = ByteBuffer(bytes: bytes)
        if masked { data.webSocketMask(mask) }
        return WebSocketFrame(fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: opcode, maskKey: masked ? mask : nil, data: data)
    }

    static func close(_ code: UInt16, _ reason: [UInt8] = []) -> WebSocketFrame {
        frame(.connectionClose, [UInt8(code >> 8), UInt8(code & 0xFF)] + reason)
    }

    /// The code a frame sequence ends with, nil if it does not end the connection.
    static func ending(_ frames: [WebSocketFrame], text: Bool = false, max: Int = 1 << 20) -> UInt16? {
        var rules = ViewerFrames(maxMessage: max, acceptsText: text)
        for f in frames {
            switch rules.receive(f) {
            case .closed(let code), .fail(let code, _, _): return code
            default: continue
            }
        }
        return nil
    }

    @Test func reservedBitsFailTheConnectionOnEveryKindOfFrame() {
        for opcode in [WebSocketOpcode.binary, .continuation, .ping, .pong, .connectionClose] {
            #expect(Self.ending([Self.frame(opcode, [], rsv1: true)]) == 1002, "\(opcode) rsv1")
            #expect(Self.ending([Self.frame(opcode, [], rsv2: true)]) == 1002, "\(opcode) rsv2")
            #expect(Self.ending([Self.frame(opcode, [], rsv3: true)]) == 1002, "\(opcode) rsv3")
        }
        // Before the text rule: a text frame with a reserved bit breaks the protocol first.
        #expect(Self.ending([Self.frame(.text, Array("hi".utf8), rsv1: true)]) == 1002)
    }

    @Test func unmaskedFramesReservedOpcodesAndBrokenFragmentationAre1002() {
        #expect(Self.ending([Self.frame(.binary, [1], masked: false)]) == 1002)
        for raw: UInt8 in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            #expect(Self.ending([Self.frame(WebSocketOpcode(encodedWebSocketOpcode: raw)!, [])]) == 1002, "opcode \(raw)")
        }
        #expect(Self.ending([Self.frame(.continuation, [1])]) == 1002, "continuation with no message")
        #expect(Self.ending([Self.frame(.binary, [1], fin: false), Self.frame(.binary, [2])]) == 1002, "a message inside a message")
        #expect(Self.ending([Self.frame(.binary, [1], fin: false), Self.frame(.ping, [9]), Self.frame(.continuation, [2])]) == nil,
                "a ping between fragments is fine")
    }

    @Test func textIsRefusedByTheBridgeAndMessagesOverTheLimitAre1009() {
        #expect(Self.ending([Self.frame(.text, Array("hi".utf8))]) == 1003)
        #expect(Self.ending([Self.frame(.binary, [UInt8](repeating: 0, count: 10), fin: false), Self.frame(.continuation, [UInt8](repeating: 0, count: 7))],
                            max: 16) == 1009)
        #expect(Self.ending([Self.frame(.binary, [UInt8](repeating: 0, count: 16))], max: 16) == nil, "the limit itself is allowed")
    }

    @Test func acceptedTextFailsAtTheFirstByteThatIsNotUTF8() {
        // "κόσμε" split inside its second character: fine.
        let kosme = Array("κόσμε".utf8)
        var rules = ViewerFrames(maxMessage: 1 << 20, acceptsText: true)
        #expect(rules.receive(Self.frame(.text, Array(kosme[..<3]), fin: false)) == .data(ByteBuffer(bytes: kosme[..<3]), text: true, first: true, fin: false))
        #expect(rules.receive(Self.frame(.continuation, Array(kosme[3...]))) == .data(ByteBuffer(bytes: kosme[3...]), text: true, first: false, fin: true))
        // Fail fast: the fragment with the bad byte ends it, not the message's last frame.
        #expect(Self.ending([Self.frame(.text, kosme, fin: false), Self.frame(.continuation, [0xED, 0xA0, 0x80], fin: false)], text: true) == 1007,
                "a surrogate")
        #expect(Self.ending([Self.frame(.text, [0xF4, 0x90], fin: false)], text: true) == 1007, "past U+10FFFF")
        #expect(Self.ending([Self.frame(.text, [0xC0, 0xAF])], text: true) == 1007, "overlong")
        #expect(Self.ending([Self.frame(.text, [0xE2, 0x82])], text: true) == 1007, "a character left unfinished at the end")
    }

    @Test func aCloseIsAnsweredWithItsCodeUnlessNoEndpointMaySendIt() {
        for code: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
            #expect(Self.ending([Self.close(code)]) == code, "\(code) is echoed")
        }
        for code: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            #expect(Self.ending([Self.close(code)]) == 1002, "\(code) is a protocol error")
        }
        #expect(Self.ending([Self.frame(.connectionClose, [])]) == 1000, "no code: a normal close")
        #expect(Self.ending([Self.frame(.connectionClose, [0x03])]) == 1002, "a 1-byte payload")
        #expect(Self.ending([Self.close(1000, Array("bye ✓".utf8))]) == 1000)
        #expect(Self.ending([Self.close(1000, [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xF4, 0x90, 0x80, 0x80])]) == 1007, "a reason that is not UTF-8")
    }

    /// The streaming check agrees with Swift's own validation on random bytes in random chunks.
    @Test func theStreamingUTF8CheckAgreesWithTheStandardLibrary() {
        var rng = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xA0, 0xED, 0x9F, 0xEF, 0xF0, 0x90, 0xF4, 0x8F, 0xF5, 0xFF]
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...24, using: &rng)).map { _ in
                Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
            }
            var check = UTF8Check()
            var ok = true, i = 0
            while i < bytes.count, ok {
                let n = Int.random(in: 1...9, using: &rng)
                ok = check.feed(ByteBuffer(bytes: bytes[i..<min(i + n, bytes.count)]).readableBytesView)
                i += n
            }
            #expect((ok && check.complete) == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes)")
        }
    }
}
