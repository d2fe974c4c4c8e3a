import NIOCore

/// The clocks of a client's WebSocket connection on the listeners (a viewer's, an agent's, a
/// relayed client's): a ping every `pingInterval`, the connection closed once two go
/// unanswered; the idle limit (no data frame either way for `idleTimeout`); and the maximum
/// lifetime. Each limit ends the connection with 1001 and a reason.
///
/// Used only on the connection's event loop, by the handler that owns the connection
/// (`ViewerHandler`, `RelayClientHandler`): the handler sets `lastActivity` per data frame (a
/// stored deadline: no allocation, no hop), calls `pong()` on a pong and `stop()` as the
/// connection ends. Nothing else holds the handler's closures but the scheduled tasks, which
/// `stop()` cancels.
final class ConnectionClocks {
    /// Ends the connection: why (for the log and the task event), and the close to send.
    typealias Finish = (_ why: String, _ close: (code: UInt16, reason: String)) -> Void

    /// When a data frame last went either way; the idle limit counts from it.
    var lastActivity = NIODeadline.now()
    private let loop: any EventLoop
    private var pingsUnanswered = 0
    /// Set by `stop()`: a clock firing as the connection ends (a ping's write failing) schedules
    /// nothing more.
    private var stopped = false
    private var lifetime: Scheduled<Void>?
    private var idle: Scheduled<Void>?
    private var ping: Scheduled<Void>?

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// Starts the three clocks. `lifetimeReason`: why the connection ends at its maximum
    /// lifetime ("reached the maximum viewer lifetime"); `sendPing` writes and flushes a ping.
    func start(_ settings: BridgeSettings, lifetimeReason: String, finish: @escaping Finish, sendPing: @escaping () -> Void) {
        guard !stopped else { return }
        lifetime = loop.assumeIsolated().scheduleTask(in: TimeAmount(settings.maxLifetime)) {
            finish(lifetimeReason, (1001, "maximum lifetime reached"))
        }
        checkIdle(at: lastActivity + TimeAmount(settings.idleTimeout), limit: settings.idleTimeout, finish: finish)
        pingAfter(TimeAmount(settings.pingInterval), finish: finish, sendPing: sendPing)
    }

    /// The peer answered a ping.
    func pong() {
        pingsUnanswered = 0
    }

    /// The connection has ended: no clock fires any more.
    func stop() {
        stopped = true
        lifetime?.cancel()
        idle?.cancel()
        ping?.cancel()
        lifetime = nil
        idle = nil
        ping = nil
    }

    private func checkIdle(at deadline: NIODeadline, limit: Duration, finish: @escaping Finish) {
        guard !stopped else { return }
        idle = loop.assumeIsolated().scheduleTask(deadline: deadline) {
            let due = self.lastActivity + TimeAmount(limit)
            if due <= .now() {
                finish("idle for \(limit)", (1001, "idle"))
            } else {
                self.checkIdle(at: due, limit: limit, finish: finish)
            }
        }
    }

    private func pingAfter(_ interval: TimeAmount, finish: @escaping Finish, sendPing: @escaping () -> Void) {
        guard !stopped else { return }
        ping = loop.assumeIsolated().scheduleTask(in: interval) {
            guard self.pingsUnanswered < 2 else {
                return finish("did not answer 2 pings", (1001, "ping timeout"))
            }
            self.pingsUnanswered += 1
            sendPing()
            self.pingAfter(interval, finish: finish, sendPing: sendPing)
        }
    }
}

@available(*, unavailable)
extension ConnectionClocks: Sendable {}
