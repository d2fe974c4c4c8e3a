import CSupport
import Essentials
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// One running incarnation of a `ProcessSpec`.
public final class ProcessInstance: Sendable {
    public let pid: Int32
    let pidfd: Int32
    let startTime: UInt64
    let cookie: String
    /// Set by the reactor when the process is reaped.
    let leaderExit = OnceValue<ExitReason>()
    /// Set once the leader is reaped *and* its leftovers are gone.
    let fullyGone = OnceValue<ExitReason>()
    public let output: OutputSink
    /// The first line the child wrote to its notify fd, if it has one.
    let notifyLine: OnceValue<String>?
    /// The first output line containing the log-line probe's text, watched from before the fork.
    let logWatch: OnceValue<String>?
    private let logger: Logger

    private init(pid: Int32, pidfd: Int32, cookie: String, output: OutputSink, notifyLine: OnceValue<String>?, logWatch: OnceValue<String>?, logger: Logger) {
        self.pid = pid
        self.pidfd = pidfd
        self.cookie = cookie
        self.output = output
        self.notifyLine = notifyLine
        self.logWatch = logWatch
        self.logger = logger
        self.startTime = ProcessTree.readStat(pid)?.startTime ?? 0
    }

    deinit { close(pidfd) }

    /// Forks and execs `spec` on the reactor thread and starts watching it.
    static func spawn(_ spec: ProcessSpec, watchingFor needle: String? = nil, logger: Logger) async throws -> ProcessInstance {
        try spec.beforeLaunch?()
        let cookie = randomHex(16)
        var environment = spec.environment
        environment[ProcessTree.cookieVariable] = cookie
        let argv = [spec.executable] + spec.arguments
        let envp = environment.map { "\($0.key)=\($0.value)" }.sorted()
        let sink = OutputSink(capacity: spec.ringLines, logRate: spec.logRate, level: spec.outputLevel, onLine: spec.onLine, logger: logger)
        let notifyLine: OnceValue<String>? = spec.notifyFD == nil ? nil : OnceValue()
        let logWatch = needle.map { sink.watch(for: $0) }
        let reactor = ProcessReactor.shared

        let instance = try await reactor.perform { () throws -> ProcessInstance in
            let out = try Pipe(), err = try Pipe()
            let notify = try spec.notifyFD.map { _ in try Pipe() }
            // Opened here, by the daemon, so the child only writes: a group that cannot be
            // opened fails the spawn before the fork, naming it.
            var cgroupFDs: [Int32] = []
            defer {
                out.closeWrite(); err.closeWrite(); notify?.closeWrite()
                for fd in cgroupFDs { close(fd) }
            }
            for dir in spec.cgroups {
                let fd = open(dir + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    let error = errno
                    out.closeRead(); err.closeRead(); notify?.closeRead()
                    throw SpawnError(executable: spec.executable, stage: Int32(KSUP_STAGE_CGROUP), errno: error, cgroups: [dir])
                }
                cgroupFDs.append(fd)
            }
            var pid: Int32 = 0, pidfd: Int32 = -1, stage: Int32 = 0
            let rc = withCStrings(argv) { argvp in
                withCStrings(envp) { envpp in
                    withOptionalCString(spec.workingDirectory) { cwd in
                        let limits = spec.rlimits.map { ksup_rlimit(resource: $0.resource.code, soft: $0.soft, hard: $0.hard) }
                        let groups = spec.credentials?.groups ?? []
                        return limits.withUnsafeBufferPointer { lp in
                            groups.withUnsafeBufferPointer { gp in
                                cgroupFDs.withUnsafeBufferPointer { cp in
                                    var attr = ksup_spawn_attr()
                                    attr.path = argvp[0].map { UnsafePointer($0) }
                                    attr.argv = UnsafePointer(argvp)
                                    attr.envp = UnsafePointer(envpp)
                                    attr.cwd = cwd
                                    attr.stdout_fd = out.write
                                    attr.stderr_fd = err.write
                                    attr.extra_fd = notify?.write ?? -1
                                    attr.extra_fd_target = spec.notifyFD ?? -1
                                    if let c = spec.credentials {
                                        attr.set_ids = 1
                                        attr.uid = c.uid
                                        attr.gid = c.gid
                                        attr.groups = gp.baseAddress
                                        attr.ngroups = gp.count
                                    }
                                    attr.rlimits = lp.baseAddress
                                    attr.nrlimits = lp.count
                                    attr.pdeathsig = SIGKILL
                                    attr.cgroup_fds = cp.baseAddress
                                    attr.ncgroup_fds = cp.count
                                    return ksup_spawn(&attr, &pid, &pidfd, &stage)
                                }
                            }
                        }
                    }
                }
            }
            guard rc == 0 else {
                out.closeRead(); err.closeRead(); notify?.closeRead()
                throw SpawnError(executable: spec.executable, stage: stage, errno: rc, cgroups: spec.cgroups)
            }
            let instance = ProcessInstance(pid: pid, pidfd: pidfd, cookie: cookie, output: sink, notifyLine: notifyLine, logWatch: logWatch, logger: logger)
            reactor.track(
                pid: pid, pidfd: pidfd, stdout: out.read, stderr: err.read, sink: sink,
                notify: notify.map { ($0.read, notifyLine!) }, exit: instance.leaderExit)
            return instance
        }
        instance.watchLeader()
        return instance
    }

    /// When the leader dies by itself, whatever it left behind is terminated before the exit is
    /// reported, so a restart never runs beside leftovers of the previous incarnation. A task
    /// of the instance's own: it lives exactly as long as the process tree, and whoever runs
    /// the instance awaits `fullyGone`, which it sets last.
    private func watchLeader() {
        Task { [self] in
            let reason = try await leaderExit.wait()
            guard fullyGone.current == nil else { return }
            let killed = await ProcessTree.terminate(leader: pid, leaderStart: startTime, cookie: cookie, grace: .seconds(1))
            if killed > 0 {
                logger.warning("killed \(killed) leftover processes after the child exited", metadata: ["pid": "\(pid)"])
            }
            fullyGone.set(reason)
        }
    }

    /// Stops the child by its shutdown spec and returns once nothing of its tree is left.
    func stop(_ shutdown: Shutdown) async -> ExitReason {
        let grace: Duration? = switch shutdown {
        case .brutalKill: nil
        case .timeout(let t): t
        case .infinity: .seconds(3600 * 24 * 365)
        }
        _ = await ProcessTree.terminate(leader: pid, leaderStart: startTime, cookie: cookie, grace: grace)
        // The group sweep missed nothing, but the leader may have left the group: kill it directly.
        if leaderExit.current == nil { _ = ksup_pidfd_send_signal(pidfd, SIGKILL) }
        return (try? await fullyGone.wait()) ?? .signaled(SIGKILL)
    }
}

public struct SpawnError: Error, CustomStringConvertible {
    public let executable: String
    public let stage: Int32
    public let errno: Int32
    /// The cgroup directories the child was to join (named when that stage fails).
    public let cgroups: [String]

    public init(executable: String, stage: Int32, errno: Int32, cgroups: [String] = []) {
        self.executable = executable
        self.stage = stage
        self.errno = errno
        self.cgroups = cgroups
    }

    public var description: String {
        let what = switch Int(stage) {
        case Int(KSUP_STAGE_CGROUP): "join the cgroup \(cgroups.joined(separator: ", "))"

        case Int(KSUP_STAGE_EXEC): "exec"
        case Int(KSUP_STAGE_CHDIR): "chdir to the working directory"
        case Int(KSUP_STAGE_IDS): "switch user/group"
        case Int(KSUP_STAGE_RLIMIT): "set resource limits"
        case Int(KSUP_STAGE_FDS): "set up file descriptors"
        case Int(KSUP_STAGE_FORK): "fork"
        default: "spawn (stage \(stage))"
        }
        return "cannot \(what) for \(executable): \(String(cString: strerror(errno)))"
    }
}

/// A close-on-exec pipe.
struct Pipe {
    let read: Int32
    let write: Int32

    init() throws(SystemError) {
        var fds: [Int32] = [0, 0]
        try sys("pipe2") { ksup_pipe_cloexec(&fds) }
        read = fds[0]
        write = fds[1]
    }

    func closeWrite() { close(write) }
    func closeRead() { close(read) }
}

func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for p in pointers { free(p) } }
    var mutable = pointers
    return mutable.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}

func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}
