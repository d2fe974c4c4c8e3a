import CSupport
import Essentials
import Supervision
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What arrived (events, log lines, datagrams), in order, with waiting for one that matches
/// within a deadline (never a sleep).
public final class Recorder<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiters: [(match: @Sendable (Element) -> Bool, found: OnceValue<Element>)] = []
    }
    private let state = Mutex(State())
    private let describe: @Sendable (Element) -> String

    public init(describe: @escaping @Sendable (Element) -> String = { "\($0)" }) { self.describe = describe }

    /// How many so far: pass it as `after` to wait only for later ones.
    public var count: Int { state.withLock { $0.items.count } }
    public var items: [Element] { state.withLock { $0.items } }

    public func record(_ item: Element) {
        let hits = state.withLock { s -> [OnceValue<Element>] in
            s.items.append(item)
            var hits: [OnceValue<Element>] = []
            s.waiters.removeAll { w in
                guard w.match(item) else { return false }
                hits.append(w.found)
                return true
            }
            return hits
        }
        for h in hits { h.set(item) }
    }

    /// The first item at index ≥ `after` that matches.
    @discardableResult
    public func wait(for what: String, after: Int = 0, timeout: Duration = .seconds(20),
                     _ match: @escaping @Sendable (Element) -> Bool) async throws -> Element {
        let found = OnceValue<Element>()
        state.withLock { s in
            if let hit = s.items.dropFirst(after).first(where: match) {
                found.set(hit)
            } else {
                s.waiters.append((match, found))
            }
        }
        do {
            return try await withTimeout(timeout, what) { try await found.wait() }
        } catch let error as TimeoutError {
            let seen = items.dropFirst(after).suffix(40).map(describe).joined(separator: "\n  ")
            throw TestFailure("\(error); seen:\n  \(seen)")
        }
    }
}

/// Every event of a bus, recorded.
public final class EventRecorder: Sendable {
    private let recorder = Recorder<SupervisionEvent>(describe: \.description)

    public init(_ bus: EventBus) {
        let stream = bus.subscribe()
        // Unscoped: suites make recorders in their init, where no scope can hold it; it only records.
        Task { [recorder] in
            for await event in stream { recorder.record(event) }
        }
    }

    public var count: Int { recorder.count }
    public var events: [SupervisionEvent] { recorder.items }

    @discardableResult
    public func wait(for what: String, after: Int = 0, timeout: Duration = .seconds(20),
                     _ match: @escaping @Sendable (SupervisionEvent) -> Bool) async throws -> SupervisionEvent {
        try await recorder.wait(for: what, after: after, timeout: timeout, match)
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A program built alongside the tests (kioskd-testchild, kioskd): next to the test binary.
public func builtProduct(_ name: String) throws -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { throw TestFailure("cannot resolve /proc/self/exe") }
    var dir = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while !dir.isEmpty {
        dir = String(dir[..<(dir.lastIndex(of: "/") ?? dir.startIndex)])
        let candidate = dir + "/" + name
        if access(candidate, X_OK) == 0 { return candidate }
        if dir.hasSuffix("/debug") || dir.hasSuffix("/release") { break }
    }
    throw TestFailure("\(name) was not built next to the tests (looked under \(dir)); run `swift build --build-tests` first")
}

/// A program the tests need from the system: a missing one fails and names the package.
/// The repository's root: the nearest folder above this file that holds Package.swift, so a
/// test file may move between folders.
public let repositoryRoot: String = {
    var path = #filePath
    while let slash = path.lastIndex(of: "/"), !path.isEmpty {
        path = String(path[..<slash])
        if access(path + "/Package.swift", F_OK) == 0 { return path }
    }
    fatalError("no Package.swift above \(#filePath)")
}()

public func systemProgram(_ path: String, package: String) throws -> String {
    guard access(path, X_OK) == 0 else {
        throw TestFailure("\(path) is missing: install the Debian package '\(package)' (scripts/setup.sh does)")
    }
    return path
}

/// True while `pid` exists and is not a zombie.
public func isAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 || errno == EPERM else { return false }
    guard let stat = try? readText("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Every live process whose environment carries this text (e.g. a test's unique marker).
public func processesWithEnvironment(containing marker: String) -> [Int32] {
    allPIDs().filter { pid in
        pid != getpid() && isAlive(pid) && ((try? readText("/proc/\(pid)/environ"))?.contains(marker) ?? false)
    }
}

/// Every process id in /proc.
public func allPIDs() -> [Int32] {
    guard let dir = opendir("/proc") else { return [] }
    defer { closedir(dir) }
    var found: [Int32] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let pid = Int32(name) { found.append(pid) }
    }
    return found
}

public func readText(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw TestFailure("cannot open \(path): errno \(errno)") }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n <= 0 { break }
        out.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

/// A fresh directory, removed by the caller with `removeTree`. Searchable by others (0711, not
/// listable) so session programs running as the session user can reach their directory below.
public func makeTempDir(_ prefix: String = "kioskd-test") throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { throw TestFailure("mkdtemp failed: errno \(errno)") }
    chmod(p, 0o711)
    return String(cString: p)
}

public func removeTree(_ path: String) {
    precondition(path.hasPrefix("/tmp/"), "refusing to remove \(path)")
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/rm"), strdup("-rf"), strdup(path), nil]
    defer { argv.forEach { free($0) } }
    if posix_spawn(&pid, "/bin/rm", nil, nil, argv, environ) == 0 {
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// A free loopback TCP port (bound then released; good enough for tests on one machine).
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, len) == 0 && getsockname(fd, p, &len) == 0
        }
    }
    guard ok else { throw TestFailure("cannot find a free port: errno \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A TCP connection to 127.0.0.1:`port` whose reads give up after `timeout` seconds; the
/// caller closes it.
public func connectLoopback(port: Int, timeout: Int = 10) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    guard withLoopbackAddress(port: port, { connect(fd, $0, $1) }) == 0 else {
        close(fd)
        throw TestFailure("cannot connect to 127.0.0.1:\(port): errno \(errno)")
    }
    return fd
}

/// A pipe whose ends close on exec: a program another test spawns at the same moment must not
/// inherit a write end, or the pipe never reaches EOF while that program lives.
public func cloexecPipe() throws -> (read: Int32, write: Int32) {
    var fds: [Int32] = [0, 0]
    guard ksup_pipe_cloexec(&fds) == 0 else { throw TestFailure("pipe: errno \(errno)") }
    return (fds[0], fds[1])
}

/// Runs a program to its end (as `user` if given): what it printed, or a failure naming its exit.
public func runTool(_ path: String, _ arguments: [String], environment: [String: String] = [:], user: Credentials? = nil) async throws -> String {
    var logger = Logger(label: "test.tool")
    logger.logLevel = .critical
    let spec = ProcessSpec(executable: path, arguments: arguments, environment: ProcessSpec.scrubbed().merging(environment) { $1 }, credentials: user)
    let (exit, output) = try await runProgram(spec, timeout: .seconds(60), logger: logger)
    guard exit.isNormal else { throw TestFailure("\(path) \(exit): \(output.suffix(5).joined(separator: " / "))") }
    return output.joined(separator: "\n")
}

/// A connected Unix stream socket with a read timeout (x11vnc's socket, as kioskd reaches it).
public func connectUnix(_ path: String, timeout: Int = 10) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    guard withUnixSocketAddress(path, { connect(fd, $0, $1) }) == 0 else {
        let error = errno
        close(fd)
        throw TestFailure("cannot connect to \(path): errno \(error)")
    }
    return fd
}

/// Re-checks `condition` each time `updates` publishes (and once at once): waiting on the real
/// signal, bounded by a deadline.
public func waitUntil<T: Sendable>(_ what: String, on updates: Broadcast<T>, timeout: Duration = .seconds(20),
                                   _ condition: @escaping @Sendable () async throws -> Bool) async throws {
    let stream = updates.subscribe()
    if try await condition() { return }
    try await withTimeout(timeout, what) {
        for await _ in stream where try await condition() { return }
        throw TestFailure("\(what): the event stream ended first")
    }
}

/// Waits for processes to exit, on their pidfds (the kernel's own signal), with a deadline.
public func waitExited(_ pids: [Int32], timeout: Duration = .seconds(10)) async throws {
    let fds = pids.compactMap { pid -> Int32? in
        let fd = ksup_pidfd_open(pid)
        return fd >= 0 ? fd : nil   // already gone
    }
    defer { fds.forEach { close($0) } }
    let millis = Int32(timeout.components.seconds * 1000)
    let pending = try await blocking { () -> [Int32] in
        let deadline = ContinuousClock.now + timeout
        var open = fds
        while !open.isEmpty, ContinuousClock.now < deadline {
            var polls = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            _ = poll(&polls, nfds_t(polls.count), millis)
            open = zip(open, polls).filter { $0.1.revents == 0 }.map(\.0)
        }
        return open
    }
    guard pending.isEmpty else { throw TestFailure("\(pending.count) of \(pids.count) processes still running after \(timeout)") }
}
