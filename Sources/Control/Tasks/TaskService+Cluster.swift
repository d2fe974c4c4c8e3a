import Essentials
import FoundationEssentials
import Logging
import Metrics
import Store

/// Cluster mode: the lease (heartbeat, loss, leave), the claimer of the shared queue, rescue of
/// dead hosts' tasks, and the changes other hosts make. Admission still decides what this host
/// takes: it claims only what it could start now.
extension TaskService {
    /// A task this host has claimed (queued here or holding a session): its writes are fenced.
    func owns(_ id: String) -> Bool { admission.holds(id) || admission.isQueued(id) }

    /// The lease's fence, for an owner's write; without a lease the write is refused here.
    func fence() throws -> Fence {
        guard let fence = cluster?.fence else { throw StoreError.fenced("this host holds no cluster lease (lost, not yet renewed)") }
        return fence
    }

    private var hostLoad: HostLoad {
        let c = admission.capacity
        return HostLoad(maxSessions: c.max, active: c.active, available: max(0, c.available - c.queued), draining: c.draining)
    }

    /// Registers with a new epoch, then ends what the previous run of this host left (its old
    /// epoch's tasks: interrupted if they had started, queued again if not).
    func joinCluster() async throws -> [TaskRecord] {
        guard let cluster else { return [] }
        let sent = ContinuousClock.now
        let fence = try await cluster.store.register(host: cluster.hostID, address: cluster.settings.address, version: cluster.version,
                                                     load: hostLoad, ttlMS: cluster.leaseTTLms)
        cluster.hold(fence)
        leaseExpiry = sent + cluster.settings.leaseTTL
        logger.notice("joined the cluster", metadata: ["host": "\(cluster.hostID)", "epoch": "\(fence.epoch)", "address": "\(cluster.settings.address)"])
        let rescued = try await cluster.store.rescue()
        announce(rescued)
        return rescued.filter { $0.interrupted && $0.host == cluster.hostID }.map(\.task)
    }

    /// Every heartbeat: renews the lease (or joins), and apart from that, so that a slow store
    /// never delays noticing a lost lease, rescues dead hosts' tasks, reads the cluster, claims.
    func heartbeat() async {
        let period = cluster?.settings.heartbeat ?? .seconds(2)
        await withDiscardingTaskGroup { group in
            group.addTask {
                repeat { await self.keepLease() } while (try? await Task.sleep(for: period)) != nil
            }
            group.addTask {
                repeat { await self.housekeep() } while (try? await Task.sleep(for: period)) != nil
            }
            group.addTask { await self.watchLease() }
        }
    }

    /// The lease's end on this host's clock, whatever the store calls are doing: a renewal
    /// stuck on a connection whose peer vanished must not keep a host running its sessions
    /// after the others have rescued its tasks.
    private func watchLease() async {
        let period = cluster?.settings.heartbeat ?? .seconds(2)
        while !Task.isCancelled {
            if cluster?.fence != nil, ContinuousClock.now >= leaseExpiry {
                await leaseLost("no renewal reached the store before the lease's end")
            }
            let next = cluster?.fence != nil ? max(leaseExpiry, .now + .milliseconds(10)) : .now + period
            guard (try? await Task.sleep(until: next, clock: .continuous)) != nil else { return }
        }
    }

    private func keepLease() async {
        guard let cluster else { return }
        let sent = ContinuousClock.now
        guard let fence = cluster.fence else {
            do {
                _ = try await joinCluster()
            } catch {
                logger.warning("cannot join the cluster; trying again", metadata: ["reason": "\(error)"])
            }
            return
        }
        do {
            // Bounded by the lease: a store that does not answer in time has let it lapse.
            let load = hostLoad
            let renewed = try await withAbandoningTimeout(max(leaseExpiry - sent, .milliseconds(1)), "the lease's renewal") {
                try await cluster.store.renew(fence, load: load, ttlMS: cluster.leaseTTLms)
            }
            if renewed {
                leaseExpiry = sent + cluster.settings.leaseTTL
            } else {
                await leaseLost("the store says this host's lease is gone (it expired or was replaced)")
            }
        } catch {
            if ContinuousClock.now >= leaseExpiry {
                await leaseLost("the lease could not be renewed in time: \(error)")
            } else {
                logger.warning("the lease could not be renewed; trying again", metadata: ["reason": "\(error)", "lease_left": "\(leaseExpiry - .now)"])
            }
        }
    }

    private func housekeep() async {
        guard let cluster, let fence = cluster.fence else { return }
        // A claim that committed after the claimer gave up on its answer: back to the queue.
        if !claiming, let lost = try? await cluster.store.claimed(fence).filter({ !owns($0) }), !lost.isEmpty, !claiming {
            logger.warning("claims this host did not know of go back to the queue", metadata: ["tasks": "\(lost)"])
            if let back = try? await cluster.store.requeue(fence, ids: lost, reason: "its claim reached the store after \(cluster.hostID) gave up waiting for it") {
                announce(back)
            }
        }
        if let rescued = try? await cluster.store.rescue() { announce(rescued) }
        if let view = try? await cluster.store.view() {
            cluster.saw(view)
            record(view)
        }
        await claimCycle()
    }

    /// The lease is gone: another host may rescue this host's tasks any moment, so nothing here
    /// may go on with them. Sessions stop, unstarted claims are dropped (the rescue queues them
    /// again), and the next heartbeat registers anew.
    private func leaseLost(_ why: String) async {
        guard let cluster, cluster.fence != nil else { return }
        cluster.hold(nil)
        Counter(label: "kioskd_cluster_leases_lost_total").increment()
        logger.error("this host lost its cluster lease: its sessions stop and it claims nothing until it has joined again",
                     metadata: ["reason": "\(why)", "tasks": "\(admission.taskIDs.count)", "queued": "\(admission.queuedIDs.count)"])
        for id in admission.queuedIDs {
            admission.withdraw(id)
            requests[id] = nil
            deadlines.remove(id)
        }
        for id in admission.taskIDs where !stopping.contains(id) {
            deadlines.remove(id)
            stopping.insert(id)
            post.yield(.stopSession(warmSessionOf[id] ?? id, reason: "this host lost its cluster lease"))
        }
        await step()
    }

    /// Claims what admission would start now, oldest first (this host's own tasks first). One
    /// claim at a time: a second caller asks the running one to go round again.
    func claimCycle() async {
        guard let cluster else { return }
        guard !claiming else { claimAgain = true; return }
        claiming = true
        defer { claiming = false }
        repeat {
            claimAgain = false
            let c = admission.capacity
            let room = c.available - c.queued
            guard let fence = cluster.fence, !c.draining, room > 0 else { return }
            let claimed: [TaskRecord]
            do {
                claimed = try await cluster.store.claim(fence, limit: room, graceMS: cluster.graceMS)
            } catch {
                logger.warning("claiming from the shared queue failed", metadata: ["reason": "\(error)"])
                return
            }
            for task in claimed { await take(task) }
            if !claimed.isEmpty {
                Counter(label: "kioskd_cluster_claims_total").increment(by: claimed.count)
                await step()
            }
        } while claimAgain
    }

    /// A claimed task joins this host's queue, with its deadlines counted from its creation.
    private func take(_ task: TaskRecord) async {
        let id = task.id
        changes.publish(task)
        guard let request = try? CreateTask(body: Array(task.request.utf8)) else {
            admission.enqueue(id, shape: "", limit: nil)
            _ = try? await move(id, .fail, reason: "its stored request cannot be read", data: [:])
            return
        }
        logger.info("task claimed", metadata: ["task": "\(id)", "origin": "\(task.origin ?? "?")"])
        requests[id] = request
        let settings = template(id, request)
        let age = Duration.milliseconds(max(0, nowMS() - task.createdAt))
        deadlines.arm(id, now: .now - age, startTimeout: request.timeoutSeconds.map { .seconds($0) } ?? limits.startTimeout,
                      lifetime: request.maxLifetimeSeconds.map { .seconds($0) } ?? limits.maxLifetime)
        deadlinesChanged.set(())
        admission.enqueue(id, shape: settings.shape, limit: settings.limits.memoryMax)
    }

    /// A create in cluster mode: the shared queue holds `tasks.max_queued` per live host.
    func clusterRefusal(limit: UInt64?) -> Admission.Refusal? {
        if case .tooLarge? = admission.refusal(limit: limit) { return admission.refusal(limit: limit) }
        guard let view = cluster?.view else { return nil }
        let bound = admission.settings.maxQueued * max(1, view.live.count)
        return view.queued >= bound ? .queueFull(limit: bound) : nil
    }

    /// Puts this host's unstarted claims back in the shared queue (a drain).
    func requeueClaims(reason: String) async {
        guard let cluster, let fence = cluster.fence else { return }
        let ids = admission.queuedIDs
        guard !ids.isEmpty else { return }
        do {
            let back = try await cluster.store.requeue(fence, ids: ids, reason: reason)
            for r in back {
                admission.withdraw(r.task.id)
                requests[r.task.id] = nil
                deadlines.remove(r.task.id)
            }
            announce(back)
            await step()
        } catch {
            logger.warning("could not put the unstarted claims back in the queue; the rescue will once the lease ends", metadata: ["reason": "\(error)"])
        }
    }

    /// Hears every change the hosts make: claimers wake, long polls and streams end, and a task
    /// this host runs that another host ended (a stop or a deadline there) has its session stopped.
    func followCluster() async {
        guard let cluster else { return }
        for await change in cluster.store.changes() {
            switch change {
            case .event(let id, let seq):
                // Listeners re-read the store: the number is what they wait for.
                appended.publish(EventRecord(taskID: id, seq: seq, type: "", time: 0, data: "{}"))
            case .task(let id, let state, let host):
                if state == .queued && host == nil { cluster.wakeClaimer() }
                guard let task = try? await store.task(id) else { continue }
                changes.publish(task)
                if task.state.isFinal && owns(id) && !stopping.contains(id) {
                    logger.info("task ended elsewhere", metadata: ["task": "\(id)", "state": "\(task.state.rawValue)"])
                    await finished(task)
                }
            }
        }
    }

    /// A clean stop: the lease ends now and this host's tasks are rescued at once, not a lease
    /// later (scale-in).
    func leaveCluster() async {
        guard let cluster, let fence = cluster.fence else { return }
        cluster.hold(nil)
        let (store, logger) = (cluster.store, self.logger)
        do {
            // Shielded (the stop has cancelled this task) and bounded: a store that does not
            // answer must not hold the stop; the lease then simply runs out.
            let rescued = try await shielded {
                try await withTimeout(.seconds(3), "leaving the cluster") {
                    try await store.leave(fence)
                    return try await store.rescue()
                }
            }
            logger.notice("left the cluster", metadata: ["epoch": "\(fence.epoch)", "rescued": "\(rescued.count)"])
        } catch {
            logger.warning("could not leave the cluster: the others rescue this host's tasks once its lease ends", metadata: ["reason": "\(error)"])
        }
    }

    private func announce(_ rescued: [Rescued]) {
        for r in rescued {
            appended.publish(r.event)
            changes.publish(r.task)
            Counter(label: "kioskd_cluster_rescued_total", dimensions: [("outcome", r.interrupted ? "interrupted" : "requeued")]).increment()
            logger.warning(r.interrupted ? "task interrupted: its host is gone" : "task queued again: its host is gone",
                           metadata: ["task": "\(r.task.id)", "host": "\(r.host)"])
        }
        if rescued.contains(where: { !$0.interrupted }) { cluster?.wakeClaimer() }
    }

    /// The autoscaler's signals (docs/metrics.md).
    private func record(_ view: ClusterView) {
        let signals = ClusterSignals(view)
        Gauge(label: "kioskd_cluster_hosts").record(signals.liveHosts)
        Gauge(label: "kioskd_cluster_queue_depth").record(signals.queueDepth)
        Gauge(label: "kioskd_cluster_oldest_queued_seconds").record(signals.oldestQueuedSeconds)
        Gauge(label: "kioskd_cluster_free_slots").record(signals.freeSlots)
        Gauge(label: "kioskd_cluster_suggested_hosts").record(signals.suggestedHosts)
    }
}
