import GRDB

/// The embedded store: one SQLite file in WAL mode (readers never wait for the writer), with
/// `synchronous=FULL` so an acknowledged event survives a power cut, not only a crash.
public final class SQLiteTaskStore: TaskStore {
    private let pool: DatabasePool

    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw StoreError.unavailable("cannot open SQLite database \(path): \(error)")
        }
    }

    public func migrate() async throws {
        var migrator = DatabaseMigrator()
        for step in Migrations.steps {
            migrator.registerMigration("\(step.version) \(step.name)") { db in
                for sql in step.sqlite { try db.execute(sql: sql) }
            }
        }
        do {
            try migrator.migrate(pool)
        } catch {
            throw StoreError.migration("\(error)")
        }
    }

    public func create(_ task: TaskRecord, event: NewEvent) async throws -> (task: TaskRecord, created: Bool) {
        try await pool.write { db in
            if let existing = try Self.task(db, task.id) { return (existing, false) }
            var task = task
            task.lastSeq = 1
            try db.execute(
                sql: """
                    INSERT INTO tasks (id, state, request, created_at, updated_at, ended_at, reason, session, last_seq, origin, host)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [task.id, task.state.rawValue, task.request, task.createdAt, task.updatedAt, task.endedAt, task.reason, task.session, task.lastSeq,
                            task.origin, task.host])
            try Self.insert(db, EventRecord(taskID: task.id, seq: 1, type: event.type, time: event.time, data: event.data))
            return (task, true)
        }
    }

    public func task(_ id: String) async throws -> TaskRecord? {
        try await pool.read { db in try Self.task(db, id) }
    }

    public func tasks(states: Set<TaskState>?, limit: Int) async throws -> [TaskRecord] {
        try await pool.read { db in
            if let states {
                let marks = Array(repeating: "?", count: states.count).joined(separator: ", ")
                var arguments = StatementArguments(states.map(\.rawValue).sorted())
                arguments += [limit]
                return try Row.fetchAll(db, sql: "SELECT * FROM tasks WHERE state IN (\(marks)) ORDER BY created_at DESC, id LIMIT ?",
                                        arguments: arguments).map(Self.record)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM tasks ORDER BY created_at DESC, id LIMIT ?", arguments: [limit]).map(Self.record)
        }
    }

    public func transition(_ id: String, from: Set<TaskState>, to: TaskState, update: TaskUpdate, event: NewEvent) async throws -> TransitionResult {
        try await pool.write { db in
            guard var task = try Self.task(db, id) else { return .notFound }
            guard from.contains(task.state) else { return .conflict(task) }
            task.apply(to, update)
            let stored = try Self.appendEvent(db, &task, event)
            try db.execute(sql: "UPDATE tasks SET state = ?, updated_at = ?, ended_at = ?, reason = ?, session = ? WHERE id = ?",
                           arguments: [task.state.rawValue, task.updatedAt, task.endedAt, task.reason, task.session, id])
            return .moved(task, stored)
        }
    }

    public func append(_ id: String, event: NewEvent) async throws -> EventRecord? {
        try await pool.write { db in
            guard var task = try Self.task(db, id) else { return nil }
            return try Self.appendEvent(db, &task, event)
        }
    }

    public func events(_ id: String, after: Int64, limit: Int) async throws -> [EventRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?", arguments: [id, after, limit])
                .map { EventRecord(taskID: $0["task_id"], seq: $0["seq"], type: $0["type"], time: $0["time"], data: $0["data"]) }
        }
    }

    public func interruptUnfinished(update: TaskUpdate, event: NewEvent) async throws -> [TaskRecord] {
        try await pool.write { db in
            let marks = TaskState.unfinished.map { _ in "?" }.joined(separator: ", ")
            let unfinished = try Row.fetchAll(db, sql: "SELECT * FROM tasks WHERE state IN (\(marks)) ORDER BY created_at",
                                              arguments: StatementArguments(TaskState.unfinished.map(\.rawValue))).map(Self.record)
            var out: [TaskRecord] = []
            for var task in unfinished {
                task.apply(.interrupted, update)
                _ = try Self.appendEvent(db, &task, event)
                try db.execute(sql: "UPDATE tasks SET state = ?, updated_at = ?, ended_at = ?, reason = ? WHERE id = ?",
                               arguments: [task.state.rawValue, task.updatedAt, task.endedAt, task.reason, task.id])
                out.append(task)
            }
            return out
        }
    }

    public func prune(endedBefore: Int64) async throws -> Int {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM tasks WHERE ended_at IS NOT NULL AND ended_at < ?", arguments: [endedBefore])
            return db.changesCount
        }
    }

    public func close() async {
        try? pool.close()
    }

    // MARK: - Rows

    private static func task(_ db: Database, _ id: String) throws -> TaskRecord? {
        try Row.fetchOne(db, sql: "SELECT * FROM tasks WHERE id = ?", arguments: [id]).map(record)
    }

    private static func record(_ row: Row) -> TaskRecord {
        TaskRecord(id: row["id"], state: TaskState(rawValue: row["state"]) ?? .failed, request: row["request"],
                   createdAt: row["created_at"], updatedAt: row["updated_at"], endedAt: row["ended_at"],
                   reason: row["reason"], session: row["session"], lastSeq: row["last_seq"], origin: row["origin"], host: row["host"])
    }

    /// Gives the event the task's next number and stores both.
    private static func appendEvent(_ db: Database, _ task: inout TaskRecord, _ event: NewEvent) throws -> EventRecord {
        task.lastSeq += 1
        let stored = EventRecord(taskID: task.id, seq: task.lastSeq, type: event.type, time: event.time, data: event.data)
        try db.execute(sql: "UPDATE tasks SET last_seq = ? WHERE id = ?", arguments: [task.lastSeq, task.id])
        try insert(db, stored)
        return stored
    }

    private static func insert(_ db: Database, _ e: EventRecord) throws {
        try db.execute(sql: "INSERT INTO events (task_id, seq, type, time, data) VALUES (?, ?, ?, ?, ?)",
                       arguments: [e.taskID, e.seq, e.type, e.time, e.data])
    }
}

extension TaskRecord {
    /// The row a transition leaves: the new state, its time, and what the update carries.
    mutating func apply(_ state: TaskState, _ update: TaskUpdate) {
        self.state = state
        updatedAt = update.time
        if state.isFinal { endedAt = update.time }
        if let reason = update.reason { self.reason = reason }
        if let session = update.session { self.session = session }
    }
}
