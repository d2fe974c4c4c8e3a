/// How full this host is, as the task service counts it: what /v1/capacity and the public
/// listener's /pressure answer with.
public struct Capacity: Sendable, Equatable {
    public var max: Int
    /// Tasks holding a session slot (a slot is given back once the session has ended).
    public var active: Int
    public var queued: Int
    public var draining: Bool

    public var available: Int { Swift.max(0, max - active) }
    /// A new task would start now.
    public var accepting: Bool { !draining && active < max }

    /// The fields both answers share.
    public func write(into w: inout JSONWriter) {
        w.field("max_sessions", Int64(max))
        w.field("active", Int64(active))
        w.field("queued", Int64(queued))
        w.field("available", Int64(available))
        w.field("draining", draining)
    }
}
