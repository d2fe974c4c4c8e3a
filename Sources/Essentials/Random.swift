/// Secrets and ids: every random byte kioskd uses comes from here (the system CSPRNG, getrandom).
public func randomBytes(_ count: Int) -> [UInt8] {
    var g = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }
}

/// `count` random bytes as lowercase hex (two digits each).
public func randomHex(_ count: Int) -> String { hex(randomBytes(count)) }

/// Bytes as hex, two digits each.
public func hex(_ bytes: some Sequence<UInt8>, uppercase: Bool = false) -> String {
    let digits = Array(uppercase ? "0123456789ABCDEF" : "0123456789abcdef")
    var out = ""
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return out
}
