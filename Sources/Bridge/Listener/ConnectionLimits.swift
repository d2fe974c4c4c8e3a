import HummingbirdCore
import Metrics
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How many connections the public listener holds at once, in total and per address. Every
/// connection is a file descriptor, and the listener shares the process's descriptors with the
/// control socket, the store and the sessions: the total stays below the open-file limit with
/// room kept for them, so a flood of idle connections cannot starve the rest of the daemon.
struct ConnectionLimits: Equatable, CustomStringConvertible {
    let total: Int
    let perPeer: Int

    /// `openFiles`: the soft RLIMIT_NOFILE. A quarter of it (at least 64) is kept for the rest
    /// of the daemon; each connection may take two (a viewer's link to x11vnc), so the total is
    /// half of what is left. A configured total above that is lowered to it.
    static func resolve(_ settings: BridgeSettings, openFiles: Int) -> ConnectionLimits {
        let reserve = max(64, openFiles / 4)
        let ceiling = max(1, (openFiles - reserve) / 2)
        let total = min(settings.maxConnections ?? ceiling, ceiling)
        let perPeer = min(settings.maxConnectionsPerPeer ?? max(1, total / 4), total)
        return ConnectionLimits(total: total, perPeer: perPeer)
    }

    /// The process's soft open-file limit (unlimited counts as the kernel's usual nr_open).
    static func openFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return min(Int(clamping: limit.rlim_cur), 1 << 20)
    }

    var description: String { "\(total) in total, \(perPeer) per address" }
}

/// The total cap, through Hummingbird's accept throttle: at the limit the listener stops
/// accepting (no descriptor is taken) until a connection closes.
struct ListenerConnections: AvailableConnectionsDelegate {
    let limit: Int
    private var open = 0

    init(limit: Int) { self.limit = limit }

    mutating func connectionOpened() {
        open += 1
        Gauge(label: "kioskd_bridge_open_connections").record(open)
        if open == limit { Counter(label: "kioskd_bridge_accept_paused_total").increment() }
    }

    mutating func connectionClosed() {
        open -= 1
        Gauge(label: "kioskd_bridge_open_connections").record(open)
    }

    func isAcceptingNewConnections() -> Bool { open < limit }
}

/// Open connections per remote address, for the per-peer cap.
final class PeerCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Takes a place for `channel`'s address, given back when it closes; false when that
    /// address is at its limit.
    func admit(_ channel: any Channel) -> Bool {
        let peer = Self.address(channel)
        let admitted = counts.withLock { counts in
            guard counts[peer, default: 0] < limit else { return false }
            counts[peer, default: 0] += 1
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { _ in
                self.counts.withLock { counts in
                    counts[peer, default: 1] -= 1
                    if counts[peer] == 0 { counts[peer] = nil }
                }
            }
        }
        return admitted
    }

    /// The address without its port (IPv4-mapped IPv6 as IPv4: one peer, one count).
    static func address(_ channel: any Channel) -> String {
        let ip = channel.remoteAddress?.ipAddress ?? "unknown"
        return ip.hasPrefix("::ffff:") && ip.contains(".") ? String(ip.dropFirst(7)) : ip
    }
}
