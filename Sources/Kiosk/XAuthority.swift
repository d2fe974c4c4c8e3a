#if canImport(Glibc)
import Glibc
#endif

/// A per-session MIT-MAGIC-COOKIE-1: only clients that read the session's Xauthority file may
/// connect to its X server (never `-ac`).
public struct XCookie: Sendable, Equatable {
    public let bytes: [UInt8]

    /// 16 bytes from the system's CSPRNG (getrandom).
    public static func random() -> XCookie {
        var rng = SystemRandomNumberGenerator()
        return XCookie(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })
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
    public static func write(path: String, display: Int, cookie: XCookie, owner: (uid: UInt32, gid: UInt32)? = nil) throws(XAuthorityError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw XAuthorityError(path: path, errno: errno) }
        defer { close(fd) }
        let bytes = entry(display: display, cookie: cookie)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else { throw XAuthorityError(path: path, errno: errno) }
        if let owner, fchown(fd, owner.uid, owner.gid) != 0 { throw XAuthorityError(path: path, errno: errno) }
    }
}

public struct XAuthorityError: Error, CustomStringConvertible {
    public let path: String
    public let errno: Int32
    public var description: String { "cannot write the X authority file \(path): \(String(cString: strerror(errno)))" }
}
