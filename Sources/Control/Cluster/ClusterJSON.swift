import Essentials
import Store

/// `GET /v1/cluster`: the hosts, the shared queue and the autoscaler's signals.
enum ClusterJSON {
    static func view(_ view: ClusterView, me: String) -> String {
        var w = JSONWriter()
        w.field("host", me)
        w.field("now", TaskJSON.rfc3339(view.now))
        w.raw("hosts", JSONWriter.array(view.hosts.map { host in
            var h = JSONWriter()
            h.field("id", host.id)
            h.field("address", host.address)
            h.field("version", host.version)
            h.field("epoch", host.epoch)
            h.field("alive", view.alive(host))
            h.field("self", host.id == me)
            h.field("started_at", TaskJSON.rfc3339(host.startedAt))
            h.field("lease_age_ms", view.now - host.renewedAt)
            h.field("lease_left_ms", host.leaseUntil - view.now)
            h.field("max_sessions", Int64(host.load.maxSessions))
            h.field("active", Int64(host.load.active))
            h.field("available", Int64(host.load.available))
            h.field("draining", host.load.draining)
            return h.text
        }))
        var queue = JSONWriter()
        queue.field("queued", Int64(view.queued))
        queue.field("claimed", Int64(view.claimed))
        queue.field("running", Int64(view.running))
        queue.field("oldest_queued_ms", view.oldestQueuedMS)
        w.raw("queue", queue.text)
        var signals = JSONWriter()
        ClusterSignals(view).write(into: &signals)
        w.raw("signals", signals.text)
        return w.text
    }
}
