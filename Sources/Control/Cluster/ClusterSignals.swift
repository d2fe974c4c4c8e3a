import Essentials
import Store

/// What the autoscaler reads (gauges, and `GET /v1/cluster`'s `signals`): the queue over all
/// hosts, the room the live hosts have, and how many hosts the work needs.
public struct ClusterSignals: Sendable, Equatable {
    public var liveHosts: Int
    /// Tasks waiting to start anywhere: in the shared queue or claimed but not started.
    public var queueDepth: Int
    public var oldestQueuedSeconds: Double
    /// Tasks the live hosts that are not draining could start now.
    public var freeSlots: Int
    public var running: Int
    /// ceil((running + waiting) / one host's sessions): the hosts the work needs now.
    public var suggestedHosts: Int

    public init(_ view: ClusterView) {
        let live = view.live
        liveHosts = live.count
        queueDepth = view.queued + view.claimed
        oldestQueuedSeconds = Double(view.oldestQueuedMS ?? 0) / 1000
        freeSlots = live.filter { !$0.load.draining }.map(\.load.available).reduce(0, +)
        running = view.running
        // One host's capacity: the live hosts' mean (hosts of one group are alike), else any known.
        let sizes = (live.isEmpty ? view.hosts : live).map(\.load.maxSessions)
        let perHost = max(1, sizes.isEmpty ? 1 : sizes.reduce(0, +) / sizes.count)
        suggestedHosts = (running + queueDepth + perHost - 1) / perHost
    }

    public func write(into w: inout JSONWriter) {
        w.field("live_hosts", Int64(liveHosts))
        w.field("queue_depth", Int64(queueDepth))
        w.field("oldest_queued_seconds", oldestQueuedSeconds)
        w.field("free_slots", Int64(freeSlots))
        w.field("running", Int64(running))
        w.field("suggested_hosts", Int64(suggestedHosts))
    }
}
