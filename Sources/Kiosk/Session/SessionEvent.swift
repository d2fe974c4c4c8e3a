import Display
import Supervision

/// What happens in a session, as one stream: its tree's transitions, the browser watch's
/// findings, readiness and the end.
public enum SessionEvent: Sendable, CustomStringConvertible {
    case supervision(SupervisionEvent)
    case browser(BrowserEvent)
    case lockdown(LockdownEvent)
    /// The kernel killed processes of the session at its memory limit (`oomKills` so far in
    /// its cgroup); `limit` nil: an ancestor's limit (kioskd's own) was hit.
    case memoryLimit(oomKills: Int, usage: UInt64, limit: UInt64?)
    case ready
    case ended(SessionEnd)

    public var description: String {
        switch self {
        case .supervision(let e): e.description
        case .browser(let e): e.description
        case .lockdown(let e): e.description
        case .memoryLimit(let kills, let usage, let limit):
            "memory limit reached: \(kills) processes killed so far, usage \(usage) bytes of " + (limit.map { "\($0)" } ?? "no limit of its own")
        case .ready: "session ready"
        case .ended(let end): "session ended: \(end)"
        }
    }
}

extension SessionEvent {
    /// What the session's task records of this: an event type and its string fields, or nil for
    /// what the task's history leaves out (a first start, a probe passing). The one place that
    /// decides how a session's life reads in its task's events.
    public var taskEvent: (type: String, fields: [String: String])? {
        switch self {
        case .supervision(let e):
            switch e.kind {
            case .exited(let child, let reason, let again):
                ("process_exited", ["child": child, "reason": "\(reason)", "restart": again ? "true" : "false"])
            case .starting(let child, let generation) where generation > 1:
                ("process_restarted", ["child": child, "generation": "\(generation)"])
            default:
                nil
            }
        case .browser(let b):
            ("browser", ["message": b.description])
        case .lockdown(.blocked(let combo, let purpose)):
            ("key_blocked", ["combo": combo, "purpose": purpose.rawValue])
        case .lockdown(.windowClosed(_, let name)):
            ("window_closed", ["name": name])
        case .lockdown(.inputReleased(let keys, let buttons)):
            ("input_released", ["keys": keys.joined(separator: " "), "buttons": buttons.map(String.init).joined(separator: " ")])
        case .lockdown(.regrabbed(let n)):
            ("keymap_regrabbed", ["grabs": "\(n)"])
        case .memoryLimit(let kills, let usage, let limit):
            ("memory_limit", ["kills": "\(kills)", "usage": "\(usage)", "limit": limit.map { "\($0)" } ?? "none"])
        case .ready:
            ("session_ready", [:])
        case .ended(let end):
            ("session_ended", ["reason": end.reason, "failed": end.failed ? "true" : "false"])
        }
    }
}
