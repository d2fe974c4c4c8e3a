/// A host's right to write for the tasks it claimed: its id and the epoch of its current lease.
/// Every owner's write carries it; the store refuses it once the lease is gone (expired, or
/// replaced by the host's next registration), so a host cut off cannot change a task any more.
public struct Fence: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let epoch: Int64

    public init(host: String, epoch: Int64) {
        self.host = host
        self.epoch = epoch
    }

    public var description: String { "\(host)@\(epoch)" }
}

/// What a host tells the others at each heartbeat about its room.
public struct HostLoad: Sendable, Equatable {
    public var maxSessions: Int
    public var active: Int
    public var available: Int
    public var draining: Bool

    public init(maxSessions: Int, active: Int, available: Int, draining: Bool) {
        self.maxSessions = maxSessions
        self.active = active
        self.available = available
        self.draining = draining
    }
}

/// A host as the store knows it. Times are the store's clock (milliseconds since the epoch).
public struct HostRecord: Sendable, Equatable {
    public var id: String
    public var address: String
    public var version: String
    public var epoch: Int64
    public var startedAt: Int64
    public var renewedAt: Int64
    public var leaseUntil: Int64
    public var load: HostLoad
}

/// The hosts and the queue at one moment of the store's clock.
public struct ClusterView: Sendable, Equatable {
    public var now: Int64
    public var hosts: [HostRecord]
    /// Tasks in the shared queue (not claimed), and the age of the oldest.
    public var queued: Int
    public var oldestQueuedMS: Int64?
    /// Tasks claimed by a host: not started yet, and starting or running.
    public var claimed: Int
    public var running: Int

    public func alive(_ host: HostRecord) -> Bool { host.leaseUntil > now }
    public var live: [HostRecord] { hosts.filter(alive) }
}

/// A change another host made, heard through LISTEN/NOTIFY (a hint: the store stays the truth).
public enum ClusterChange: Sendable, Equatable {
    case task(id: String, state: TaskState, host: String?)
    case event(taskID: String, seq: Int64)
}

/// What a rescue did with one task of a host whose lease is gone.
public struct Rescued: Sendable, Equatable {
    public var task: TaskRecord
    /// The host it was taken from.
    public var host: String
    /// true: running or starting, now interrupted; false: claimed but not started, queued again.
    public var interrupted: Bool
    public var event: EventRecord
}

/// The shared state of cluster mode: membership by lease, one queue claimed with SKIP LOCKED,
/// fenced writes, rescue. PostgreSQL only (SQLite is one host's store).
public protocol ClusterStore: TaskStore {
    /// Registers (or re-registers) the host with a new epoch and a lease of `ttlMS`.
    func register(host: String, address: String, version: String, load: HostLoad, ttlMS: Int64) async throws -> Fence
    /// Extends the lease; false when it is gone (expired or replaced): the host must stop what
    /// it owns and register again.
    func renew(_ fence: Fence, load: HostLoad, ttlMS: Int64) async throws -> Bool
    /// Ends the lease now (a clean stop): the host's work is rescued by the next heartbeat anywhere.
    func leave(_ fence: Fence) async throws
    func view() async throws -> ClusterView
    /// Claims up to `limit` queued tasks for the fence's host, oldest first, its own (created
    /// there) first and others' once they waited `graceMS`; each gets a `claimed` event. None
    /// when the lease is gone.
    func claim(_ fence: Fence, limit: Int, graceMS: Int64) async throws -> [TaskRecord]
    /// The queued tasks claimed under `fence`: a claim whose answer the host gave up waiting
    /// for may still have committed.
    func claimed(_ fence: Fence) async throws -> [String]
    /// Puts the host's claimed-but-not-started tasks back in the queue (a drain); returns them.
    func requeue(_ fence: Fence, ids: [String], reason: String) async throws -> [Rescued]
    /// Interrupts the running tasks and requeues the unstarted claims of every host whose
    /// lease is gone, or whose tasks belong to an epoch it no longer holds.
    func rescue() async throws -> [Rescued]
    /// A transition or an event by the task's owner: refused (`StoreError.fenced`) unless the
    /// task is claimed under `fence` and its lease is current.
    func transition(_ id: String, from: Set<TaskState>, to: TaskState, update: TaskUpdate, event: NewEvent, fence: Fence) async throws -> TransitionResult
    func append(_ id: String, event: NewEvent, fence: Fence) async throws -> EventRecord?
    /// Every change any host makes, for as long as the caller iterates (reconnects by itself).
    func changes() -> AsyncStream<ClusterChange>
}
