/// Where a task is in its life (the lifecycle's rules are `Control.TaskLifecycle`; the store
/// only keeps the state and changes it when it is still what the caller saw).
public enum TaskState: String, Sendable, Codable, CaseIterable {
    case queued, starting, running, completed, failed, cancelled
    case timedOut = "timed_out"
    /// The daemon restarted underneath it.
    case interrupted

    public var isFinal: Bool {
        switch self {
        case .queued, .starting, .running: false
        case .completed, .failed, .cancelled, .timedOut, .interrupted: true
        }
    }

    public static let unfinished: Set<TaskState> = [.queued, .starting, .running]
}

/// A task as stored. Times are milliseconds since the Unix epoch.
public struct TaskRecord: Sendable, Equatable, Codable {
    public var id: String
    public var state: TaskState
    /// The create request as it was accepted (JSON), to answer a retried create and to check
    /// that a retry asks for the same thing.
    public var request: String
    public var createdAt: Int64
    public var updatedAt: Int64
    public var endedAt: Int64?
    /// Why it ended (final states), in words.
    public var reason: String?
    /// What the agent needs once it runs (JSON: CDP URL, display, viewer path).
    public var session: String?
    /// The last event's sequence number: events are 1…lastSeq, with no gaps.
    public var lastSeq: Int64
    /// Cluster mode: the host it was created on, and the host that claimed it (nil: in the
    /// shared queue, or outside cluster mode).
    public var origin: String?
    public var host: String?

    public init(id: String, state: TaskState, request: String, createdAt: Int64, updatedAt: Int64, endedAt: Int64? = nil,
                reason: String? = nil, session: String? = nil, lastSeq: Int64 = 0, origin: String? = nil, host: String? = nil) {
        self.id = id
        self.state = state
        self.request = request
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.endedAt = endedAt
        self.reason = reason
        self.session = session
        self.lastSeq = lastSeq
        self.origin = origin
        self.host = host
    }
}

/// One event of a task: seq 1, 2, 3… per task.
public struct EventRecord: Sendable, Equatable, Codable {
    public var taskID: String
    public var seq: Int64
    public var type: String
    public var time: Int64
    /// A JSON object, as text.
    public var data: String

    public init(taskID: String, seq: Int64, type: String, time: Int64, data: String) {
        self.taskID = taskID
        self.seq = seq
        self.type = type
        self.time = time
        self.data = data
    }
}

/// An event to append; the store gives it its sequence number.
public struct NewEvent: Sendable, Equatable {
    public var type: String
    public var time: Int64
    public var data: String

    public init(type: String, time: Int64, data: String = "{}") {
        self.type = type
        self.time = time
        self.data = data
    }
}

/// What a transition changes besides the state.
public struct TaskUpdate: Sendable, Equatable {
    public var time: Int64
    public var reason: String?
    public var session: String?

    public init(time: Int64, reason: String? = nil, session: String? = nil) {
        self.time = time
        self.reason = reason
        self.session = session
    }
}

public enum TransitionResult: Sendable, Equatable {
    case moved(TaskRecord, EventRecord)
    /// The task was not in one of the expected states: nothing changed.
    case conflict(TaskRecord)
    case notFound
}

public enum StoreError: Error, Equatable, CustomStringConvertible {
    case unavailable(String)
    case migration(String)
    /// A cluster write under a lease the host no longer holds (or for a task it no longer owns).
    case fenced(String)

    public var description: String {
        switch self {
        case .fenced(let why): "refused by the store's fence: \(why)"
        case .unavailable(let why): "the task store is unavailable: \(why)"
        case .migration(let why): "the task store's migration failed: \(why)"
        }
    }
}

/// Where tasks and events are kept. Every write that changes a task appends its event in the
/// same transaction: an event is stored before anyone is told, and nothing is stored half-way.
public protocol TaskStore: Sendable {
    /// Brings the schema to the current version (idempotent; concurrent daemons serialize).
    func migrate() async throws
    /// Inserts the task with its first event, unless a task with this id exists: then returns
    /// that one, unchanged, and `created` false.
    func create(_ task: TaskRecord, event: NewEvent) async throws -> (task: TaskRecord, created: Bool)
    func task(_ id: String) async throws -> TaskRecord?
    /// Newest first; `states` nil means all.
    func tasks(states: Set<TaskState>?, limit: Int) async throws -> [TaskRecord]
    /// Moves the task to `to` only if it is in one of `from`, and appends `event`.
    func transition(_ id: String, from: Set<TaskState>, to: TaskState, update: TaskUpdate, event: NewEvent) async throws -> TransitionResult
    /// Appends an event; nil when there is no such task.
    func append(_ id: String, event: NewEvent) async throws -> EventRecord?
    /// Events with seq > `after`, oldest first, at most `limit`.
    func events(_ id: String, after: Int64, limit: Int) async throws -> [EventRecord]
    /// Every queued, starting or running task becomes interrupted, each with `event`.
    func interruptUnfinished(update: TaskUpdate, event: NewEvent) async throws -> [TaskRecord]
    /// Deletes tasks (and their events) that ended before `endedBefore`; returns how many.
    func prune(endedBefore: Int64) async throws -> Int
    func close() async
}
