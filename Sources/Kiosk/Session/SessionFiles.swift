#if canImport(Glibc)
import Essentials
import Glibc
#endif
import Supervision

/// A file operation of the session that failed, with the path and the system's reason.
public struct FileError: Error, CustomStringConvertible {
    public let action: String
    public let path: String
    public let errno: Int32
    public var description: String { "cannot \(action) \(path): \(String(cString: strerror(errno)))" }
}

/// Writes a whole file (never following a symlink planted at `path`), then hands it to `owner`.
public func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t, owner: Credentials?) throws(FileError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
    guard fd >= 0 else { throw FileError(action: "create", path: path, errno: errno) }
    defer { close(fd) }
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw FileError(action: "write", path: path, errno: errno) }
        written += n
    }
    // The mode given to open is masked by the umask; the file's mode must not depend on it.
    guard fchmod(fd, mode) == 0 else { throw FileError(action: "chmod", path: path, errno: errno) }
    if let owner, fchown(fd, owner.uid, owner.gid) != 0 { throw FileError(action: "chown", path: path, errno: errno) }
}

func writeFile(_ path: String, _ text: String, mode: mode_t, owner: Credentials?) throws(FileError) {
    try writeFile(path, Array(text.utf8), mode: mode, owner: owner)
}

/// Creates a directory (an existing one is an error: a session's directory must be new).
func makeDirectory(_ path: String, mode: mode_t, owner: Credentials?) throws(FileError) {
    guard mkdir(path, mode) == 0 else { throw FileError(action: "create the directory", path: path, errno: errno) }
    guard chmod(path, mode) == 0 else { throw FileError(action: "chmod", path: path, errno: errno) }
    if let owner, lchown(path, owner.uid, owner.gid) != 0 { throw FileError(action: "chown", path: path, errno: errno) }
}

/// Removes a tree without following symlinks. Returns the paths that could not be removed.
@discardableResult
func removeTree(_ path: String) -> [String] {
    var st = stat()
    guard lstat(path, &st) == 0 else { return [] }
    if st.st_mode & S_IFMT != S_IFDIR {
        return unlink(path) == 0 || errno == ENOENT ? [] : [path]
    }
    var failed = directoryEntries(path).flatMap { removeTree(path + "/" + $0) }
    if rmdir(path) != 0 && errno != ENOENT { failed.append(path) }
    return failed
}
