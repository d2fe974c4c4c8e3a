import Essentials
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

/// The supervision tree's event stream.
public typealias EventBus = Broadcast<SupervisionEvent>
