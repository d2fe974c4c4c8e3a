#if canImport(Glibc)
import Essentials
import Glibc
#endif
import Supervision

/// A per-session MIT-MAGIC-COOKIE-1: only clients that read the session's Xauthority file may
/// connect to its X server (never `-ac`).
public struct XCookie: Sendable, Equatable {
    public let bytes: [UInt8]

    /// 16 bytes from the system's CSPRNG (getrandom).
    public static func random() -> XCookie {
        XCookie(bytes: randomBytes(16))
    }

    public init(bytes: [UInt8]) { self.bytes = bytes }
}

/// The Xauthority file format (Xau): per entry, big-endian u16 family, then four u16-length-
/// prefixed fields: address, display number, auth name, auth data.
public enum XAuthority {
    /// FamilyWild matches any host, so the entry works whatever the hostname resolves to.
    static let familyWild: UInt16 = 0xFFFF
    static let authName = "MIT-MAGIC-COOKIE-1"

    public static func entry(display: Int, cookie: XCookie) -> [UInt8] {
        var out: [UInt8] = []
        func u16(_ v: Int) { out += [UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        func field(_ bytes: [UInt8]) { u16(bytes.count); out += bytes }
        u16(Int(familyWild))
        field([])
        field(Array(String(display).utf8))
        field(Array(authName.utf8))
        field(cookie.bytes)
        return out
    }

    /// Writes the file with mode 0600, owned by `owner` when given (the session's user).
    public static func write(path: String, display: Int, cookie: XCookie, owner: Credentials? = nil) throws(FileError) {
        try writeFile(path, entry(display: display, cookie: cookie), mode: 0o600, owner: owner)
    }
}
