import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Hands out X display numbers, one actor for the whole host: two Xvfb started at once with
/// -displayfd can otherwise pick the same number. A display is taken if anything shows it is
/// live: our own reservation, an abstract socket `@/tmp/.X11-unix/XN` in /proc/net/unix (shared
/// by the whole network namespace), a lock file whose PID is a running X server, or a socket
/// file that accepts connections. Leftovers are removed only when provably dead: the lock's PID
/// is gone or is not an X server (PID reuse), or the socket refuses connections. Never
/// `rm /tmp/.X*lock` wholesale: other X servers on the host are none of our business.
public actor DisplayAllocator {
    public enum State: Equatable, Sendable {
        case free
        /// Leftovers of a dead server, safe to remove.
        case stale(String)
        case live(String)
    }

    let range: ClosedRange<Int>
    let lockDir: String
    let socketDir: String
    private var reserved: Set<Int> = []
    private let logger: Logger

    /// Names of X servers a lock file's PID may belong to.
    static let xServers: Set<String> = ["Xvfb", "Xorg", "X", "Xwayland", "Xvnc", "Xtigervnc", "Xephyr", "Xdummy"]

    public init(range: ClosedRange<Int> = 10...999, lockDir: String = "/tmp", socketDir: String = "/tmp/.X11-unix",
                logger: Logger = Logger(label: "kioskd.displays")) {
        self.range = range
        self.lockDir = lockDir
        self.socketDir = socketDir
        self.logger = logger
    }

    /// The lowest free display, reserved until `release`. Stale leftovers on the way are removed.
    public func allocate() throws -> Int {
        let abstract = abstractSockets()
        for n in range where !reserved.contains(n) {
            switch state(of: n, abstract: abstract) {
            case .live:
                continue
            case .stale(let why):
                removeLeftovers(n, why)
                guard state(of: n, abstract: abstractSockets()) == .free else { continue }
            case .free:
                break
            }
            reserved.insert(n)
            return n
        }
        throw DisplayError.exhausted(range)
    }

    public func release(_ n: Int) {
        reserved.remove(n)
    }

    /// Removes a display's leftovers if they are provably dead (not reserved, not live).
    /// Returns whether anything was removed.
    public func removeIfStale(_ n: Int) -> Bool {
        guard !reserved.contains(n), case .stale(let why) = state(of: n) else { return false }
        removeLeftovers(n, why)
        return true
    }

    private func removeLeftovers(_ n: Int, _ why: String) {
        logger.warning("removing leftovers of a dead X server", metadata: ["display": ":\(n)", "reason": "\(why)"])
        unlink(lockPath(n))
        unlink(socketPath(n))
    }

    public func state(of n: Int) -> State {
        state(of: n, abstract: abstractSockets())
    }

    func lockPath(_ n: Int) -> String { "\(lockDir)/.X\(n)-lock" }
    func socketPath(_ n: Int) -> String { "\(socketDir)/X\(n)" }

    private func state(of n: Int, abstract: Set<String>) -> State {
        if abstract.contains("@" + socketPath(n)) { return .live("abstract socket @\(socketPath(n)) is bound") }
        if let lock = readLock(lockPath(n)) {
            guard let pid = lock else { return .live("lock file \(lockPath(n)) is not readable as a PID") }
            if processExists(pid) {
                let comm = (readFirstLine("/proc/\(pid)/comm") ?? "").trimmingWhitespace
                if Self.xServers.contains(comm) { return .live("lock held by running \(comm) (pid \(pid))") }
                return .stale("lock PID \(pid) is \(comm.isEmpty ? "not ours to read" : "\(comm)"), not an X server")
            }
            return .stale("lock PID \(pid) is not running")
        }
        if access(socketPath(n), F_OK) == 0 {
            return acceptsConnections(socketPath(n)) ? .live("socket \(socketPath(n)) accepts connections") : .stale("socket \(socketPath(n)) without a lock refuses connections")
        }
        return .free
    }

    /// nil: no lock file; .some(nil): a lock file that does not hold a PID.
    private func readLock(_ path: String) -> Int32?? {
        guard access(path, F_OK) == 0 else { return nil }
        guard let line = readFirstLine(path) else { return .some(nil) }
        return .some(Int32(line.trimmingWhitespace))
    }

    /// Abstract Unix socket names ("@…") bound in this network namespace.
    private func abstractSockets() -> Set<String> {
        guard let text = readWhole("/proc/net/unix") else { return [] }
        var names: Set<String> = []
        for line in text.split(separator: "\n").dropFirst() {
            if let path = line.split(separator: " ").last, path.hasPrefix("@") { names.insert(String(path)) }
        }
        return names
    }
}

public enum DisplayError: Error, Equatable, CustomStringConvertible {
    case exhausted(ClosedRange<Int>)

    public var description: String {
        switch self {
        case .exhausted(let r): "no free X display between :\(r.lowerBound) and :\(r.upperBound)"
        }
    }
}

func processExists(_ pid: Int32) -> Bool {
    pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)
}

func acceptsConnections(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return withUnixSocketAddress(path) { connect(fd, $0, $1) } == 0
}

func readWhole(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        out += chunk[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

func readFirstLine(_ path: String) -> String? {
    readWhole(path).map { String($0.prefix { $0 != "\n" }) }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
