import Crypto
import Essentials

#if canImport(Glibc)
import Glibc
#endif

/// The secret every host of a cluster shares (`cluster.secret_file`): host-to-host requests are
/// proven with it, and viewer tokens are signed with a key derived from it, so a token minted
/// on one host is good on all. Each use gets its own key (HMAC of a label), never the secret itself.
public struct ClusterSecret: Sendable {
    public let bytes: [UInt8]

    public struct Problem: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads the file: at least 32 bytes, readable by nobody but its owner (and its group).
    public init(file: String) throws(Problem) {
        var info = stat()
        guard stat(file, &info) == 0 else { throw Problem(description: "cannot read \(file): \(String(cString: strerror(errno)))") }
        guard info.st_mode & 0o007 == 0 else { throw Problem(description: "\(file) is readable by other users: chmod 0600 it (it signs every host's tokens)") }
        guard let bytes = readSmallFileBytes(file, limit: 4096), bytes.count >= 32 else {
            throw Problem(description: "\(file) must hold at least 32 random bytes (head -c 32 /dev/urandom > \(file))")
        }
        self.bytes = bytes
    }

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// The viewer tokens' signing key.
    public var viewerTokenKey: [UInt8] { derive("kioskd viewer tokens v1") }

    public func derive(_ label: String) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array(label.utf8), using: SymmetricKey(data: bytes)))
    }
}
