import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP proxy the test controls: put it between a daemon and PostgreSQL, then `cut()`
/// it to partition them (every connection reset, new ones refused) and `mend()` it to heal.
public final class TCPProxy: Sendable {
    public let port: Int
    private let target: Int
    private struct State {
        var listener: Int32 = -1
        var open: Set<Int32> = []
    }
    private let state = Mutex(State())

    public init(to target: Int) throws {
        self.target = target
        port = try freePort()
        try mend()
    }

    /// Listens again on the same port.
    public func mend() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw TestFailure("the proxy cannot listen on \(port): errno \(errno)")
        }
        state.withLock { $0.listener = fd }
        let target = self.target
        Thread.detach { [self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    close(fd)
                    return
                }
                guard let upstream = try? connectLoopback(port: target) else { close(client); continue }
                let kept = state.withLock { s -> Bool in
                    guard s.listener == fd else { return false }
                    s.open.formUnion([client, upstream])
                    return true
                }
                guard kept else { close(client); close(upstream); continue }
                let pumps = PumpPair()
                pump(from: client, to: upstream, pumps)
                pump(from: upstream, to: client, pumps)
            }
        }
    }

    /// The partition: the listener stops and every connection through it is reset (their
    /// pumps close the descriptors).
    public func cut() {
        let fds = state.withLock { s -> [Int32] in
            let all = [s.listener] + Array(s.open)
            s.listener = -1
            s.open = []
            return all
        }
        for fd in fds where fd >= 0 {
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            shutdown(fd, Int32(SHUT_RDWR))
        }
    }

    private func pump(from: Int32, to: Int32, _ pumps: PumpPair) {
        Thread.detach { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(from, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                var sent = 0
                while sent < n {
                    let w = buffer[sent..<n].withUnsafeBytes { write(to, $0.baseAddress, n - sent) }
                    if w < 0 && errno == EINTR { continue }
                    if w <= 0 { break }
                    sent += w
                }
                if sent < n { break }
            }
            shutdown(to, Int32(SHUT_RDWR))
            // The pump that ends second closes both descriptors.
            guard pumps.ended() else { return }
            state.withLock { s in
                s.open.remove(from)
                s.open.remove(to)
            }
            close(from)
            close(to)
        }
    }
}

/// A connection's two pumps: the second to end closes it.
private final class PumpPair: Sendable {
    private let running = Mutex(2)

    /// true for the pump that ends last.
    func ended() -> Bool { running.withLock { n in n -= 1; return n == 0 } }
}
