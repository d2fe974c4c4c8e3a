/// How full this host is, as admission counts it: what /v1/capacity, the public listener's
/// /pressure and the gauges tell the load balancer and the autoscaler.
public struct Capacity: Sendable, Equatable {
    /// `tasks.max_sessions`: sessions alive at once, warm ones included.
    public var max: Int
    /// Tasks holding a session (a slot is given back once the session has ended).
    public var active: Int
    public var queued: Int
    public var maxQueued: Int
    public var draining: Bool
    /// Live sessions: the tasks' and the warm pool's.
    public var sessions: Int
    public var warmReady: Int
    public var warmTarget: Int
    /// Bytes the sessions may use together, what they use, and what admission has set aside.
    public var budget: UInt64
    public var used: UInt64
    public var committed: UInt64
    /// A session's expected peak (configured, then learned).
    public var estimate: UInt64
    /// Host memory pressure (PSI some avg10, percent), and whether it stopped admission.
    public var pressure: Double
    public var pressured: Bool
    /// A task of the host's default shape created now would start at once.
    public var accepting: Bool

    /// How long a refused client should wait before it asks again: a session ends or boots in
    /// about this time.
    public static let retryAfterSeconds = 5

    public var slotsFree: Int { Swift.max(0, max - sessions) }

    /// Tasks that could start now: the ready warm sessions, then cold ones while slots and
    /// memory last.
    public var available: Int {
        guard !draining, !pressured else { return 0 }
        let room = budget > committed ? budget - committed : 0
        let byMemory = estimate == 0 ? slotsFree : Int(Swift.min(UInt64(slotsFree), room / estimate))
        return warmReady + byMemory
    }

    /// Why a new task would not start now; nil when it would.
    public var reason: String? {
        if accepting { return nil }
        if draining { return "draining" }
        if pressured { return "memory_pressure" }
        if queued > 0 { return "queued" }
        if slotsFree == 0 { return "full" }
        return "memory"
    }

    /// The fields both answers share.
    public func write(into w: inout JSONWriter) {
        w.field("max_sessions", Int64(max))
        w.field("active", Int64(active))
        w.field("queued", Int64(queued))
        w.field("max_queued", Int64(maxQueued))
        w.field("available", Int64(available))
        w.field("slots_free", Int64(slotsFree))
        w.field("sessions", Int64(sessions))
        w.field("warm", Int64(warmReady))
        w.field("warm_target", Int64(warmTarget))
        w.field("memory_budget_bytes", Int64(clamping: budget))
        w.field("memory_used_bytes", Int64(clamping: used))
        w.field("memory_committed_bytes", Int64(clamping: committed))
        w.field("session_estimate_bytes", Int64(clamping: estimate))
        w.field("memory_pressure", pressure)
        w.field("pressured", pressured)
        w.field("draining", draining)
    }
}

extension Admission {
    /// The capacity now, for a task of the warm pool's (the host's default) shape.
    public var capacity: Capacity {
        Capacity(max: settings.maxSessions, active: active, queued: queued, maxQueued: settings.maxQueued, draining: draining,
                 sessions: sessions, warmReady: warmReady, warmTarget: settings.warm, budget: settings.budget, used: used,
                 committed: committed, estimate: estimate, pressure: pressure, pressured: pressured,
                 accepting: wouldStart(shape: settings.warmShape))
    }
}
