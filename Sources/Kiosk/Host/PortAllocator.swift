import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Hands out loopback TCP ports for the sessions' internal servers (x11vnc, websockify, CDP),
/// one actor for the host. A port is given only if nobody has it reserved and a bind to it on
/// 127.0.0.1 succeeds right now; the reservation then keeps other sessions off it.
public actor PortAllocator {
    let range: ClosedRange<Int>
    private var reserved: Set<Int> = []
    /// Where the next search starts: a port just released is not handed out again at once, so
    /// a restarting server of an ended session cannot be mistaken for a new session's.
    private var cursor: Int

    public init(range: ClosedRange<Int> = 20000...29999) {
        self.range = range
        cursor = range.lowerBound
    }

    public func allocate() throws(PortError) -> Int {
        for i in 0..<range.count {
            let port = range.lowerBound + (cursor - range.lowerBound + i) % range.count
            guard !reserved.contains(port), Self.isFree(port) else { continue }
            reserved.insert(port)
            cursor = port == range.upperBound ? range.lowerBound : port + 1
            return port
        }
        throw .exhausted(range)
    }

    public func release(_ port: Int) { reserved.remove(port) }

    /// A bind without SO_REUSEADDR fails while anything listens on the port or a connection
    /// to it lingers in TIME_WAIT, which a server binding without it would trip over too.
    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return withLoopbackAddress(port: port) { bind(fd, $0, $1) } == 0
    }
}

public enum PortError: Error, Equatable, CustomStringConvertible {
    case exhausted(ClosedRange<Int>)

    public var description: String {
        switch self {
        case .exhausted(let r): "no free loopback port between \(r.lowerBound) and \(r.upperBound)"
        }
    }
}
