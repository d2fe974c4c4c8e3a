import ViewerInput

/// What a viewer may send to the VNC server, enforced on the client → server byte stream.
///
/// A pure streaming state machine (RFC 6143 + rfbproto): bytes in, bytes to forward out. It
/// never buffers more than one small header (SetEncodings' list is bounded), streams cut-text
/// bodies through or away, and closes on anything it cannot frame, because an RFB stream
/// cannot be resynchronised after an unknown message.
///
/// - view: only what a viewer needs (pixel format, encodings, update requests, continuous
///   updates, fences); every key, pointer and clipboard message is dropped.
/// - control: pointer and keys pass, but only keysyms a keyboard user needs
///   (`ViewerKeysyms`): an action keysym (XF86 browser/launch/VT keys, XKB Terminate_Server …)
///   is dropped whole, press and release; clipboard only if allowed.
/// Both: the ClientInit shared flag is forced to 1 (one viewer cannot disconnect the others),
/// ExtendedMouseButtons is removed from SetEncodings (its 7-byte PointerEvent would be
/// misframed), xvp (shutdown/reboot), SetDesktopSize and QEMU key events are dropped.
public struct RFBFilter: Sendable {

    public struct Policy: Sendable, Equatable {
        public var role: ViewerRole
        public var clipboard: Bool
        /// Longest ClientCutText accepted (libvncserver closes on more than 1 MiB anyway).
        public var maxCutText: Int

        public init(role: ViewerRole, clipboard: Bool = false, maxCutText: Int = 1 << 20) {
            self.role = role
            self.clipboard = clipboard
            self.maxCutText = maxCutText
        }
    }

    /// Why the connection must close: a WebSocket close code and a reason for the viewer.
    public struct Violation: Error, Sendable, Equatable {
        public let code: UInt16
        public let reason: String
    }

    public struct Output: Sendable, Equatable {
        /// Bytes for the VNC server, in order.
        public var forward: [UInt8] = []
        /// Messages dropped by kind (e.g. "KeyEvent": 3).
        public var dropped: [String: Int] = [:]
        /// Keysyms refused for the control role, in order (the view role drops every key).
        public var refusedKeysyms: [UInt32] = []
        public var violation: Violation?
    }

    /// RFB message types (client → server).
    static let setPixelFormat: UInt8 = 0, setEncodings: UInt8 = 2, updateRequest: UInt8 = 3, keyEvent: UInt8 = 4,
               pointerEvent: UInt8 = 5, cutText: UInt8 = 6, continuousUpdates: UInt8 = 150, fence: UInt8 = 248,
               xvp: UInt8 = 250, setDesktopSize: UInt8 = 251, qemu: UInt8 = 255
    static let extendedMouseButtons: Int32 = -316
    static let maxEncodings = 1024

    private enum Phase: Sendable {
        case version
        case security
        case clientInit
        case messages
        case closed
    }

    public let policy: Policy
    private var phase = Phase.version
    /// The header (or whole small message) being gathered.
    private var header: [UInt8] = []
    /// Body bytes still to stream (cut text, SetDesktopSize screens), and whether they pass.
    private var bodyLeft = 0
    private var bodyPasses = false

    public init(policy: Policy) { self.policy = policy }

    /// Bytes held until their message is complete: never more than a SetEncodings header
    /// (4 + 4 × 1024), whatever the stream (the fuzzer checks it after every feed).
    public var bufferedBytes: Int { header.count }

    /// Feeds the next bytes from the viewer.
    public mutating func feed(_ bytes: some Collection<UInt8>) -> Output {
        var out = Output()
        var input = bytes[...]
        while !input.isEmpty {
            if case .closed = phase { break }
            if bodyLeft > 0 {
                let n = min(bodyLeft, input.count)
                if bodyPasses { out.forward += input.prefix(n) }
                input = input.dropFirst(n)
                bodyLeft -= n
                continue
            }
            header.append(input.removeFirst())
            if let violation = step(&out) {
                out.violation = violation
                phase = .closed
                header = []
            }
        }
        return out
    }

    /// Acts on `header` once it is complete; returns a violation to close with.
    private mutating func step(_ out: inout Output) -> Violation? {
        switch phase {
        case .closed:
            return nil
        case .version:
            guard header.count == 12 else { return nil }
            let text = String(decoding: header, as: UTF8.self)
            guard ["RFB 003.003\n", "RFB 003.007\n", "RFB 003.008\n"].contains(text) else {
                return Violation(code: 1002, reason: "not an RFB 3.3/3.7/3.8 client")
            }
            out.forward += header
            // In 3.3 the server chooses the security type: the client sends no choice.
            phase = text == "RFB 003.003\n" ? .clientInit : .security
            header = []
        case .security:
            // x11vnc runs without a password (the bridge authenticates): only None.
            guard header[0] == 1 else { return Violation(code: 1008, reason: "only security type None is allowed behind the bridge") }
            out.forward += header
            phase = .clientInit
            header = []
        case .clientInit:
            out.forward.append(1)
            phase = .messages
            header = []
        case .messages:
            return message(&out)
        }
        return nil
    }

    private mutating func message(_ out: inout Output) -> Violation? {
        let type = header[0]
        switch type {
        case Self.setPixelFormat: return fixed(20, pass: true, "SetPixelFormat", &out)
        case Self.updateRequest: return fixed(10, pass: true, "FramebufferUpdateRequest", &out)
        case Self.continuousUpdates: return fixed(10, pass: true, "EnableContinuousUpdates", &out)
        case Self.keyEvent: return keyEvent(&out)
        case Self.pointerEvent: return fixed(6, pass: policy.role == .control, "PointerEvent", &out)
        case Self.xvp: return fixed(4, pass: false, "xvp", &out)
        case Self.setEncodings:
            guard header.count >= 4 else { return nil }
            let n = Int(header[2]) << 8 | Int(header[3])
            guard n <= Self.maxEncodings else { return Violation(code: 1009, reason: "SetEncodings lists \(n) encodings (at most \(Self.maxEncodings))") }
            guard header.count == 4 + 4 * n else { return nil }
            var kept: [UInt8] = []
            var stripped = 0
            for i in 0..<n {
                let b = header[(4 + 4 * i)..<(8 + 4 * i)]
                let value = Int32(bitPattern: b.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                if value == Self.extendedMouseButtons { stripped += 1 } else { kept += b }
            }
            let count = (n - stripped)
            out.forward += [Self.setEncodings, 0, UInt8(count >> 8), UInt8(count & 0xFF)] + kept
            if stripped > 0 { out.dropped["ExtendedMouseButtons encoding", default: 0] += stripped }
            header = []
        case Self.cutText:
            guard header.count == 8 else { return nil }
            let raw = Int32(bitPattern: header[4...7].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            let length = Int(raw.magnitude)
            guard length <= policy.maxCutText else {
                return Violation(code: 1009, reason: "clipboard text of \(length) bytes (at most \(policy.maxCutText))")
            }
            let pass = policy.role == .control && policy.clipboard
            if pass { out.forward += header } else { out.dropped["ClientCutText", default: 0] += 1 }
            bodyLeft = length
            bodyPasses = pass
            header = []
        case Self.fence:
            guard header.count >= 9 else { return nil }
            let length = Int(header[8])
            guard length <= 64 else { return Violation(code: 1008, reason: "ClientFence payload of \(length) bytes (at most 64)") }
            return fixed(9 + length, pass: true, "ClientFence", &out)
        case Self.setDesktopSize:
            guard header.count == 8 else { return nil }
            out.dropped["SetDesktopSize", default: 0] += 1
            bodyLeft = 16 * Int(header[6])
            bodyPasses = false
            header = []
        case Self.qemu:
            guard header.count >= 2 else { return nil }
            guard header[1] == 0 else { return Violation(code: 1008, reason: "unsupported QEMU message subtype \(header[1])") }
            return fixed(12, pass: false, "QEMU key event", &out)
        default:
            return Violation(code: 1008, reason: "unknown RFB message type \(type): the stream cannot continue")
        }
        return nil
    }

    private mutating func keyEvent(_ out: inout Output) -> Violation? {
        guard header.count == 8 else { return nil }
        guard policy.role == .control else { return fixed(8, pass: false, "KeyEvent", &out) }
        let keysym = header[4...7].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        if ViewerKeysyms.allows(keysym) { return fixed(8, pass: true, "KeyEvent", &out) }
        out.refusedKeysyms.append(keysym)
        return fixed(8, pass: false, "KeyEvent (action keysym)", &out)
    }

    /// A message of a known total length: passed or dropped whole once complete.
    private mutating func fixed(_ length: Int, pass: Bool, _ name: String, _ out: inout Output) -> Violation? {
        guard header.count == length else { return nil }
        if pass { out.forward += header } else { out.dropped[name, default: 0] += 1 }
        header = []
        return nil
    }
}
