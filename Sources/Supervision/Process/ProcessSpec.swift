import Logging
/// An external program run as a supervised child.
public struct ProcessSpec: Sendable {
    /// Absolute path of the executable (no PATH lookup: what runs must be unambiguous).
    public var executable: String
    /// Arguments after argv[0].
    public var arguments: [String]
    /// The child's whole environment. The daemon's own is never passed implicitly, so systemd's
    /// NOTIFY_SOCKET, LISTEN_* and WATCHDOG_* cannot leak; `scrubbed(_:)` helps build one.
    public var environment: [String: String]
    public var workingDirectory: String?
    /// Run as this user/group (requires privilege); nil: inherit ours.
    public var credentials: Credentials?
    public var rlimits: [ResourceLimit]
    /// A pipe the child gets as this fd number, for readiness notification (Xvfb's -displayfd).
    public var notifyFD: Int32?
    /// Recent output lines kept for the snapshot and failure reports.
    public var ringLines: Int
    /// Output lines per second logged for this child before lines are counted and dropped.
    public var logRate: Int
    /// Runs before every launch, after the previous incarnation's processes are gone: clears
    /// what a killed incarnation leaves behind (e.g. Chromium's profile lock). An error fails
    /// the start.
    public var beforeLaunch: (@Sendable () throws -> Void)?
    /// The level output lines are logged at: a program that narrates routine work (x11vnc)
    /// logs at debug, so the journal keeps only what matters while the ring keeps it all.
    public var outputLevel: Logger.Level
    /// Sees every output line as it arrives, on the reactor thread: it must be quick. For
    /// programs whose only report of an event is a line (x11vnc's "Client … gone").
    public var onLine: (@Sendable (String) -> Void)?
    /// cgroup directories the child joins between fork and exec (each `cgroup.procs`), so
    /// nothing it forks can ever start outside them. Empty: it stays in the daemon's groups.
    public var cgroups: [String]

    public init(
        executable: String,
        arguments: [String] = [],
        environment: [String: String] = ProcessSpec.scrubbed(),
        workingDirectory: String? = nil,
        credentials: Credentials? = nil,
        rlimits: [ResourceLimit] = [],
        notifyFD: Int32? = nil,
        ringLines: Int = 200,
        logRate: Int = 200,
        beforeLaunch: (@Sendable () throws -> Void)? = nil,
        outputLevel: Logger.Level = .info,
        onLine: (@Sendable (String) -> Void)? = nil,
        cgroups: [String] = []
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.credentials = credentials
        self.rlimits = rlimits
        self.notifyFD = notifyFD
        self.ringLines = ringLines
        self.logRate = logRate
        self.beforeLaunch = beforeLaunch
        self.outputLevel = outputLevel
        self.onLine = onLine
        self.cgroups = cgroups
    }

    /// Variables that belong to the daemon itself and must never reach a child.
    public static let privateVariablePrefixes = ["NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_", "JOURNAL_STREAM", "INVOCATION_ID", "KIOSKD_"]

    /// The daemon's environment without its private variables, plus `extra`.
    public static func scrubbed(_ extra: [String: String] = [:], from base: [String: String] = currentEnvironment()) -> [String: String] {
        var env = base.filter { key, _ in !privateVariablePrefixes.contains { key.hasPrefix($0) } }
        env.merge(extra) { _, new in new }
        return env
    }

    func validate(childID: String) throws(SupervisionError) {
        guard executable.hasPrefix("/") else {
            throw .invalidSpec("child '\(childID)': executable must be an absolute path, got '\(executable)'")
        }
        if let fd = notifyFD, fd < 3 || fd > 255 {
            throw .invalidSpec("child '\(childID)': notify fd must be between 3 and 255")
        }
        if ringLines < 1 { throw .invalidSpec("child '\(childID)': ring must keep at least one line") }
    }
}

public struct Credentials: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]

    public init(uid: UInt32, gid: UInt32, groups: [UInt32] = []) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// Looks a user up by name (and optionally a group), with its supplementary groups.
    public static func lookup(user: String, group: String? = nil) throws(SupervisionError) -> Credentials {
        guard let pw = getpwnam(user) else { throw .invalidSpec("no such user '\(user)'") }
        var gid = pw.pointee.pw_gid
        if let group {
            guard let gr = getgrnam(group) else { throw .invalidSpec("no such group '\(group)'") }
            gid = gr.pointee.gr_gid
        }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(pw.pointee.pw_name, gid, &groups, &count) < 0 {
            groups = [gid]
        } else {
            groups = Array(groups.prefix(Int(count)))
        }
        return Credentials(uid: pw.pointee.pw_uid, gid: gid, groups: groups)
    }
}

public struct ResourceLimit: Sendable, Equatable {
    public enum Resource: String, Sendable, CaseIterable {
        case nofile, nproc, core, `as`, memlock, stack, cpu, fsize

        /// Linux's RLIMIT_* numbers (stable ABI; glibc's enum does not import cleanly).
        var code: Int32 {
            switch self {
            case .cpu: 0
            case .fsize: 1
            case .stack: 3
            case .core: 4
            case .nproc: 6
            case .nofile: 7
            case .memlock: 8
            case .as: 9
            }
        }
    }

    public var resource: Resource
    public var soft: UInt64
    public var hard: UInt64

    public init(_ resource: Resource, soft: UInt64, hard: UInt64? = nil) {
        self.resource = resource
        self.soft = soft
        self.hard = hard ?? soft
    }
}

public func currentEnvironment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") {
            env[String(s[..<eq])] = String(s[s.index(after: eq)...])
        }
        p += 1
    }
    return env
}

#if canImport(Glibc)
import Glibc
#endif
