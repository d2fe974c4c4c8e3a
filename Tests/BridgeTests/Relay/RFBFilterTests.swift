@testable import Bridge
import ViewerInput
import Testing

/// The filter without sockets: exact messages, then random and mutated streams.
@Suite struct RFBFilterTests {
    static let handshake: [UInt8] = Array("RFB 003.008\n".utf8) + [1, 0]   // version, security None, ClientInit (exclusive)

    static func key(_ sym: UInt32, down: Bool = true) -> [UInt8] { [4, down ? 1 : 0, 0, 0, UInt8(sym >> 24), UInt8(sym >> 16 & 0xFF), UInt8(sym >> 8 & 0xFF), UInt8(sym & 0xFF)] }
    static let pointer: [UInt8] = [5, 1, 0, 10, 0, 20]
    static let update: [UInt8] = [3, 1, 0, 0, 0, 0, 3, 32, 2, 88]
    static func cut(_ text: String) -> [UInt8] {
        let n = text.utf8.count
        return [6, 0, 0, 0, UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + Array(text.utf8)
    }
    static func encodings(_ list: [Int32]) -> [UInt8] {
        [2, 0, UInt8(list.count >> 8), UInt8(list.count & 0xFF)] + list.flatMap { v -> [UInt8] in
            let u = UInt32(bitPattern: v)
            return [UInt8(u >> 24), UInt8(u >> 16 & 0xFF), UInt8(u >> 8 & 0xFF), UInt8(u & 0xFF)]
        }
    }

    @Test func theHandshakePassesWithTheSharedFlagForced() {
        var f = RFBFilter(policy: .init(role: .view))
        let out = f.feed(Self.handshake)
        #expect(out.forward == Array("RFB 003.008\n".utf8) + [1, 1], "ClientInit shared = 1")
        #expect(out.violation == nil)
    }

    @Test func theViewRoleDropsInputAndClipboardButKeepsWhatAViewerNeeds() {
        var f = RFBFilter(policy: .init(role: .view))
        _ = f.feed(Self.handshake)
        let stream = Self.update + Self.key(0x77) + Self.pointer + Self.cut("secret") + Self.update + [250, 0, 1, 2]
        let out = f.feed(stream)
        #expect(out.forward == Self.update + Self.update)
        #expect(out.dropped == ["KeyEvent": 1, "PointerEvent": 1, "ClientCutText": 1, "xvp": 1])
    }

    @Test func theControlRolePassesInputButNotTheClipboardUnlessAllowed() {
        var f = RFBFilter(policy: .init(role: .control))
        _ = f.feed(Self.handshake)
        #expect(f.feed(Self.key(0x61) + Self.pointer + Self.cut("x")).forward == Self.key(0x61) + Self.pointer)
        var g = RFBFilter(policy: .init(role: .control, clipboard: true))
        _ = g.feed(Self.handshake)
        #expect(g.feed(Self.cut("hello")).forward == Self.cut("hello"))
    }

    @Test func theControlRoleDropsKeysymsThatAreActionsNotKeys() {
        var f = RFBFilter(policy: .init(role: .control))
        _ = f.feed(Self.handshake)
        // Characters (Latin-1, legacy sets, Unicode), editing, cursor, function, modifier and
        // keypad keys, AltGr, ISO_Left_Tab and a dead key.
        let passing: [UInt32] = [0x61, 0xE9, 0x6C1, 0x20AC, 0x0100_20AC, 0x0100_0041, 0xFF08, 0xFF09, 0xFF0D, 0xFF1B, 0xFF51, 0xFF63, 0xFFFF,
                                 0xFFBE, 0xFFC2, 0xFFE1, 0xFFE3, 0xFFE9, 0xFFEB, 0xFF7F, 0xFFB5, 0xFF8D, 0xFE03, 0xFE20, 0xFE51]
        // XF86 HomePage, WWW, Switch_VT_1, ClearGrab; Terminate_Server, Pointer_Left, AccessX,
        // ISO_Next_Group; 3270 PrintScreen; Help, Print, Sys_Req; Sun and HP keys; control chars.
        let refused: [UInt32] = [0x1008_FF18, 0x1008_FF2E, 0x1008_FE01, 0x1008_FE21, 0xFED5, 0xFEE0, 0xFE70, 0xFE08, 0xFD1D,
                                 0xFF6A, 0xFF61, 0xFF15, 0x1005_FF70, 0x1000_FF6C, 0x1F, 0x7F, 0x0100_0009, 0x0200_0000]
        let out = f.feed(passing.flatMap { Self.key($0) } + refused.flatMap { Self.key($0) + Self.key($0, down: false) } + Self.update)
        #expect(out.forward == passing.flatMap { Self.key($0) } + Self.update)
        #expect(out.refusedKeysyms == refused.flatMap { [$0, $0] })
        #expect(out.dropped == ["KeyEvent (action keysym)": refused.count * 2])
        #expect(ViewerKeysyms.refusal(0x1008_FF18) == .xf86 && ViewerKeysyms.refusal(0xFED5) == .xkbAction
                && ViewerKeysyms.refusal(0xFD1D) == .ibm3270 && ViewerKeysyms.refusal(0xFF6A) == .actionKey
                && ViewerKeysyms.refusal(0x1005_FF70) == .vendor && ViewerKeysyms.refusal(0x7F) == .unassigned)

        var view = RFBFilter(policy: .init(role: .view))
        _ = view.feed(Self.handshake)
        #expect(view.feed(Self.key(0x1008_FF18)).refusedKeysyms.isEmpty, "the view role drops every key without naming it")
    }

    @Test func messagesSplitAcrossFramesAndManyPerFrameAreFramedTheSame() {
        let stream = Self.handshake + Self.update + Self.key(0x77) + Self.encodings([0, 1, -316, -223]) + Self.cut("abc") + Self.pointer
        var whole = RFBFilter(policy: .init(role: .control))
        let expected = whole.feed(stream)
        for chunk in [1, 2, 3, 5, 7, 13] {
            var f = RFBFilter(policy: .init(role: .control))
            var forward: [UInt8] = []
            var i = 0
            while i < stream.count {
                forward += f.feed(stream[i..<min(i + chunk, stream.count)]).forward
                i += chunk
            }
            #expect(forward == expected.forward, "chunks of \(chunk)")
        }
        #expect(expected.dropped["ExtendedMouseButtons encoding"] == 1)
    }

    @Test func extendedMouseButtonsIsStrippedFromSetEncodings() {
        var f = RFBFilter(policy: .init(role: .control))
        _ = f.feed(Self.handshake)
        #expect(f.feed(Self.encodings([7, -316, 0])).forward == Self.encodings([7, 0]))
    }

    @Test(arguments: [
        ([UInt8](arrayLiteral: 99), 1008, "unknown RFB message type 99"),
        (RFBFilterTests.encodings(Array(repeating: 0, count: 2000)), 1009, "SetEncodings lists 2000 encodings"),
        ([6, 0, 0, 0, 0x7F, 0, 0, 0], 1009, "clipboard text of 2130706432 bytes"),
        ([248, 0, 0, 0, 0, 0, 0, 0, 200], 1008, "ClientFence payload of 200 bytes"),
        ([255, 3], 1008, "unsupported QEMU message subtype 3"),
    ])
    func whatCannotBeFramedClosesWithAReason(bytes: [UInt8], code: Int, reason: String) {
        var f = RFBFilter(policy: .init(role: .control))
        _ = f.feed(Self.handshake)
        let out = f.feed(bytes + Self.update)
        #expect(out.violation?.code == UInt16(code))
        #expect(out.violation?.reason.hasPrefix(reason) == true, "\(out.violation?.reason ?? "none")")
        #expect(f.feed(Self.update).forward.isEmpty, "nothing passes after a violation")
    }

    @Test func aBadVersionOrSecurityTypeCloses() {
        var a = RFBFilter(policy: .init(role: .view))
        #expect(a.feed(Array("GET / HTTP/1.1\r\n".utf8)).violation?.code == 1002)
        var b = RFBFilter(policy: .init(role: .view))
        #expect(b.feed(Array("RFB 003.008\n".utf8) + [2]).violation?.reason == "only security type None is allowed behind the bridge")
    }

    /// What a stream the filter forwarded contains, parsed by an independent reader: nil when
    /// it cannot be framed (which must never happen).
    static func messageTypes(_ stream: [UInt8]) -> [UInt8]? {
        guard stream.count >= 14 else { return stream.count <= 14 ? [] : nil }
        var i = 14, types: [UInt8] = []
        func need(_ n: Int) -> Bool { i + n <= stream.count }
        while i < stream.count {
            let t = stream[i]
            types.append(t)
            switch t {
            case 0: guard need(20) else { return nil }; i += 20
            case 3, 150: guard need(10) else { return nil }; i += 10
            case 4: guard need(8) else { return nil }; i += 8
            case 5: guard need(6) else { return nil }; i += 6
            case 2:
                guard need(4) else { return nil }
                let n = Int(stream[i + 2]) << 8 | Int(stream[i + 3])
                guard need(4 + 4 * n) else { return nil }
                i += 4 + 4 * n
            case 6:
                guard need(8) else { return nil }
                let n = Int(Int32(bitPattern: stream[(i + 4)...(i + 7)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }).magnitude)
                guard need(8 + n) else { return nil }
                i += 8 + n
            case 248:
                guard need(9) else { return nil }
                let n = Int(stream[i + 8])
                guard need(9 + n) else { return nil }
                i += 9 + n
            default: return nil
            }
        }
        return types
    }

    /// Random and mutated streams, in random chunks: the filter never crashes, what it forwards
    /// always frames, and a view-role stream never carries input or clipboard.
    @Test func fuzzedStreamsNeverCrashAndNeverLetAForbiddenMessageThrough() {
        var rng = SplitMix(seed: 0x6B696F736B64)
        let pieces: [[UInt8]] = [Self.update, Self.key(0x77), Self.pointer, Self.cut("paste"), Self.encodings([0, -316, 16]),
                                 [248, 0, 0, 0, 0, 0, 0, 1, 2, 9, 9], [250, 0, 1, 2], [251, 0, 3, 0, 2, 0, 1, 0] + Array(repeating: 0, count: 16),
                                 [255, 0] + Array(repeating: 1, count: 10), [0] + Array(repeating: 0, count: 19), [150, 1, 0, 0, 0, 0, 0, 10, 0, 10]]
        for round in 0..<3000 {
            var stream = Self.handshake
            for _ in 0..<Int.random(in: 1...30, using: &rng) { stream += pieces.randomElement(using: &rng)! }
            // Mutate some rounds: flip, insert or cut bytes anywhere after the version.
            if round % 2 == 1 {
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let at = Int.random(in: 12..<stream.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: stream[at] = UInt8.random(in: 0...255, using: &rng)
                    case 1: stream.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                    default: stream.remove(at: at)
                    }
                }
            }
            if round % 7 == 0 { stream = Self.handshake + (0..<200).map { _ in UInt8.random(in: 0...255, using: &rng) } }
            for role in [ViewerRole.view, .control] {
                var f = RFBFilter(policy: .init(role: role))
                var forwarded: [UInt8] = []
                var i = 0
                while i < stream.count {
                    let n = Int.random(in: 1...64, using: &rng)
                    let out = f.feed(stream[i..<min(i + n, stream.count)])
                    forwarded += out.forward
                    if out.violation != nil { break }
                    i += n
                }
                let types = Self.messageTypes(forwarded)
                // Only whole messages are forwarded (cut text, the one streamed body, never passes here).
                #expect(types != nil, "round \(round): forwarded bytes do not frame")
                let seen = types ?? []
                if role == .view { #expect(!seen.contains { [4, 5, 6].contains($0) }, "round \(round): view role let input through") }
                #expect(!seen.contains { [250, 251, 255].contains($0) } && !seen.contains(6), "round \(round): forbidden message through")
                if forwarded.count >= 14 { #expect(forwarded[13] == 1, "shared flag forced") }
            }
        }
    }
}

/// A small deterministic generator, so a failing round can be replayed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// x11vnc's own greeting, swallowed after the bridge has greeted the viewer for it.
@Suite struct RFBGreetingTests {
    @Test func theServersGreetingIsSwallowedInAnyChunksAndWhatFollowsPasses() {
        var greeting = RFBGreeting()
        #expect(greeting.swallow(Array("RFB 0".utf8)) == 5 && !greeting.done)
        // The rest of the greeting and the security types in one read: only the greeting goes.
        #expect(greeting.swallow(Array("03.008\n".utf8) + [1, 1]) == 7 && greeting.done)
        #expect(greeting.swallow([0, 0, 0, 0]) == 0)
    }

    @Test func anotherVersionIsRefused() {
        var greeting = RFBGreeting()
        #expect(greeting.swallow(Array("RFB 003.00".utf8)) == 10)
        #expect(greeting.swallow(Array("7\n".utf8)) == nil)
        var http = RFBGreeting()
        #expect(http.swallow(Array("HTTP/1.1 400".utf8)) == nil)
    }
}
