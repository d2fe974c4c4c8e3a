import Essentials
import Logging
import NIOSSL
import PostgresNIO

/// The production store: PostgreSQL through postgres-nio's pooled client. Every change that
/// appends an event runs in one transaction that locks the task's row (`FOR UPDATE`), so
/// sequence numbers have no gaps however many writers there are.
public final class PostgresTaskStore: TaskStore {
    let client: PostgresClient
    private let runner: Task<Void, Never>
    let logger: Logger
    let settings: PostgresSettings
    /// The pool retries a refused connection forever: a bound turns "PostgreSQL is down" into
    /// an error (503 at the API) instead of a request that never ends.
    private let timeout: Duration

    public init(_ settings: PostgresSettings, timeout: Duration = .seconds(10), logger: Logger) throws {
        self.settings = settings
        self.timeout = timeout
        var configuration = PostgresClient.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: settings.password,
            database: settings.database, tls: try settings.tls())
        configuration.options.connectTimeout = .seconds(5)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        // The pool's own loop, for as long as the store is open: `close()` cancels and awaits it.
        runner = Task { await client.run() }
    }

    public func migrate() async throws {
        do {
            try await transaction { db in
                // Two daemons starting at once take turns (the lock ends with the transaction).
                try await db.query("SELECT pg_advisory_xact_lock(7317004)", logger: self.logger)
                try await db.query("""
                    CREATE TABLE IF NOT EXISTS kioskd_migrations (
                        version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
                    """, logger: self.logger)
                var applied: Set<Int> = []
                for try await version in try await db.query("SELECT version FROM kioskd_migrations", logger: self.logger).decode(Int.self) {
                    applied.insert(version)
                }
                for step in Migrations.steps where !applied.contains(step.version) {
                    for sql in step.postgres { try await db.query(PostgresQuery(unsafeSQL: sql), logger: self.logger) }
                    try await db.query("INSERT INTO kioskd_migrations (version, name) VALUES (\(step.version), \(step.name))", logger: self.logger)
                }
            }
        } catch let error as StoreError {
            throw StoreError.migration(error.description)
        }
    }

    public func create(_ task: TaskRecord, event: NewEvent) async throws -> (task: TaskRecord, created: Bool) {
        try await transaction { db in
            var task = task
            task.lastSeq = 1
            let inserted = try await db.query("""
                INSERT INTO tasks (id, state, request, created_at, updated_at, ended_at, reason, session, last_seq, origin, host, queued_at)
                VALUES (\(task.id), \(task.state.rawValue), \(task.request), \(task.createdAt), \(task.updatedAt),
                        \(task.endedAt), \(task.reason), \(task.session), \(task.lastSeq), \(task.origin), \(task.host), \(unescaped: Self.nowSQL))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """, logger: self.logger).collect()
            guard !inserted.isEmpty else {
                guard let existing = try await self.task(db, task.id, lock: false) else { throw StoreError.unavailable("task \(task.id) vanished") }
                return (existing, false)
            }
            try await self.insert(db, EventRecord(taskID: task.id, seq: 1, type: event.type, time: event.time, data: event.data))
            return (task, true)
        }
    }

    public func task(_ id: String) async throws -> TaskRecord? {
        try await run { try await self.records(self.client.query("SELECT * FROM tasks WHERE id = \(id)", logger: self.logger)).first }
    }

    public func tasks(states: Set<TaskState>?, limit: Int) async throws -> [TaskRecord] {
        try await run {
            if let states {
                let names = states.map(\.rawValue).sorted()
                return try await self.records(self.client.query(
                    "SELECT * FROM tasks WHERE state = ANY(\(names)) ORDER BY created_at DESC, id LIMIT \(limit)", logger: self.logger))
            }
            return try await self.records(self.client.query("SELECT * FROM tasks ORDER BY created_at DESC, id LIMIT \(limit)", logger: self.logger))
        }
    }

    public func transition(_ id: String, from: Set<TaskState>, to: TaskState, update: TaskUpdate, event: NewEvent) async throws -> TransitionResult {
        try await transaction { db in try await self.transition(db, id, from: from, to: to, update: update, event: event) }
    }

    func transition(_ db: PostgresConnection, _ id: String, from: Set<TaskState>, to: TaskState, update: TaskUpdate,
                    event: NewEvent) async throws -> TransitionResult {
        guard var task = try await self.task(db, id, lock: true) else { return .notFound }
        guard from.contains(task.state) else { return .conflict(task) }
        task.apply(to, update)
        let stored = try await appendEvent(db, &task, event)
        try await db.query("""
            UPDATE tasks SET state = \(task.state.rawValue), updated_at = \(task.updatedAt), ended_at = \(task.endedAt),
                   reason = \(task.reason), session = \(task.session) WHERE id = \(id)
            """, logger: logger)
        return .moved(task, stored)
    }

    public func append(_ id: String, event: NewEvent) async throws -> EventRecord? {
        try await transaction { db in
            guard var task = try await self.task(db, id, lock: true) else { return nil }
            return try await self.appendEvent(db, &task, event)
        }
    }

    public func events(_ id: String, after: Int64, limit: Int) async throws -> [EventRecord] {
        try await run {
            let rows = try await self.client.query(
                "SELECT task_id, seq, type, time, data FROM events WHERE task_id = \(id) AND seq > \(after) ORDER BY seq LIMIT \(limit)",
                logger: self.logger)
            var out: [EventRecord] = []
            for try await (task, seq, type, time, data) in rows.decode((String, Int64, String, Int64, String).self) {
                out.append(EventRecord(taskID: task, seq: seq, type: type, time: time, data: data))
            }
            return out
        }
    }

    public func interruptUnfinished(update: TaskUpdate, event: NewEvent) async throws -> [TaskRecord] {
        try await transaction { db in
            let names = TaskState.unfinished.map(\.rawValue).sorted()
            let unfinished = try await self.records(db.query(
                "SELECT * FROM tasks WHERE state = ANY(\(names)) ORDER BY created_at FOR UPDATE", logger: self.logger))
            var out: [TaskRecord] = []
            for var task in unfinished {
                task.apply(.interrupted, update)
                _ = try await self.appendEvent(db, &task, event)
                try await db.query("""
                    UPDATE tasks SET state = \(task.state.rawValue), updated_at = \(task.updatedAt), ended_at = \(task.endedAt),
                           reason = \(task.reason) WHERE id = \(task.id)
                    """, logger: self.logger)
                out.append(task)
            }
            return out
        }
    }

    public func prune(endedBefore: Int64) async throws -> Int {
        try await run {
            let rows = try await self.client.query(
                "DELETE FROM tasks WHERE ended_at IS NOT NULL AND ended_at < \(endedBefore) RETURNING id", logger: self.logger).collect()
            return rows.count
        }
    }

    public func close() async {
        runner.cancel()
        await runner.value
    }

    // MARK: - Helpers

    /// The store's clock in milliseconds since the epoch: leases and queue ages are measured
    /// on one clock, whatever the hosts' clocks say.
    static let nowSQL = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

    /// Database errors become `StoreError` with the server's own message.
    func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            // Abandoning: a connection whose peer vanished without a reset (a link down, a
            // security group) blocks its query past any cancellation until TCP gives up.
            return try await withAbandoningTimeout(timeout, "PostgreSQL") { try await body() }
        } catch let error as PSQLError {
            throw StoreError.unavailable(Self.describe(error))
        } catch is TimeoutError {
            // The pool keeps a failed connect's reason to itself (a TLS or pg_hba refusal): ask.
            throw StoreError.unavailable(await settings.connectionProblem()
                ?? "PostgreSQL at \(settings.host):\(settings.port) did not answer within \(timeout)")
        }
    }

    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let client = self.client, logger = self.logger
        return try await run {
            do {
                return try await client.withTransaction(logger: logger) { try await body($0) }
            } catch let error as PostgresTransactionError {
                // The body's own refusal (a fence, a conflict named in words) is the answer.
                if let own = error.closureError as? StoreError { throw own }
                throw error.closureError ?? error.commitError ?? error.beginError ?? error
            }
        }
    }

    private static func describe(_ error: PSQLError) -> String {
        if let message = error.serverInfo?[.message] { return "PostgreSQL: \(message)" }
        return "PostgreSQL: \(error.code)"
    }

    func task(_ db: PostgresConnection, _ id: String, lock: Bool) async throws -> TaskRecord? {
        let rows = lock
            ? try await db.query("SELECT * FROM tasks WHERE id = \(id) FOR UPDATE", logger: logger)
            : try await db.query("SELECT * FROM tasks WHERE id = \(id)", logger: logger)
        return try await records(rows).first
    }

    func records(_ rows: PostgresRowSequence) async throws -> [TaskRecord] {
        var out: [TaskRecord] = []
        for try await row in rows { out.append(try record(row.makeRandomAccess())) }
        return out
    }

    func record(_ r: PostgresRandomAccessRow) throws -> TaskRecord {
        TaskRecord(
            id: try r["id"].decode(String.self), state: TaskState(rawValue: try r["state"].decode(String.self)) ?? .failed,
            request: try r["request"].decode(String.self), createdAt: try r["created_at"].decode(Int64.self),
            updatedAt: try r["updated_at"].decode(Int64.self), endedAt: try r["ended_at"].decode(Int64?.self),
            reason: try r["reason"].decode(String?.self), session: try r["session"].decode(String?.self),
            lastSeq: try r["last_seq"].decode(Int64.self), origin: try r["origin"].decode(String?.self), host: try r["host"].decode(String?.self))
    }

    func appendEvent(_ db: PostgresConnection, _ task: inout TaskRecord, _ event: NewEvent) async throws -> EventRecord {
        task.lastSeq += 1
        let stored = EventRecord(taskID: task.id, seq: task.lastSeq, type: event.type, time: event.time, data: event.data)
        try await db.query("UPDATE tasks SET last_seq = \(task.lastSeq) WHERE id = \(task.id)", logger: logger)
        try await insert(db, stored)
        return stored
    }

    func insert(_ db: PostgresConnection, _ e: EventRecord) async throws {
        try await db.query("INSERT INTO events (task_id, seq, type, time, data) VALUES (\(e.taskID), \(e.seq), \(e.type), \(e.time), \(e.data))",
                           logger: logger)
    }
}
