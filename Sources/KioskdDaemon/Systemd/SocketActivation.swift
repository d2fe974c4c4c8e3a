#if canImport(Glibc)
import Glibc
#endif

/// The listening sockets systemd passed (sd_listen_fds(3) without libsystemd): LISTEN_FDS of
/// them from fd 3, for this process when LISTEN_PID is its pid, named by LISTEN_FDNAMES —
/// `FileDescriptorName=` in kioskd.socket ("control") and kioskd-public.socket ("public"). A
/// name kioskd was not handed a socket for, it binds itself as without systemd.
public struct SocketActivation: Sendable, Equatable {
    /// The socket for the control API.
    public var control: CInt?
    /// The socket for the public listener.
    public var publicListener: CInt?

    public static let none = SocketActivation()
    static let firstFD: CInt = 3

    public init(control: CInt? = nil, publicListener: CInt? = nil) {
        self.control = control
        self.publicListener = publicListener
    }

    /// What the environment says, checked; nil when systemd passed nothing to this process.
    static func parse(_ environment: [String: String], pid: pid_t) throws(DaemonError) -> SocketActivation? {
        guard let count = environment["LISTEN_FDS"] else { return nil }
        // Meant for another process (a parent's variables leaked into ours): not ours to use.
        guard let owner = environment["LISTEN_PID"], pid_t(owner) == pid else { return nil }
        guard let n = Int(count), (1...64).contains(n) else {
            throw DaemonError.setup(key: "LISTEN_FDS", message: "'\(count)' is not a number of sockets from 1 to 64 (systemd's socket activation)")
        }
        let names = (environment["LISTEN_FDNAMES"] ?? "").split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard names.count == n else {
            throw DaemonError.setup(key: "LISTEN_FDNAMES", message: "\(n) sockets passed but \(names.count) names ('\(environment["LISTEN_FDNAMES"] ?? "")'): "
                                    + "give each socket unit FileDescriptorName=control (the control socket) or public (the public listener)")
        }
        var activation = SocketActivation()
        for (i, name) in names.enumerated() {
            let fd = firstFD + CInt(i)
            switch name {
            case "control" where activation.control == nil: activation.control = fd
            case "public" where activation.publicListener == nil: activation.publicListener = fd
            case "control", "public":
                throw DaemonError.setup(key: "LISTEN_FDNAMES", message: "two sockets are named '\(name)': kioskd serves one of each (ListenStream= once per socket unit)")
            default:
                throw DaemonError.setup(key: "LISTEN_FDNAMES", message: "a socket is named '\(name)': kioskd takes 'control' (the control socket) and 'public' "
                                        + "(the public listener); set FileDescriptorName= in the socket unit")
            }
        }
        return activation
    }

    /// Takes the sockets systemd passed to this process: checked (a Unix stream socket for the
    /// control API, a TCP one for the public listener, both listening), kept from children
    /// (close-on-exec), and the variables removed so nothing started later sees them.
    static func take(_ environment: [String: String]) throws(DaemonError) -> SocketActivation {
        defer { for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(key) } }
        guard let activation = try parse(environment, pid: getpid()) else { return .none }
        let count = CInt(environment["LISTEN_FDS"].flatMap { Int($0) } ?? 0)
        for fd in firstFD..<(firstFD + count) { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        if let fd = activation.control { try check(fd, name: "control", domains: [AF_UNIX], what: "a Unix stream socket (ListenStream=/run/kioskd/control.sock)") }
        if let fd = activation.publicListener { try check(fd, name: "public", domains: [AF_INET, AF_INET6], what: "a TCP socket (ListenStream=PORT or ADDRESS:PORT)") }
        return activation
    }

    static func check(_ fd: CInt, name: String, domains: [Int32], what: String) throws(DaemonError) {
        func option(_ name: Int32) -> Int32? {
            var value: Int32 = 0, length = socklen_t(MemoryLayout<Int32>.size)
            return getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 ? value : nil
        }
        guard let domain = option(SO_DOMAIN), let type = option(SO_TYPE), let listening = option(SO_ACCEPTCONN) else {
            throw DaemonError.setup(key: "LISTEN_FDS", message: "fd \(fd), named '\(name)', is not a socket (errno \(errno))")
        }
        guard domains.contains(domain), type == Int32(SOCK_STREAM.rawValue), listening == 1 else {
            throw DaemonError.setup(key: "LISTEN_FDNAMES", message: "the socket named '\(name)' (fd \(fd)) must be \(what), listening; "
                                    + "it is domain \(domain), type \(type), \(listening == 1 ? "listening" : "not listening")")
        }
    }

    /// The path a Unix socket is bound to (nil for another kind, or an unnamed one).
    static func path(of fd: CInt) -> String? {
        var address = sockaddr_un(), length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let got = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        guard got == 0, address.sun_family == sa_family_t(AF_UNIX), length > socklen_t(MemoryLayout<sa_family_t>.size) else { return nil }
        let path = withUnsafeBytes(of: address.sun_path) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
        return path.isEmpty ? nil : path
    }
}
