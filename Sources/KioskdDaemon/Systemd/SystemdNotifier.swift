import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: one datagram of newline-separated KEY=VALUE to
/// $NOTIFY_SOCKET (a path, or an abstract name when it starts with '@'). Without the variable
/// every call does nothing, so the daemon runs the same outside systemd.
public struct SystemdNotifier: Sendable {
    public let socketPath: String?
    /// Half of WATCHDOG_USEC when systemd armed the watchdog for us.
    public let watchdogInterval: Duration?

    public init(environment: [String: String], pid: Int32 = getpid()) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
        if path != nil, let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
           environment["WATCHDOG_PID"].map({ Int32($0) == pid }) ?? true {
            watchdogInterval = .microseconds(Int64(usec / 2))
        } else {
            watchdogInterval = nil
        }
    }

    public var isActive: Bool { socketPath != nil }

    /// Sends the fields; returns false if there is no socket or the send failed.
    @discardableResult
    public func notify(_ fields: [(String, String)]) -> Bool {
        guard let socketPath else { return false }
        let message = fields.map { "\($0.0)=\($0.1.replacingAll("\n", with: " "))" }.joined(separator: "\n")
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(message.utf8)
        let sent = withUnixSocketAddress(socketPath) { address, length in
            bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), address, length) }
        }
        return sent == bytes.count
    }

    public func ready(status: String) { notify([("READY", "1"), ("STATUS", status)]) }
    public func status(_ text: String) { notify([("STATUS", text)]) }
    public func stopping() { notify([("STOPPING", "1"), ("STATUS", "stopping")]) }
    public func watchdog() { notify([("WATCHDOG", "1")]) }
}
