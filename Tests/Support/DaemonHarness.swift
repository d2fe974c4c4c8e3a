import Dispatch
import Supervision
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `kioskd` run as a real subprocess: stdout/stderr to files, exit seen by waitpid on its own
/// thread. Deliberately not through Supervision, so nothing cleans up after it behind the test.
public final class DaemonProcess: Sendable {
    public let pid: Int32
    public let stderrPath: String
    private let exitStatus = OnceValue<Int32>()

    public init(executable: String, arguments: [String], environment: [String: String], directory: String) throws {
        stderrPath = directory + "/kioskd.stderr"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, directory + "/kioskd.stdout", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = spawnWithDefaultSignals(&pid, executable, &actions, argv, envp)
        guard rc == 0 else { throw TestFailure("cannot start \(executable): errno \(rc)") }
        self.pid = pid
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
        let termsig = status & 0x7f
        return termsig == 0 ? (status >> 8) & 0xff : 128 + termsig
    }

    public var stderr: String { (try? readText(stderrPath)) ?? "" }

    deinit {
        if exitStatus.current == nil { kill(pid, SIGKILL) }
    }
}

/// A systemd notify socket: records every datagram the daemon sends.
public final class NotifyListener: Sendable {
    public let path: String
    private let fd: Int32
    private let messages = Mutex<[String]>([])
    private let waiters = Mutex<[(match: @Sendable (String) -> Bool, found: OnceValue<String>)]>([])

    public init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else { throw TestFailure("cannot bind \(path): errno \(errno)") }
        let socketFD = fd
        Thread.detach { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = recv(socketFD, &buffer, buffer.count, 0)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                record(String(decoding: buffer[0..<n], as: UTF8.self))
            }
        }
    }

    private func record(_ message: String) {
        messages.withLock { $0.append(message) }
        let hits = waiters.withLock { w -> [OnceValue<String>] in
            var hits: [OnceValue<String>] = []
            w.removeAll { entry in
                guard entry.match(message) else { return false }
                hits.append(entry.found)
                return true
            }
            return hits
        }
        for h in hits { h.set(message) }
    }

    public var received: [String] { messages.withLock { $0 } }

    /// The first message (index ≥ `after`) for which `match` holds.
    @discardableResult
    public func wait(for what: String, after: Int = 0, timeout: Duration = .seconds(20), _ match: @escaping @Sendable (String) -> Bool) async throws -> String {
        let found = OnceValue<String>()
        let past = messages.withLock { m in m.dropFirst(after).first(where: match) }
        if let past { return past }
        waiters.withLock { $0.append((match, found)) }
        if let late = messages.withLock({ m in m.dropFirst(after).first(where: match) }) { found.set(late) }
        do {
            return try await withTimeout(timeout, what) { try await found.wait() }
        } catch {
            throw TestFailure("\(error); received: \(received)")
        }
    }

    /// Ends the receiving thread and removes the socket.
    public func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
        unlink(path)
    }
}

/// A plain OS thread for blocking calls (recv, waitpid) that must not hold a cooperative thread.
enum Thread {
    static func detach(_ body: @escaping @Sendable () -> Void) {
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

/// Waits for a condition that has no event to wait on (a /proc entry vanishing), checking it
/// every 10 ms until the deadline. Only for that: anything with an event is awaited directly.
public func eventually(_ what: String, timeout: Duration = .seconds(10), _ condition: @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TestFailure("timed out after \(timeout) waiting until \(what)") }
        try await Task.sleep(for: .milliseconds(10))
    }
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
