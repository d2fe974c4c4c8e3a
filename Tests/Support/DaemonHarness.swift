import Dispatch
import Essentials
import Supervision
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `kioskd` run as a real subprocess: stdout/stderr to files, exit seen by waitpid on its own
/// thread. Deliberately not through Supervision, so nothing cleans up after it behind the test.
public final class DaemonProcess: Sendable {
    public let pid: Int32
    /// Everything the daemon wrote to stderr, line by line, as it writes it.
    public let log = LineLog()
    private let exitStatus = OnceValue<Int32>()
    /// Set once stderr reached EOF: every line the daemon wrote is in `log`.
    private let logDrained = OnceValue<Void>()

    /// `passing`: descriptors the daemon gets as 3, 4, … (as systemd passes listening sockets).
    public init(executable: String, arguments: [String], environment: [String: String], directory: String, passing: [Int32] = []) throws {
        let pipe = try cloexecPipe()
        let fds = [pipe.read, pipe.write]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, directory + "/kioskd.stdout", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        posix_spawn_file_actions_addclose(&actions, fds[1])
        for (i, fd) in passing.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(i)) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = spawnWithDefaultSignals(&pid, executable, &actions, argv, envp)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw TestFailure("cannot start \(executable): errno \(rc)")
        }
        self.pid = pid
        let (log, readEnd, drained) = (self.log, fds[0], self.logDrained)
        Thread.detach {
            defer { drained.set(()) }
            guard let stream = fdopen(readEnd, "r") else { return }
            defer { fclose(stream) }
            var line = [CChar](repeating: 0, count: 65536)
            while fgets(&line, Int32(line.count), stream) != nil {
                var text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                if text.hasSuffix("\n") { text.removeLast() }
                log.record(text)
            }
        }
        let exitStatus = self.exitStatus
        let child = pid
        Thread.detach {
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            exitStatus.set(status)
        }
    }

    public func signal(_ sig: Int32) { kill(pid, sig) }

    /// The exit code (or 128 + signal), within the deadline.
    public func waitExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        let status = try await withTimeout(timeout, "kioskd (pid \(pid)) to exit") { try await self.exitStatus.wait() }
        // Its stderr is read on another thread: the exit can be seen before the last lines.
        try await withTimeout(.seconds(5), "kioskd's stderr to close") { try await self.logDrained.wait() }
        let termsig = status & 0x7f
        return termsig == 0 ? (status >> 8) & 0xff : 128 + termsig
    }

    public var stderr: String { log.lines.joined(separator: "\n") }

    deinit {
        if exitStatus.current == nil { kill(pid, SIGKILL) }
    }
}

/// A systemd notify socket: records every datagram the daemon sends.
public final class NotifyListener: Sendable {
    public let path: String
    public let messages = LineLog()
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard withUnixSocketAddress(path, { bind(fd, $0, $1) }) == 0 else { throw TestFailure("cannot bind \(path): errno \(errno)") }
        let (socketFD, messages) = (fd, self.messages)
        Thread.detach {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = recv(socketFD, &buffer, buffer.count, 0)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                messages.record(String(decoding: buffer[0..<n], as: UTF8.self))
            }
        }
    }

    public var received: [String] { messages.lines }

    @discardableResult
    public func wait(for what: String, after: Int = 0, timeout: Duration = .seconds(20), _ match: @escaping @Sendable (String) -> Bool) async throws -> String {
        try await messages.wait(for: what, after: after, timeout: timeout, match)
    }

    /// Ends the receiving thread and removes the socket.
    public func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
        unlink(path)
    }
}

/// Log lines or datagrams as they arrive.
public typealias LineLog = Recorder<String>

extension Recorder where Element == String {
    public var lines: [String] { items }
}

/// A plain OS thread for blocking calls (recv, waitpid) that must not hold a cooperative thread.
public enum Thread {
    public static func detach(_ body: @escaping @Sendable () -> Void) {
        final class Box: @unchecked Sendable {  // handed over once to the new thread, never shared
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(&thread, nil, { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, box)
        pthread_detach(thread)
    }
}

/// The configuration every test daemon starts from: its state, runtime directory and control
/// socket in `dir`, the public listener on loopback `port`; `publicKeys` are more `public:`
/// lines, `rest` more sections (YAML, from column 0).
public func testDaemonConfig(dir: String, port: Int, publicKeys: [String] = [], _ rest: String = "") -> String {
    """
    state:
      dir: \(dir)/state
    runtime:
      dir: \(dir)/run
    control:
      socket: \(dir)/run/control.sock
    public:
      listen: 127.0.0.1:\(port)
    \(publicKeys.map { "  " + $0 + "\n" }.joined())\(rest)
    """
}

/// The `store:` and `cluster:` sections of a test cluster's host: PostgreSQL at `storeURL`, its
/// internal listener on loopback `internalPort`, the shared `secret` file; `timing` more
/// `cluster:` lines (heartbeat, lease_ttl, claim_grace).
public func testClusterConfig(id: String, storeURL: String, internalPort: Int, secret: String, timing: [String] = []) -> String {
    """
    store:
      url: "\(storeURL)"
    cluster:
      enabled: true
      host_id: \(id)
      advertise: 127.0.0.1:\(internalPort)
      listen: 127.0.0.1:\(internalPort)
      secret_file: \(secret)
    \(timing.map { "  " + $0 + "\n" }.joined())
    """
}

/// Children of `pid` that are zombies (exited, not reaped).
public func zombieChildren(of pid: Int32) -> [Int32] {
    allPIDs().filter { p in
        guard let stat = try? readText("/proc/\(p)/stat"), let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        return fields.count > 1 && fields[0] == "Z" && Int32(fields[1]) == pid
    }
}

/// posix_spawn with the signal mask emptied and every disposition at its default. Dispatch
/// worker threads block signals and posix_spawn passes the mask on: without this, the child
/// would ignore SIGTERM.
public func spawnWithDefaultSignals(
    _ pid: inout pid_t, _ path: String, _ actions: UnsafePointer<posix_spawn_file_actions_t>?,
    _ argv: [UnsafeMutablePointer<CChar>?], _ envp: [UnsafeMutablePointer<CChar>?]
) -> Int32 {
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t(), all = sigset_t()
    sigemptyset(&empty)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    return posix_spawn(&pid, path, actions, &attr, argv, envp)
}

/// Runs a program to completion and returns its exit code (128 + signal if killed).
/// `output`: a file that gets stdout and stderr (for a failure message); nil discards them.
public func runToExit(_ path: String, _ arguments: [String], environment: [String: String], timeout: Duration = .seconds(30),
                      output: String? = nil) async throws -> Int32 {
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, output ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var pid: pid_t = 0
    let rc = spawnWithDefaultSignals(&pid, path, &actions, argv, envp)
    guard rc == 0 else { throw TestFailure("cannot run \(path): errno \(rc)") }
    let status = OnceValue<Int32>()
    let child = pid
    Thread.detach {
        var s: Int32 = 0
        while waitpid(child, &s, 0) < 0 && errno == EINTR {}
        status.set(s)
    }
    let s = try await withTimeout(timeout, "\(path) to finish") { try await status.wait() }
    return s & 0x7f == 0 ? (s >> 8) & 0xff : 128 + (s & 0x7f)
}

/// Starts a program whose stdout (and stderr, with `errors`) goes to a pipe: its pid and the
/// pipe's read end, which reaches EOF when the program (and nothing else) ends.
public func spawnReadingOutput(_ path: String, _ arguments: [String], environment: [String: String],
                               errors: Bool = false) throws -> (pid: pid_t, reader: Int32) {
    let pipe = try cloexecPipe()
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipe.write, 1)
    if errors { posix_spawn_file_actions_adddup2(&actions, pipe.write, 2) }
    var pid: pid_t = 0
    let rc = spawnWithDefaultSignals(&pid, path, &actions, argv, envp)
    close(pipe.write)
    guard rc == 0 else {
        close(pipe.read)
        throw TestFailure("cannot run \(path): errno \(rc)")
    }
    return (pid, pipe.read)
}

/// Runs a program that reports changes as lines (`xprop -spy` prints a property, then again on
/// every change) until a line satisfies `condition`: a wait on the X server's own notification,
/// bounded by `timeout`. The program is killed afterwards.
public func waitForLine(_ path: String, _ arguments: [String], environment: [String: String], _ what: String,
                        timeout: Duration = .seconds(15), _ condition: @escaping @Sendable (String) -> Bool) async throws {
    let (pid, reader) = try spawnReadingOutput(path, arguments, environment: environment)
    defer {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
    let matched = OnceValue<Bool>()
    Thread.detach {
        guard let file = fdopen(reader, "r") else {
            matched.set(false)
            return
        }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            if condition(String(cString: line)) {
                matched.set(true)
                return
            }
        }
        matched.set(false)
    }
    guard try await withTimeout(timeout, what, { try await matched.wait() }) else { throw TestFailure("\(path) ended before \(what)") }
}

/// Reads task `id` (`get` is a GET of a control API path) until `done` holds, long-polling its
/// events between reads: every change of a task appends one, so the store's notification is the
/// signal. A read's `last_event` is where the poll starts, so an event appended in between
/// answers at once.
@discardableResult
public func waitForTask(_ id: String, _ what: String, timeout: Duration, get: @escaping @Sendable (String) async throws -> JSONValue,
                        _ done: @escaping @Sendable (JSONValue) -> Bool) async throws -> JSONValue {
    try await withTimeout(timeout, "task \(id) \(what)") {
        while true {
            let task = try await get("/v1/tasks/\(id)")
            if done(task) { return task }
            _ = try await get("/v1/tasks/\(id)/events?since=\(Int(task["last_event"]?.number ?? 0))&wait=5")
        }
    }
}
