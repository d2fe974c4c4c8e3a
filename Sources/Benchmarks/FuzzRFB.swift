// The RFB filter under fuzzing: viewer → server streams from a grammar of valid client messages
// (the handshake, then every message type the filter knows), mutated or not, fed whole and in
// random chunks. Properties on every input:
// - no trap (a trap saves the input, Fuzz.swift);
// - the chunked run gives exactly what the whole run gives (bytes, drops, refusals, close);
// - what is forwarded frames as whole messages after every feed (a cut-text body may stream),
//   read by an independent framer (`ServerView`), and carries nothing the role forbids: no key,
//   pointer or clipboard for view; for control no keysym `ViewerKeysyms` refuses, clipboard
//   only when allowed; never ExtendedMouseButtons, xvp, SetDesktopSize, QEMU; shared flag 1;
// - nothing is forwarded after a close, and a close says why (1002/1008/1009);
// - bounded memory: the filter holds at most `maxBuffered` bytes, and what it forwarded plus
//   what it holds never exceeds what it was fed;
// - for unmutated grammar streams, exactly the expected bytes, drop count, refused keysyms and
//   close code, computed from the grammar's own rules.
import Bridge
import ViewerInput

/// The most the filter may hold: SetEncodings' header with its 1024-encoding limit.
private let maxBuffered = 4 + 4 * 1024

/// What the filter must do with one generated message.
private enum RFBRule {
    case pass
    /// ClientInit: forwarded as shared (1) whatever the viewer asked.
    case sharedFlag
    /// SetEncodings: forwarded without ExtendedMouseButtons (−316), padding zeroed.
    case encodings([Int32])
    case drop
    /// Control: forwarded unless `ViewerKeysyms` refuses it (then named); view: dropped.
    case key(UInt32)
    case pointer
    /// Control with clipboard: forwarded; longer than the policy allows: closed (1009).
    case cutText(length: Int)
    /// The filter must close with this code here; nothing after it counts.
    case closes(UInt16)
}

private struct RFBMessage {
    var bytes: [UInt8]
    var rule: RFBRule
}

private func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
private func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

/// The grammar: a handshake, then client messages, now and then a message the filter must close on.
private struct RFBGrammar {
    static let versions = ["RFB 003.003\n", "RFB 003.007\n", "RFB 003.008\n"]
    static let badVersions = ["RFB 003.889\n", "RFB 004.001\n", "GET / HTTP/1", "RFB 003.008\r", "\0\0\0\0\0\0\0\0\0\0\0\0"]
    /// Encodings noVNC and TigerVNC send, and ExtendedMouseButtons.
    static let encodings: [Int32] = [0, 1, 2, 5, 6, 7, 16, 21, -223, -224, -239, -257, -258, -260, -261, -307, -308, -309, -312, -313, -314, -316,
                                     -32, -23, -256, -247, 0x574D_5664]
    static let known: Set<UInt8> = [0, 2, 3, 4, 5, 6, 150, 248, 250, 251, 255]

    static func stream(_ r: inout FuzzRandom) -> [RFBMessage] {
        var out: [RFBMessage] = []
        if r.chance(2) {
            out.append(RFBMessage(bytes: Array(r.pick(badVersions).utf8), rule: .closes(1002)))
            return out + [RFBMessage(bytes: r.bytes(r.size(64)), rule: .drop)]
        }
        let version = r.pick(versions)
        out.append(RFBMessage(bytes: Array(version.utf8), rule: .pass))
        if version != "RFB 003.003\n" {
            if r.chance(3) {
                out.append(RFBMessage(bytes: [UInt8(r.within(2...255))], rule: .closes(1008)))
                return out
            }
            out.append(RFBMessage(bytes: [1], rule: .pass))
        }
        out.append(RFBMessage(bytes: [r.byte()], rule: .sharedFlag))
        let count = r.pick([0, 1, 3, 8, 20, 40, 120])
        for _ in 0..<r.below(count + 1) { out.append(message(&r)) }
        if r.chance(10) {
            out.append(closing(&r))
            out.append(RFBMessage(bytes: r.bytes(r.size(64)), rule: .drop))
        }
        return out
    }

    static func keysym(_ r: inout FuzzRandom) -> UInt32 {
        switch r.below(8) {
        case 0, 1: return UInt32(r.within(0x20...0x7E))
        case 2: return 0xFF00 | UInt32(r.below(256))
        case 3: return 0xFE00 | UInt32(r.below(256))
        case 4: return r.pick([0xFD00, 0x1008_FF00, 0x1008_FE00, 0x1005_FF00, 0x1000_FF00, 0x0100_0000, 0x0110_FF00, 0x0100, 0x1200, 0x20A0]) | UInt32(r.below(256))
        case 5: return 0x0100_0000 + UInt32(r.below(0x11_0000))
        case 6: return UInt32(r.below(0x1_0000))
        default: return UInt32(truncatingIfNeeded: r.next())
        }
    }

    static func message(_ r: inout FuzzRandom) -> RFBMessage {
        switch r.below(100) {
        case 0..<25:
            return RFBMessage(bytes: [5, r.byte()] + be16(r.below(65536)) + be16(r.below(65536)), rule: .pointer)
        case 25..<45:
            let sym = keysym(&r)
            return RFBMessage(bytes: [4, r.byte() & 1, r.byte(), r.byte()] + be32(sym), rule: .key(sym))
        case 45..<60:
            return RFBMessage(bytes: [3] + r.bytes(9), rule: .pass)
        case 60..<65:
            let n = r.chance(2) ? 1024 : r.size(40)
            let list = (0..<n).map { _ in r.chance(90) ? r.pick(encodings) : Int32(truncatingIfNeeded: r.next()) }
            return RFBMessage(bytes: [2, r.byte()] + be16(n) + list.flatMap { be32(UInt32(bitPattern: $0)) }, rule: .encodings(list))
        case 65..<70:
            return RFBMessage(bytes: [0] + r.bytes(19), rule: .pass)
        case 70..<78:
            let n = r.chance(90) ? r.size(32) : r.size(5000)
            let extended = r.chance(10)
            let length = extended ? -Int32(n) : Int32(n)
            let body = extended ? r.bytes(n) : (0..<n).map { _ in UInt8(r.within(0x20...0x7E)) }
            return RFBMessage(bytes: [6] + r.bytes(3) + be32(UInt32(bitPattern: length)) + body, rule: .cutText(length: n))
        case 78..<83:
            let n = r.size(64)
            return RFBMessage(bytes: [248] + r.bytes(3) + be32(UInt32(truncatingIfNeeded: r.next())) + [UInt8(n)] + r.bytes(n), rule: .pass)
        case 83..<87:
            return RFBMessage(bytes: [150, r.byte() & 1] + r.bytes(8), rule: .pass)
        case 87..<90:
            return RFBMessage(bytes: [250, r.byte(), 1, UInt8(r.within(2...4))], rule: .drop)
        case 90..<95:
            let screens = r.below(5)
            return RFBMessage(bytes: [251, r.byte()] + be16(r.below(65536)) + be16(r.below(65536)) + [UInt8(screens), r.byte()] + r.bytes(16 * screens),
                              rule: .drop)
        default:
            return RFBMessage(bytes: [255, 0] + r.bytes(10), rule: .drop)
        }
    }

    /// A message that cannot be framed or is over a bound.
    static func closing(_ r: inout FuzzRandom) -> RFBMessage {
        switch r.below(5) {
        case 0:
            var type = r.byte()
            while known.contains(type) { type = r.byte() }
            return RFBMessage(bytes: [type], rule: .closes(1008))
        case 1:
            return RFBMessage(bytes: [2, r.byte()] + be16(r.within(1025...65535)), rule: .closes(1009))
        case 2:
            return RFBMessage(bytes: [248, 0, 0, 0] + r.bytes(4) + [UInt8(r.within(65...255))], rule: .closes(1008))
        case 3:
            return RFBMessage(bytes: [255, UInt8(r.within(1...255))], rule: .closes(1008))
        default:
            let length: Int32 = r.chance(30) ? Int32.min : r.chance(50) ? Int32(r.within((1 << 20) + 1...Int(Int32.max))) : -Int32(r.within((1 << 20) + 1...Int(Int32.max)))
            return RFBMessage(bytes: [6, 0, 0, 0] + be32(UInt32(bitPattern: length)), rule: .closes(1009))
        }
    }

    /// What the filter must output for an unmutated stream under `policy`.
    static func expected(_ messages: [RFBMessage], _ policy: RFBFilter.Policy) -> (forward: [UInt8], dropped: Int, refused: [UInt32], close: UInt16?) {
        var forward: [UInt8] = [], dropped = 0, refused: [UInt32] = []
        let control = policy.role == .control
        for m in messages {
            switch m.rule {
            case .pass: forward += m.bytes
            case .sharedFlag: forward.append(1)
            case .encodings(let list):
                let kept = list.filter { $0 != -316 }
                forward += [2, 0] + be16(kept.count) + kept.flatMap { be32(UInt32(bitPattern: $0)) }
                dropped += list.count - kept.count
            case .drop: dropped += 1
            case .key(let sym):
                if control && ViewerKeysyms.allows(sym) { forward += m.bytes } else { dropped += 1 }
                if control && !ViewerKeysyms.allows(sym) { refused.append(sym) }
            case .pointer:
                if control { forward += m.bytes } else { dropped += 1 }
            case .cutText(let length):
                if length > policy.maxCutText { return (forward, dropped, refused, 1009) }
                if control && policy.clipboard { forward += m.bytes } else { dropped += 1 }
            case .closes(let code):
                return (forward, dropped, refused, code)
            }
        }
        return (forward, dropped, refused, nil)
    }
}

/// The forwarded stream as x11vnc reads it, framed without the filter's code: the first
/// forbidden or unframeable thing it meets is `problem`.
private struct ServerView {
    let policy: RFBFilter.Policy
    private var stage = Stage.version
    private var pending: [UInt8] = []
    private var cutLeft = 0
    private(set) var problem: String?
    /// True between messages, or inside a cut-text body (the one body streamed through).
    var atBoundary: Bool { pending.isEmpty }

    private enum Stage { case version, security, clientInit, messages }

    init(policy: RFBFilter.Policy) { self.policy = policy }

    mutating func read(_ bytes: [UInt8]) {
        var i = 0
        while i < bytes.count && problem == nil {
            if cutLeft > 0 {
                let n = min(cutLeft, bytes.count - i)
                cutLeft -= n
                i += n
                continue
            }
            pending.append(bytes[i])
            i += 1
            if frame() { pending.removeAll(keepingCapacity: true) }
        }
    }

    /// Whether `pending` is a whole message (or cut-text header), checked.
    private mutating func frame() -> Bool {
        func refuse(_ what: String) -> Bool {
            problem = what
            return false
        }
        switch stage {
        case .version:
            guard pending.count == 12 else { return false }
            let version = String(decoding: pending, as: UTF8.self)
            guard RFBGrammar.versions.contains(version) else { return refuse("forwarded version \(version.debugDescription)") }
            stage = version == "RFB 003.003\n" ? .clientInit : .security
            return true
        case .security:
            guard pending[0] == 1 else { return refuse("forwarded security type \(pending[0])") }
            stage = .clientInit
            return true
        case .clientInit:
            guard pending[0] == 1 else { return refuse("forwarded ClientInit shared flag \(pending[0])") }
            stage = .messages
            return true
        case .messages:
            break
        }
        let control = policy.role == .control
        let type = pending[0]
        switch type {
        case 0: return pending.count == 20
        case 3, 150: return pending.count == 10
        case 4:
            guard control else { return refuse("KeyEvent forwarded for the view role") }
            guard pending.count == 8 else { return false }
            let sym = pending[4...7].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            return ViewerKeysyms.allows(sym) ? true : refuse("refused keysym 0x\(String(sym, radix: 16)) forwarded")
        case 5:
            guard control else { return refuse("PointerEvent forwarded for the view role") }
            return pending.count == 6
        case 2:
            guard pending.count >= 4 else { return false }
            let n = Int(pending[2]) << 8 | Int(pending[3])
            guard n <= 1024 else { return refuse("SetEncodings of \(n) forwarded") }
            guard pending.count == 4 + 4 * n else { return false }
            for i in 0..<n where pending[(4 + 4 * i)..<(8 + 4 * i)].elementsEqual(be32(UInt32(bitPattern: -316))) {
                return refuse("ExtendedMouseButtons forwarded")
            }
            return true
        case 248:
            guard pending.count >= 9 else { return false }
            guard pending[8] <= 64 else { return refuse("ClientFence of \(pending[8]) bytes forwarded") }
            return pending.count == 9 + Int(pending[8])
        case 6:
            guard control && policy.clipboard else { return refuse("ClientCutText forwarded without the clipboard") }
            guard pending.count == 8 else { return false }
            let length = Int(Int32(bitPattern: pending[4...7].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }).magnitude)
            guard length <= policy.maxCutText else { return refuse("ClientCutText of \(length) bytes forwarded") }
            cutLeft = length
            return true
        default:
            return refuse("message type \(type) forwarded")
        }
    }
}

/// A filter's outputs over several feeds, added up.
private struct OutputTotal: Equatable {
    var forward: [UInt8] = []
    var dropped: [String: Int] = [:]
    var refusedKeysyms: [UInt32] = []
    var violation: RFBFilter.Violation?

    init() {}

    init(_ out: RFBFilter.Output) { add(out) }

    mutating func add(_ next: RFBFilter.Output) {
        forward += next.forward
        dropped.merge(next.dropped, uniquingKeysWith: +)
        refusedKeysyms += next.refusedKeysyms
        violation = violation ?? next.violation
    }
}

/// Chunk boundaries: all single bytes, small, medium or any sizes.
private func chunkSizes(_ total: Int, _ r: inout FuzzRandom) -> [Int] {
    let limit = [1, 8, 64, max(total, 1)][r.below(4)]
    var sizes: [Int] = []
    var left = total
    while left > 0 {
        let n = min(left, r.within(1...limit))
        sizes.append(n)
        left -= n
    }
    return sizes
}

private struct RFBStats {
    var maxBuffered = 0
    var closed = 0
    var exact = 0
}

/// Feeds `input` whole and in `sizes` chunks under `policy` and checks every property.
private func checkRFB(_ input: [UInt8], _ policy: RFBFilter.Policy, sizes: [Int], expected: [RFBMessage]?, _ stats: inout RFBStats) -> [String] {
    var problems: [String] = []
    var whole = RFBFilter(policy: policy)
    let reference = whole.feed(input)
    if whole.bufferedBytes > maxBuffered { problems.append("\(whole.bufferedBytes) bytes buffered (bound \(maxBuffered))") }

    var filter = RFBFilter(policy: policy)
    var view = ServerView(policy: policy)
    var total = OutputTotal()
    var fed = 0, forwarded = 0, at = 0
    for size in sizes {
        let out = filter.feed(input[at..<(at + size)])
        at += size
        if total.violation != nil && OutputTotal(out) != OutputTotal() { problems.append("output after the close") }
        total.add(out)
        fed += size
        forwarded += out.forward.count
        stats.maxBuffered = max(stats.maxBuffered, filter.bufferedBytes)
        if filter.bufferedBytes > maxBuffered { problems.append("\(filter.bufferedBytes) bytes buffered (bound \(maxBuffered))") }
        if forwarded + filter.bufferedBytes > fed { problems.append("forwarded \(forwarded) + held \(filter.bufferedBytes) > fed \(fed)") }
        view.read(out.forward)
        if !view.atBoundary { problems.append("a feed ended inside a forwarded message") }
        if !problems.isEmpty { break }
    }
    if let problem = view.problem { problems.append(problem) }
    if problems.isEmpty && total != OutputTotal(reference) { problems.append("chunks \(sizes.prefix(8))… gave another result than the whole stream") }
    if let v = reference.violation {
        stats.closed += 1
        if ![1002, 1008, 1009].contains(v.code) || v.reason.isEmpty { problems.append("close \(v.code) '\(v.reason)'") }
    }
    if let expected {
        stats.exact += 1
        let want = RFBGrammar.expected(expected, policy)
        if reference.forward != want.forward { problems.append("forwarded other bytes than the grammar's rules give") }
        if reference.dropped.values.reduce(0, +) != want.dropped { problems.append("dropped \(reference.dropped), expected \(want.dropped) in all") }
        if reference.refusedKeysyms != want.refused { problems.append("refused keysyms \(reference.refusedKeysyms), expected \(want.refused)") }
        if reference.violation?.code != want.close { problems.append("closed with \(reference.violation.map { "\($0.code)" } ?? "nothing"), expected \(want.close.map { "\($0)" } ?? "nothing")") }
    }
    return problems
}

private let rfbPolicies: [RFBFilter.Policy] = [
    .init(role: .view), .init(role: .view, clipboard: true), .init(role: .control), .init(role: .control, clipboard: true),
]

/// Returns the properties violated.
func fuzzRFB(inputs: Int, seed: UInt64, corpus directory: String) -> Int {
    var run = FuzzRun(target: "rfb", seed: seed)
    defer { run.finish() }
    var r = FuzzRandom(seed: seed)
    var stats = RFBStats()
    let corpus = FuzzCorpus.load(directory, "rfb").map(\.bytes)
    // The corpus first, unmutated: every policy, whole, byte by byte and in random chunks.
    for input in corpus {
        for policy in rfbPolicies {
            for sizes in [[input.count], Array(repeating: 1, count: input.count), chunkSizes(input.count, &r)] {
                run.check(input) { checkRFB(input, policy, sizes: sizes, expected: nil, &stats) }
            }
        }
    }
    let tokens = Mutation.interestingBytes.map { [$0] }
    var previous = corpus[0]
    while run.inputs < inputs {
        var policy = r.pick(rfbPolicies)
        if r.chance(20) { policy.maxCutText = r.pick([0, 16, 64]) }
        var input: [UInt8]
        var messages: [RFBMessage]?
        switch r.below(100) {
        case 0..<25:
            messages = RFBGrammar.stream(&r)
            input = messages!.flatMap(\.bytes)
        case 25..<90:
            input = RFBGrammar.stream(&r).flatMap(\.bytes)
            Mutation.mutate(&input, other: previous, start: 14, tokens: tokens, &r)
        case 90..<95:
            input = r.pick(corpus)
            Mutation.mutate(&input, other: previous, start: 14, tokens: tokens, &r)
        default:
            input = (r.chance(50) ? Array("RFB 003.008\n".utf8) + [1, 1] : []) + r.bytes(r.size(2048))
        }
        let sizes = chunkSizes(input.count, &r)
        run.check(input) { checkRFB(input, policy, sizes: sizes, expected: messages, &stats) }
        previous = input
    }
    run.report(", \(corpus.count) corpus files, \(stats.exact) checked exactly against the grammar, \(stats.closed) closed by the filter, "
        + "max buffered \(stats.maxBuffered) bytes (bound \(maxBuffered))")
    return run.violations
}
