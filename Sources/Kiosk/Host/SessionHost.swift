import FoundationEssentials
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// What all sessions of a host share: where their directories and records live, the user their
/// programs run as, the display and port allocators.
public struct SessionHost: Sendable {
    /// Parent of every session's directory (e.g. /run/kioskd/sessions).
    public var sessionsDir: String
    /// Where a record of each live session is kept (e.g. /var/lib/kioskd/sessions), so the next
    /// run can clean up after a crash.
    public var recordsDir: String
    /// The unprivileged user session programs run as; nil: they inherit the daemon's user.
    public var user: Credentials?
    public var displays: DisplayAllocator
    public var ports: PortAllocator
    /// Keeps other local users off the sessions' loopback ports; nil: not guarded.
    public var portGuard: PortGuard?
    /// The parent of every session's cgroup (detected once at start); nil: no cgroups.
    public var cgroups: SessionCgroups?
    public var logger: Logger

    public init(sessionsDir: String, recordsDir: String, user: Credentials?, displays: DisplayAllocator, ports: PortAllocator,
                portGuard: PortGuard? = nil, cgroups: SessionCgroups? = nil, logger: Logger) {
        self.sessionsDir = sessionsDir
        self.recordsDir = recordsDir
        self.user = user
        self.displays = displays
        self.ports = ports
        self.portGuard = portGuard
        self.cgroups = cgroups
        self.logger = logger
    }

    /// The user session programs run as when the daemon runs as root; an unprivileged daemon's
    /// children simply inherit its user (a setuid needs privilege anyway).
    public static func sessionUser(named name: String) throws -> Credentials? {
        guard geteuid() == 0 else { return nil }
        let user = try Credentials.lookup(user: name)
        guard user.uid != 0 else { throw SessionError.setup("the session user '\(name)' must not be root: Chromium's sandbox needs an unprivileged user") }
        return user
    }

    func writeRecord(_ record: SessionRecord) throws {
        let data = try JSONEncoder().encode(record)
        try writeFile(recordPath(record.id), Array(data), mode: 0o600, owner: nil)
    }

    func removeRecord(_ id: String) {
        unlink(recordPath(id))
    }

    func recordPath(_ id: String) -> String { recordsDir + "/" + id + ".json" }

    /// Creates the sessions and records directories, and checks the session user can reach
    /// its directories: every ancestor must be searchable by it.
    func prepare() throws {
        for (path, mode) in [(sessionsDir, mode_t(0o711)), (recordsDir, mode_t(0o700))] {
            if mkdir(path, mode) != 0 && errno != EEXIST { throw SessionError.setup(FileError(action: "create", path: path, errno: errno).description) }
            guard chmod(path, mode) == 0 else { throw SessionError.setup(FileError(action: "chmod", path: path, errno: errno).description) }
        }
        guard let user else { return }
        var path = ""
        for part in sessionsDir.split(separator: "/") {
            path += "/" + part
            var st = stat()
            guard stat(path, &st) == 0 else { throw SessionError.setup(FileError(action: "stat", path: path, errno: errno).description) }
            let searchable = st.st_mode & S_IXOTH != 0 || (st.st_uid == user.uid && st.st_mode & S_IXUSR != 0)
                || (st.st_gid == user.gid && st.st_mode & S_IXGRP != 0)
            if !searchable {
                throw SessionError.setup("the session user (uid \(user.uid)) cannot reach \(sessionsDir): \(path) has mode \(String(st.st_mode & 0o7777, radix: 8)); it needs o+x")
            }
        }
    }
}

/// What the sweeper needs to clean up after a session of an earlier run.
struct SessionRecord: Codable, Sendable {
    let id: String
    let display: Int
    let directory: String
}
