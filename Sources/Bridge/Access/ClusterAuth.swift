import Crypto

/// The proof one host of a cluster gives another on its internal listener: an HMAC-SHA256 of
/// the request's method, target (path and query, as sent) and time, under a key derived from the
/// cluster secret (`cluster.secret_file`, the same on every host). The viewer's or agent's token
/// travels in the target too, but is never enough on its own: the internal listener answers
/// nothing (401) without a valid proof, so only a host holding the secret reaches it.
///
/// The header is `X-Kioskd-Cluster-Proof: <unix seconds>.<64 hex digits>`. A proof is valid for
/// `window` either side of the receiver's clock (hosts' clocks drift a little; NTP keeps them
/// well within it), and compared in constant time. A proof could be replayed within its window
/// by someone who saw it, for the same request only: it would bring them what the token in that
/// request already grants, through the same checks.
///
/// Pure apart from the key: the time is given, so tests decide it.
public struct ClusterAuth: Sendable {
    public static let header = "X-Kioskd-Cluster-Proof"
    /// How far a proof's time may be from the receiver's, either way (seconds).
    public static let window: Int64 = 30
    /// The cluster secret is shared with other uses (the viewer tokens' key is derived from it
    /// too): this key is its own derivation, so neither can stand in for the other.
    static let info = Array("kioskd host-to-host proof v1".utf8)

    private let key: SymmetricKey

    /// `secret`: the cluster secret's bytes (at least 32).
    public init(secret: [UInt8]) {
        key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: secret), info: Self.info, outputByteCount: 32)
    }

    /// Why a request is turned away, or nil when its proof holds.
    public enum Refusal: String, Sendable, Equatable {
        case missing, malformed, stale, invalid

        public var message: String {
            switch self {
            case .missing: "this is the cluster's internal listener: every request needs the host-to-host proof (\(ClusterAuth.header))"
            case .malformed: "the host-to-host proof is malformed (\(ClusterAuth.header): <unix seconds>.<hex HMAC-SHA256>)"
            case .stale: "the host-to-host proof is more than \(ClusterAuth.window) s from this host's clock (check both hosts' time)"
            case .invalid: "the host-to-host proof does not match (another cluster.secret_file, or the request was changed)"
            }
        }
    }

    /// The header's value for `method` and `target` (path and query) at `now` (unix seconds).
    public func proof(method: String, target: String, now: Int64) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Self.message(method, target, now), using: key)
        return "\(now).\(Self.hex(Array(mac)))"
    }

    /// Whether `proof` (the header's value, nil when absent) holds for this request at `now`.
    public func check(_ proof: String?, method: String, target: String, now: Int64) -> Refusal? {
        guard let proof else { return .missing }
        let parts = proof.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count <= 19, parts[0].allSatisfy(\.isASCIIDigit), let time = Int64(parts[0]),
              let mac = Self.bytes(hex: parts[1]), mac.count == 32 else { return .malformed }
        guard abs(now - time) <= Self.window else { return .stale }
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Self.message(method, target, time), using: key) ? nil : .invalid
    }

    /// Method, target and time, each on its own line (none of them may hold a newline: an HTTP
    /// request line cannot, and the time is digits), so no two requests share a message.
    static func message(_ method: String, _ target: String, _ time: Int64) -> [UInt8] {
        Array("\(method)\n\(target)\n\(time)".utf8)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out += [digits[Int(b >> 4)], digits[Int(b & 0xF)]] }
        return String(decoding: out, as: UTF8.self)
    }

    static func bytes(hex: Substring) -> [UInt8]? {
        let utf8 = Array(hex.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        for i in stride(from: 0, to: utf8.count, by: 2) {
            guard let high = value(utf8[i]), let low = value(utf8[i + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }
}

private extension Character {
    var isASCIIDigit: Bool { isASCII && isWholeNumber }
}
