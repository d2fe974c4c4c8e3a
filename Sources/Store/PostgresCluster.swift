import Essentials
import Logging
import PostgresNIO

/// Cluster mode on PostgreSQL. Leases live on the store's clock (`nowSQL`), so hosts' clocks
/// never decide who is alive; every claim and rescue locks rows with `FOR UPDATE SKIP LOCKED`,
/// so hosts working at once never wait on each other's rows or take the same task.
extension PostgresTaskStore: ClusterStore {
    public func register(host: String, address: String, version: String, load: HostLoad, ttlMS: Int64) async throws -> Fence {
        try await transaction { db in
            let now = try await self.now(db)
            // Another machine under this id would take the lease back and forth: refused while
            // its lease lasts. The same address is this host restarting (its old epoch ends here).
            let rows = try await db.query("SELECT address, lease_until FROM hosts WHERE id = \(host) FOR UPDATE", logger: self.logger)
            for try await (other, until) in rows.decode((String, Int64).self) where other != address && until > now {
                throw StoreError.unavailable("cluster.host_id \"\(host)\" is held by a live host at \(other) (lease for \(until - now) ms more): "
                    + "give each host its own cluster.host_id")
            }
            let epochs = try await db.query("""
                INSERT INTO hosts (id, address, version, epoch, started_at, renewed_at, lease_until, max_sessions, active, available, draining)
                VALUES (\(host), \(address), \(version), nextval('host_epochs'), \(now), \(now), \(now + ttlMS),
                        \(load.maxSessions), \(load.active), \(load.available), \(load.draining))
                ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, version = EXCLUDED.version, epoch = EXCLUDED.epoch,
                    started_at = EXCLUDED.started_at, renewed_at = EXCLUDED.renewed_at, lease_until = EXCLUDED.lease_until,
                    max_sessions = EXCLUDED.max_sessions, active = EXCLUDED.active, available = EXCLUDED.available, draining = EXCLUDED.draining
                RETURNING epoch
                """, logger: self.logger)
            for try await epoch in epochs.decode(Int64.self) { return Fence(host: host, epoch: epoch) }
            throw StoreError.unavailable("registering host \(host) returned no epoch")
        }
    }

    public func renew(_ fence: Fence, load: HostLoad, ttlMS: Int64) async throws -> Bool {
        try await run {
            let rows = try await self.client.query("""
                UPDATE hosts SET renewed_at = \(unescaped: Self.nowSQL), lease_until = \(unescaped: Self.nowSQL) + \(ttlMS),
                    max_sessions = \(load.maxSessions), active = \(load.active), available = \(load.available), draining = \(load.draining)
                WHERE id = \(fence.host) AND epoch = \(fence.epoch) AND lease_until > \(unescaped: Self.nowSQL) RETURNING id
                """, logger: self.logger).collect()
            return !rows.isEmpty
        }
    }

    public func leave(_ fence: Fence) async throws {
        try await run {
            try await self.client.query("""
                UPDATE hosts SET lease_until = \(unescaped: Self.nowSQL) - 1, available = 0 WHERE id = \(fence.host) AND epoch = \(fence.epoch)
                """, logger: self.logger)
        }
    }

    public func view() async throws -> ClusterView {
        try await run {
            var view = ClusterView(now: 0, hosts: [], queued: 0, oldestQueuedMS: nil, claimed: 0, running: 0)
            let hosts = try await self.client.query("""
                SELECT \(unescaped: Self.nowSQL), id, address, version, epoch, started_at, renewed_at, lease_until,
                       max_sessions, active, available, draining FROM hosts ORDER BY id
                """, logger: self.logger)
            for try await row in hosts {
                let r = row.makeRandomAccess()
                view.now = try r[0].decode(Int64.self)
                view.hosts.append(HostRecord(
                    id: try r["id"].decode(String.self), address: try r["address"].decode(String.self), version: try r["version"].decode(String.self),
                    epoch: try r["epoch"].decode(Int64.self), startedAt: try r["started_at"].decode(Int64.self),
                    renewedAt: try r["renewed_at"].decode(Int64.self), leaseUntil: try r["lease_until"].decode(Int64.self),
                    load: HostLoad(maxSessions: try r["max_sessions"].decode(Int.self), active: try r["active"].decode(Int.self),
                                   available: try r["available"].decode(Int.self), draining: try r["draining"].decode(Bool.self))))
            }
            let counts = try await self.client.query("""
                SELECT \(unescaped: Self.nowSQL),
                       count(*) FILTER (WHERE state = 'queued' AND host IS NULL),
                       min(queued_at) FILTER (WHERE state = 'queued' AND host IS NULL),
                       count(*) FILTER (WHERE state = 'queued' AND host IS NOT NULL),
                       count(*) FILTER (WHERE state IN ('starting', 'running'))
                FROM tasks WHERE state IN ('queued', 'starting', 'running')
                """, logger: self.logger)
            for try await (now, queued, oldest, claimed, running) in counts.decode((Int64, Int64, Int64?, Int64, Int64).self) {
                view.now = now
                view.queued = Int(queued)
                view.oldestQueuedMS = oldest.map { max(0, now - $0) }
                view.claimed = Int(claimed)
                view.running = Int(running)
            }
            return view
        }
    }

    public func claim(_ fence: Fence, limit: Int, graceMS: Int64) async throws -> [TaskRecord] {
        guard limit > 0 else { return [] }
        return try await transaction { db in
            let now = try await self.now(db)
            let live = try await db.query("""
                SELECT 1 FROM hosts WHERE id = \(fence.host) AND epoch = \(fence.epoch) AND lease_until > \(now)
                """, logger: self.logger).collect()
            guard !live.isEmpty else { return [] }
            let candidates = try await self.records(db.query("""
                SELECT * FROM tasks WHERE state = 'queued' AND host IS NULL AND (origin = \(fence.host) OR queued_at <= \(now - graceMS))
                ORDER BY (origin IS DISTINCT FROM \(fence.host)), created_at, id LIMIT \(limit) FOR UPDATE SKIP LOCKED
                """, logger: self.logger))
            var claimed: [TaskRecord] = []
            for var task in candidates {
                try await db.query("UPDATE tasks SET host = \(fence.host), epoch = \(fence.epoch) WHERE id = \(task.id)", logger: self.logger)
                task.host = fence.host
                var data = JSONWriter()
                data.field("host", fence.host)
                _ = try await self.appendEvent(db, &task, NewEvent(type: "claimed", time: now, data: data.text))
                claimed.append(task)
            }
            return claimed
        }
    }

    public func claimed(_ fence: Fence) async throws -> [String] {
        try await run {
            let rows = try await self.client.query("""
                SELECT id FROM tasks WHERE state = 'queued' AND host = \(fence.host) AND epoch = \(fence.epoch)
                """, logger: self.logger)
            var ids: [String] = []
            for try await id in rows.decode(String.self) { ids.append(id) }
            return ids
        }
    }

    public func requeue(_ fence: Fence, ids: [String], reason: String) async throws -> [Rescued] {
        guard !ids.isEmpty else { return [] }
        return try await transaction { db in
            let now = try await self.now(db)
            let tasks = try await self.records(db.query("""
                SELECT * FROM tasks WHERE id = ANY(\(ids)) AND state = 'queued' AND host = \(fence.host) AND epoch = \(fence.epoch)
                ORDER BY created_at FOR UPDATE
                """, logger: self.logger))
            var out: [Rescued] = []
            for task in tasks { out.append(try await self.requeue(db, task, from: fence.host, reason: reason, now: now)) }
            return out
        }
    }

    public func rescue() async throws -> [Rescued] {
        try await transaction { db in
            let now = try await self.now(db)
            let rows = try await db.query("""
                SELECT t.*, h.lease_until AS host_lease, h.epoch AS host_epoch FROM tasks t JOIN hosts h ON h.id = t.host
                WHERE t.state IN ('queued', 'starting', 'running') AND (h.lease_until <= \(now) OR h.epoch <> t.epoch)
                ORDER BY t.created_at, t.id FOR UPDATE OF t SKIP LOCKED
                """, logger: self.logger)
            var found: [(TaskRecord, leaseEnded: Int64, replaced: Bool)] = []
            for try await row in rows {
                let r = row.makeRandomAccess()
                let task = try self.record(r)
                let replaced = try r["host_epoch"].decode(Int64.self) != (try r["epoch"].decode(Int64?.self))
                found.append((task, try r["host_lease"].decode(Int64.self), replaced))
            }
            var out: [Rescued] = []
            for (task, leaseEnded, replaced) in found {
                let host = task.host ?? "?"
                let why = replaced
                    ? "host \(host) restarted (a new lease replaced the one it held)"
                    : "host \(host) stopped renewing its lease (expired \(max(0, now - leaseEnded)) ms ago)"
                if task.state == .queued {
                    out.append(try await self.requeue(db, task, from: host, reason: why, now: now))
                    continue
                }
                var moved = task
                moved.apply(.interrupted, TaskUpdate(time: now, reason: why))
                var data = JSONWriter()
                data.field("from", task.state.rawValue)
                data.field("to", TaskState.interrupted.rawValue)
                data.field("reason", why)
                data.field("host", host)
                let event = try await self.appendEvent(db, &moved, NewEvent(type: "state_changed", time: now, data: data.text))
                try await db.query("""
                    UPDATE tasks SET state = \(moved.state.rawValue), updated_at = \(moved.updatedAt), ended_at = \(moved.endedAt),
                           reason = \(moved.reason) WHERE id = \(moved.id)
                    """, logger: self.logger)
                out.append(Rescued(task: moved, host: host, interrupted: true, event: event))
            }
            // Hosts gone for a day and owning nothing unfinished leave the list.
            try await db.query("""
                DELETE FROM hosts h WHERE h.lease_until < \(now - 86_400_000)
                AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.host = h.id AND t.state IN ('queued', 'starting', 'running'))
                """, logger: self.logger)
            return out
        }
    }

    public func transition(_ id: String, from: Set<TaskState>, to: TaskState, update: TaskUpdate, event: NewEvent, fence: Fence) async throws -> TransitionResult {
        try await transaction { db in
            try await self.checkFence(db, id, fence)
            return try await self.transition(db, id, from: from, to: to, update: update, event: event)
        }
    }

    public func append(_ id: String, event: NewEvent, fence: Fence) async throws -> EventRecord? {
        try await transaction { db in
            try await self.checkFence(db, id, fence)
            guard var task = try await self.task(db, id, lock: true) else { return nil }
            return try await self.appendEvent(db, &task, event)
        }
    }

    public func changes() -> AsyncStream<ClusterChange> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClusterChange.self, bufferingPolicy: .bufferingNewest(4096))
        let client = self.client, logger = self.logger
        let listener = Task {
            while !Task.isCancelled {
                do {
                    try await client.withConnection { db in
                        try await db.listen(on: "kioskd") { notifications in
                            for try await notification in notifications {
                                if let change = ClusterChange(payload: notification.payload) { continuation.yield(change) }
                            }
                        }
                    }
                } catch {
                    guard !Task.isCancelled else { break }
                    // The pollers carry on meanwhile (NOTIFY is a hint); listen again shortly.
                    logger.warning("LISTEN on PostgreSQL ended; listening again", metadata: ["reason": "\(error)"])
                }
                try? await Task.sleep(for: .seconds(1))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in listener.cancel() }
        return stream
    }

    // MARK: - Helpers

    func now(_ db: PostgresConnection) async throws -> Int64 {
        for try await now in try await db.query("SELECT \(unescaped: Self.nowSQL)", logger: logger).decode(Int64.self) { return now }
        throw StoreError.unavailable("PostgreSQL returned no time")
    }

    /// Refuses the write unless the task is claimed under `fence` and that lease is current;
    /// leaves the task's row locked for the rest of the transaction.
    private func checkFence(_ db: PostgresConnection, _ id: String, _ fence: Fence) async throws {
        let rows = try await db.query("""
            SELECT t.host, t.epoch, h.epoch, h.lease_until > \(unescaped: Self.nowSQL) FROM tasks t LEFT JOIN hosts h ON h.id = \(fence.host)
            WHERE t.id = \(id) FOR UPDATE OF t
            """, logger: logger)
        for try await (host, epoch, current, live) in rows.decode((String?, Int64?, Int64?, Bool?).self) {
            guard host == fence.host, epoch == fence.epoch else {
                throw StoreError.fenced("task \(id) is not claimed by \(fence) (it is \(host.map { "claimed by \($0)" } ?? "unclaimed"))")
            }
            guard current == fence.epoch, live == true else { throw StoreError.fenced("the lease of \(fence) is gone") }
        }
    }

    private func requeue(_ db: PostgresConnection, _ task: TaskRecord, from host: String, reason: String, now: Int64) async throws -> Rescued {
        var task = task
        try await db.query("UPDATE tasks SET host = NULL, epoch = NULL, queued_at = \(now) WHERE id = \(task.id)", logger: logger)
        task.host = nil
        var data = JSONWriter()
        data.field("host", host)
        data.field("reason", reason)
        let event = try await appendEvent(db, &task, NewEvent(type: "requeued", time: now, data: data.text))
        return Rescued(task: task, host: host, interrupted: false, event: event)
    }
}

extension ClusterChange {
    /// The triggers' payloads: `{"t": id, "s": state, "h": host}` and `{"e": id, "q": seq}`.
    init?(payload: String) {
        guard let json = try? JSONValue(parsing: Array(payload.utf8)) else { return nil }
        if let id = json["t"]?.string, let state = json["s"]?.string.flatMap(TaskState.init(rawValue:)) {
            self = .task(id: id, state: state, host: json["h"]?.string)
        } else if let id = json["e"]?.string, let seq = json["q"]?.number {
            self = .event(taskID: id, seq: Int64(seq))
        } else {
            return nil
        }
    }
}
