@testable @_spi(Conformance) import Bridge
import Control
import Essentials
import KioskdTestSupport
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The conformance endpoint Autobahn|Testsuite runs against (`EchoListener`: the listener's
/// own stack, echoing): frames on the wire, the rules `ViewerHandler` applies to every viewer.
@Suite("Conformance echo endpoint", .serialized)
struct EchoListenerTests {
    static func with(_ settings: BridgeSettings = BridgeSettings(), _ body: (Int) async throws -> Void) async throws {
        var logger = Logger(label: "test.echo")
        logger.logLevel = .critical
        let bound = OnceValue<Int>()
        try await withBackground({ [logger] in
            try await EchoListener.run(.hostname("127.0.0.1", port: 0), settings: settings, logger: logger) { bound.set($0) }
        }) {
            try await body(try await withTimeout(.seconds(10), "the echo endpoint") { try await bound.wait() })
        }
    }

    /// An upgraded socket (the 101 read a byte at a time: nothing after it is consumed).
    static func upgrade(_ port: Int) throws -> Int32 {
        let fd = try connectLoopback(port: port, timeout: 5)
        let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        sendAll(fd, Array(request.utf8))
        var answer: [UInt8] = []
        var byte: UInt8 = 0
        while !String(decoding: answer, as: UTF8.self).hasSuffix("\r\n\r\n") {
            guard recv(fd, &byte, 1, 0) == 1 else { break }
            answer.append(byte)
        }
        guard String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
            close(fd)
            throw TestFailure("no upgrade: \(String(decoding: answer, as: UTF8.self))")
        }
        return fd
    }

    /// A masked client frame: `head` is the first byte (FIN, RSV, opcode).
    static func frame(_ head: UInt8, _ payload: [UInt8]) -> [UInt8] {
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        return [head, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
    }

    static func closeFrame(_ code: UInt16) -> [UInt8] { frame(0x88, [UInt8(code >> 8), UInt8(code & 0xFF)]) }

    /// Sends `frames`, then reads what comes back until the server closes; on a thread of its
    /// own (the upgrade's decision runs on the cooperative pool, which blocking reads must not
    /// hold: with two cores, two of them starve it).
    static func exchange(_ port: Int, _ frames: [[UInt8]]) async throws -> [(opcode: UInt8, payload: [UInt8])] {
        try await withCheckedThrowingContinuation { done in
            Thread.detach {
                done.resume(with: Result {
                    let fd = try upgrade(port)
                    defer { close(fd) }
                    for f in frames { sendAll(fd, f) }
                    return serverFrames(fd, timeout: 5)
                })
            }
        }
    }

    @Test func messagesComeBackAsTheyWereSentAndPingsArePonged() async throws {
        try await Self.with { port in
            let back = try await Self.exchange(port, [
                Self.frame(0x02, [1, 2]), Self.frame(0x89, Array("p".utf8)), Self.frame(0x00, [3]), Self.frame(0x80, [4]),
                Self.frame(0x81, Array("κόσμε".utf8)), Self.closeFrame(1000),
            ])
            #expect(back.map(\.opcode) == [2, 0xA, 0, 0, 1, 8], "\(back)")
            #expect(back.map(\.payload) == [[1, 2], Array("p".utf8), [3], [4], Array("κόσμε".utf8), [0x03, 0xE8]], "\(back)")
        }
    }

    /// Regressions: a reserved bit passed, and the viewer's close code was echoed whatever it was.
    @Test func reservedBitsAndCloseCodesNoEndpointMaySendFailTheConnectionWith1002() async throws {
        try await Self.with { port in
            for (name, frames) in [("RSV1 binary", [Self.frame(0x02 | 0x40, [1])]), ("RSV3 ping", [Self.frame(0x89 | 0x10, [])]),
                                   ("close 1005", [Self.closeFrame(1005)]), ("close 0", [Self.closeFrame(0)]), ("close 2999", [Self.closeFrame(2999)]),
                                   ("1-byte close", [Self.frame(0x88, [3])])] {
                let back = try await Self.exchange(port, frames + [Self.frame(0x82, [9])])
                #expect(closeOf(back)?.code == 1002, "\(name): \(back)")
                #expect(!back.contains { $0.opcode == 2 || $0.opcode == 0xA }, "\(name): nothing after the failure is answered")
            }
            let valid = try await Self.exchange(port, [Self.closeFrame(4000)])
            #expect(closeOf(valid)?.code == 4000, "a valid code is echoed: \(valid)")
        }
    }

    @Test func textThatIsNotUTF8IsClosedWith1007AtTheFragmentThatBreaksIt() async throws {
        try await Self.with { port in
            let back = try await Self.exchange(port, [Self.frame(0x01, Array("ok ".utf8)), Self.frame(0x00, [0xED, 0xA0, 0x80]), Self.frame(0x80, [])])
            #expect(back.first.map { $0.opcode == 1 && $0.payload == Array("ok ".utf8) } == true, "the valid fragment came back: \(back)")
            #expect(closeOf(back)?.code == 1007, "\(back)")
        }
    }

    @Test func theFrameAndMessageLimitsAreTheListeners() async throws {
        var settings = BridgeSettings()
        settings.maxFrameSize = 64
        try await Self.with(settings) { port in
            let split = try await Self.exchange(port, [Self.frame(0x02, [UInt8](repeating: 1, count: 40)), Self.frame(0x80, [UInt8](repeating: 2, count: 40))])
            #expect(closeOf(split)?.code == 1009, "a message over the limit: \(split)")
            let single = try await Self.exchange(port, [Self.frame(0x82, [UInt8](repeating: 1, count: 100))])
            #expect(closeOf(single)?.code == 1009, "a frame over the limit (NIO's decoder): \(single)")
        }
    }
}
