/// One transition somewhere in the tree.
public struct SupervisionEvent: Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case starting(child: String, generation: Int)
        /// The process is running (pid known); readiness not yet confirmed.
        case spawned(child: String, pid: Int32)
        case ready(child: String, detail: String)
        case startFailed(child: String, reason: String)
        case exited(child: String, reason: ExitReason, willRestart: Bool)
        case restarting(children: [String], after: Duration)
        case stopping(child: String)
        case stopped(child: String, reason: ExitReason)
        case removed(child: String)
        case supervisorReady
        case gaveUp(reason: String)
        case supervisorStopped(outcome: SupervisorStateMachine.Outcome)
    }

    /// Path of the supervisor the event comes from, root first (e.g. ["root", "programs"]).
    public let path: [String]
    public let kind: Kind
    public let time: ContinuousClock.Instant
    /// Wall-clock time, for logs and APIs.
    public let wallTime: Double

    public init(path: [String], kind: Kind, time: ContinuousClock.Instant, wallTime: Double) {
        self.path = path
        self.kind = kind
        self.time = time
        self.wallTime = wallTime
    }

    /// The child the event is about, if any.
    public var child: String? {
        switch kind {
        case .starting(let c, _), .spawned(let c, _), .ready(let c, _), .startFailed(let c, _),
            .exited(let c, _, _), .stopping(let c), .stopped(let c, _), .removed(let c):
            c
        case .restarting, .supervisorReady, .gaveUp, .supervisorStopped:
            nil
        }
    }

    public var description: String {
        let at = path.joined(separator: "/")
        switch kind {
        case .starting(let c, let g): return "\(at)/\(c): starting (generation \(g))"
        case .spawned(let c, let pid): return "\(at)/\(c): spawned pid \(pid)"
        case .ready(let c, let d): return "\(at)/\(c): ready" + (d.isEmpty ? "" : " (\(d))")
        case .startFailed(let c, let r): return "\(at)/\(c): failed to start: \(r)"
        case .exited(let c, let r, let again): return "\(at)/\(c): \(r)" + (again ? ", will restart" : ", not restarted")
        case .restarting(let cs, let after): return "\(at): restarting \(cs.joined(separator: ", ")) in \(formatDuration(after))"
        case .stopping(let c): return "\(at)/\(c): stopping"
        case .stopped(let c, let r): return "\(at)/\(c): stopped (\(r))"
        case .removed(let c): return "\(at)/\(c): removed"
        case .supervisorReady: return "\(at): all children ready"
        case .gaveUp(let r): return "\(at): gave up: \(r)"
        case .supervisorStopped(let o): return "\(at): stopped (\(o))"
        }
    }
}

/// Fans events out to every subscriber. A subscriber that falls behind loses its oldest
/// events (bounded buffer) rather than slowing the supervisors down.
public final class EventBus: Sendable {
    private struct State {
        var next = 0
        var subscribers: [Int: AsyncStream<SupervisionEvent>.Continuation] = [:]
    }
    private let state = Mutex(State())
    private let bufferSize: Int

    public init(bufferSize: Int = 4096) { self.bufferSize = bufferSize }

    public func subscribe() -> AsyncStream<SupervisionEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SupervisionEvent.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id = state.withLock { s in
            s.next += 1
            s.subscribers[s.next] = continuation
            return s.next
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    public func publish(_ event: SupervisionEvent) {
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for s in subscribers { s.yield(event) }
    }
}

import Synchronization
