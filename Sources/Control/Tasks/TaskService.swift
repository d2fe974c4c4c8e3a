import Essentials
import FoundationEssentials
import Kiosk
import Logging
import Metrics
import Store
import ViewerInput

/// Milliseconds since the Unix epoch.
func nowMS() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// The task lifecycle over the store and the sessions. Every change is stored (with its event)
/// before it is announced; reads go straight to the store, outside the actor.
///
/// A service in swift-service-lifecycle's shape: `interruptUnfinished()` once, then `run()`,
/// whose task group holds all the work the service starts (boots, session stops, the deadline
/// loop, the session-event follower, pruning) until it is cancelled. Nothing outlives `run()`.
public actor TaskService {
    public nonisolated let store: any TaskStore
    nonisolated let sessions: any SessionProvider
    public nonisolated let tokens: ViewerTokens
    public nonisolated let limits: TaskLimits
    /// The session a task gets: the host's defaults with the request's overrides.
    nonisolated let template: @Sendable (String, CreateTask) -> SessionSettings
    /// Every stored event, for long polls and streams.
    public nonisolated let appended = Broadcast<EventRecord>()
    /// Every stored state change (the task as stored), for `wait=true`.
    public nonisolated let changes = Broadcast<TaskRecord>()
    /// Tasks holding a slot and waiting for one, after every change of either (a drain waits on it).
    nonisolated let load = Broadcast<(active: Int, queued: Int)>()
    nonisolated let logger: Logger

    /// Work the actor hands to `run()`'s group: it may not start tasks of its own.
    private enum Work: Sendable {
        case boot(TaskRecord, CreateTask)
        case stopSession(String, reason: String)
    }
    private nonisolated let work: AsyncStream<Work>
    private nonisolated let post: AsyncStream<Work>.Continuation
    /// Subscribed at creation, so no session event falls between a boot and `run()`'s follower.
    private nonisolated let sessionEvents: AsyncStream<(session: String, event: SessionEvent)>

    /// Admitted in order, each with its validated request.
    private var queue: [(id: String, request: CreateTask)] = []
    /// Tasks holding a session slot, from admission until their session has ended.
    private var active: Set<String> = []
    private var deadlines = TaskDeadlines()
    /// Set when the deadlines change, to wake the deadline loop.
    private var deadlinesChanged = OnceValue<Void>()
    private var draining = false

    public init(store: any TaskStore, sessions: any SessionProvider, tokens: ViewerTokens, limits: TaskLimits,
                template: @escaping @Sendable (String, CreateTask) -> SessionSettings, logger: Logger) {
        self.store = store
        self.sessions = sessions
        self.tokens = tokens
        self.limits = limits
        self.template = template
        self.logger = logger
        (work, post) = AsyncStream.makeStream(of: Work.self)
        sessionEvents = sessions.sessionEvents.subscribe()
    }

    // MARK: - Life of the service

    /// Marks what a previous run left unfinished as interrupted (its sessions died with it).
    /// Call once, before `run()`; returns the interrupted tasks.
    public func interruptUnfinished() async throws -> [TaskRecord] {
        let now = nowMS()
        let reason = "kioskd restarted while the task was unfinished; its session is gone"
        let interrupted = try await store.interruptUnfinished(
            update: TaskUpdate(time: now, reason: reason),
            event: NewEvent(type: "state_changed", time: now, data: #"{"to":"interrupted","reason":"kioskd restarted"}"#))
        for task in interrupted {
            logger.warning("task interrupted by a restart", metadata: ["task": "\(task.id)"])
        }
        return interrupted
    }

    /// Does the service's work until cancelled, then returns once every piece has ended. Tasks
    /// created before it starts wait in the queue. Running tasks keep their state when it ends
    /// (kioskd is stopping: the next start interrupts them).
    public nonisolated func run() async {
        await recordCapacity()
        await withDiscardingTaskGroup { group in
            group.addTask { await self.followSessions() }
            group.addTask { await self.enforceDeadlines() }
            group.addTask { await self.pruneFinished() }
            // Ends when cancelled.
            for await item in work {
                group.addTask {
                    switch item {
                    case .boot(let task, let request): await self.boot(task, request)
                    case .stopSession(let id, let reason): await self.sessions.stopSession(id, reason: reason)
                    }
                }
            }
            group.cancelAll()
        }
    }

    private func followSessions() async {
        for await (session, event) in sessionEvents { await sessionEvent(session, event) }
    }

    /// Deletes finished tasks past the retention, hourly.
    private nonisolated func pruneFinished() async {
        let retention = Int64(limits.retention.components.seconds * 1000)
        repeat {
            if let pruned = try? await store.prune(endedBefore: nowMS() - retention), pruned > 0 {
                logger.info("pruned finished tasks", metadata: ["count": "\(pruned)"])
            }
        } while (try? await Task.sleep(for: .seconds(3600))) != nil
    }

    /// Sleeps until the next deadline or a change of them; times out what is due.
    private func enforceDeadlines() async {
        while !Task.isCancelled {
            let changed = OnceValue<Void>()
            deadlinesChanged = changed
            let next = deadlines.next ?? .now + .seconds(3600)
            _ = try? await race({ try await changed.wait() }, { try await Task.sleep(until: next, clock: .continuous) })
            for (id, expiry) in deadlines.due(at: .now) {
                switch expiry {
                case .notRunning(let after):
                    if let task = try? await store.task(id), task.state == .queued || task.state == .starting {
                        _ = try? await move(id, .timeOut, reason: "not running after \(after)", data: [:])
                    }
                case .lifetime(let lifetime):
                    _ = try? await move(id, .timeOut, reason: "reached its maximum lifetime of \(lifetime)", data: [:])
                }
            }
        }
    }

    // MARK: - Create

    /// Creates (or, for a known `task_id` with the same request, returns) a task. A new task is
    /// queued and, when a slot is free, starting by the time this returns.
    public func create(_ request: CreateTask) async throws -> (task: TaskRecord, created: Bool) {
        let id = request.taskID ?? "t-" + randomHex(12)
        let now = nowMS()
        let record = TaskRecord(id: id, state: .queued, request: request.canonical, createdAt: now, updatedAt: now)
        if let existing = try await store.task(id) { return try same(existing, request) }
        guard !draining else { throw APIError(.serviceUnavailable, "draining", "this host is draining: it takes no new tasks") }
        let (task, created) = try await store.create(record, event: NewEvent(type: "state_changed", time: now, data: #"{"to":"queued"}"#))
        guard created else { return try same(task, request) }
        if let first = try await store.events(id, after: 0, limit: 1).first { appended.publish(first) }
        changes.publish(task)
        logger.info("task created", metadata: ["task": "\(id)"])
        Counter(label: "kioskd_tasks_created_total").increment()
        deadlines.arm(id, now: .now, startTimeout: request.timeoutSeconds.map { .seconds($0) } ?? limits.startTimeout,
                      lifetime: request.maxLifetimeSeconds.map { .seconds($0) } ?? limits.maxLifetime)
        deadlinesChanged.set(())
        queue.append((id, request))
        await admit()
        return (try await store.task(id) ?? task, true)
    }

    /// A retried create: the same request gets the task; another request with that id is a conflict.
    private nonisolated func same(_ existing: TaskRecord, _ request: CreateTask) throws -> (task: TaskRecord, created: Bool) {
        guard existing.request == request.canonical else {
            throw APIError(.conflict, "task_id_reused", "task '\(existing.id)' exists with a different request; use a new task_id",
                           details: [("state", existing.state.rawValue)])
        }
        return (existing, false)
    }

    /// Starts queued tasks while there are free slots.
    private func admit() async {
        while active.count < limits.maxSessions, !queue.isEmpty {
            let (id, request) = queue.removeFirst()
            active.insert(id)
            guard case .moved(let task, _)? = try? await move(id, .begin, data: [:]) else {
                active.remove(id)
                continue
            }
            post.yield(.boot(task, request))
        }
        recordCapacity()
    }

    /// The capacity as gauges, for the autoscaler and the alerts (docs/metrics.md), and on `load`.
    private func recordCapacity() {
        load.publish((active.count, queue.count))
        Gauge(label: "kioskd_tasks_active").record(active.count)
        Gauge(label: "kioskd_tasks_queued").record(queue.count)
        Gauge(label: "kioskd_sessions_max").record(limits.maxSessions)
        Gauge(label: "kioskd_draining").record(draining ? 1 : 0)
    }

    /// Boots the task's session; the task is running once it is ready, failed if it cannot be.
    private func boot(_ task: TaskRecord, _ request: CreateTask) async {
        let id = task.id
        await note(id, "session_booting", [:])
        do {
            let info = try await sessions.startSession(template(id, request))
            var session = JSONWriter()
            session.field("cdp_url", info.cdpURL)
            session.field("display", info.display)
            session.field("viewer_path", "/viewer?task_id=\(id)")
            session.field("vnc_ws_path", "/api/v1/vnc/ws?task_id=\(id)")
            let outcome = try? await move(id, .ready, session: session.text, data: ["session": session.text])
            if case .moved? = outcome { return }
            // Cancelled or timed out while booting: the session is not wanted any more.
            await sessions.stopSession(id, reason: "task \(id) ended while its session booted")
        } catch {
            // kioskd is stopping: the task stays starting, and the next start interrupts it.
            guard !Task.isCancelled else { return }
            logger.warning("task's session failed to start", metadata: ["task": "\(id)", "reason": "\(error)"])
            _ = try? await move(id, .fail, reason: "\(error)", data: [:])
            await release(id)
        }
    }

    // MARK: - Commands

    /// Applies an API command (complete, fail, cancel); 409 with the current state when the
    /// lifecycle does not allow it.
    public func command(_ id: String, _ command: TaskCommand, reason: String?, result: String? = nil) async throws -> TaskRecord {
        var data: [String: String] = [:]
        if let result { data["result"] = result }
        switch try await move(id, command, reason: reason, data: data) {
        case .moved(let task, _): return task
        case .conflict(let task):
            throw APIError(.conflict, "illegal_transition", "cannot \(command.rawValue) a task that is \(task.state.rawValue)",
                           details: [("state", task.state.rawValue)])
        case .notFound: throw APIError.notFound(id)
        }
    }

    /// One lifecycle step, stored with its `state_changed` event (raw JSON `data` fields
    /// included), retried if the state changed underneath. A final state ends the session.
    @discardableResult
    private func move(_ id: String, _ command: TaskCommand, reason: String? = nil, session: String? = nil,
                      data: [String: String]) async throws -> TransitionResult {
        for _ in 0..<5 {
            guard let task = try await store.task(id) else { return .notFound }
            guard let to = TaskLifecycle.next(task.state, command) else { return .conflict(task) }
            let now = nowMS()
            var event = JSONWriter()
            event.field("from", task.state.rawValue)
            event.field("to", to.rawValue)
            if let reason { event.field("reason", reason) }
            for (k, v) in data.sorted(by: { $0.key < $1.key }) { event.raw(k, v) }
            let result = try await store.transition(id, from: [task.state], to: to, update: TaskUpdate(time: now, reason: reason, session: session),
                                                    event: NewEvent(type: "state_changed", time: now, data: event.text))
            guard case .moved(let moved, let stored) = result else {
                if case .conflict = result { continue }
                return result
            }
            appended.publish(stored)
            changes.publish(moved)
            logger.info("task \(to.rawValue)", metadata: ["task": "\(id)", "from": "\(task.state.rawValue)"])
            if to.isFinal {
                Counter(label: "kioskd_tasks_finished_total", dimensions: [("state", to.rawValue)]).increment()
                await finished(moved)
            }
            return result
        }
        guard let task = try await store.task(id) else { return .notFound }
        return .conflict(task)
    }

    /// A final state: no more deadlines; the session (if any) is stopped, and its slot is given
    /// back when it has ended.
    private func finished(_ task: TaskRecord) async {
        deadlines.remove(task.id)
        queue.removeAll { $0.id == task.id }
        recordCapacity()
        guard active.contains(task.id) else { return }
        let id = task.id, state = task.state
        if task.session == nil && state != .cancelled && state != .timedOut && state != .interrupted {
            // It never had a session (a boot failure): nothing to wait for.
            await release(id)
            return
        }
        post.yield(.stopSession(id, reason: "task \(id) is \(state.rawValue)"))
    }

    private func release(_ id: String) async {
        guard active.remove(id) != nil else { return }
        await admit()
    }

    // MARK: - Session events

    private func sessionEvent(_ id: String, _ event: SessionEvent) async {
        guard active.contains(id) else { return }
        if let (type, fields) = event.taskEvent { await note(id, type, fields) }
        guard case .ended(let end) = event else { return }
        if let task = try? await store.task(id), !task.state.isFinal {
            _ = try? await move(id, end.failed ? .fail : .cancel, reason: "session ended: \(end.reason)", data: [:])
        }
        await release(id)
    }

    /// Appends one of kioskd's own events (string fields).
    private func note(_ id: String, _ type: String, _ fields: [String: String]) async {
        var data = JSONWriter()
        for (k, v) in fields.sorted(by: { $0.key < $1.key }) { data.field(k, v) }
        if let stored = try? await store.append(id, event: NewEvent(type: type, time: nowMS(), data: data.text)) {
            appended.publish(stored)
        }
    }

    // MARK: - Events, tokens, drain

    /// Appends an event the API layer sends (an agent step): stored, then acknowledged.
    public nonisolated func append(_ id: String, type: String, data: String) async throws -> EventRecord {
        guard let stored = try await store.append(id, event: NewEvent(type: type, time: nowMS(), data: data)) else { throw APIError.notFound(id) }
        appended.publish(stored)
        return stored
    }

    /// Events after `since`; with `wait`, holds the request until one arrives or the wait ends.
    public nonisolated func events(_ id: String, since: Int64, limit: Int, wait: Duration?) async throws -> [EventRecord] {
        let updates = wait.map { _ in appended.subscribe() }
        var found = try await store.events(id, after: since, limit: limit)
        if found.isEmpty {
            guard try await store.task(id) != nil else { throw APIError.notFound(id) }
            if let updates, let wait {
                _ = try? await withTimeout(min(wait, limits.waitLimit), "events") {
                    for await e in updates where e.taskID == id && e.seq > since { return e }
                    throw CancellationError()
                }
                found = try await store.events(id, after: since, limit: limit)
            }
        }
        return found
    }

    public nonisolated func task(_ id: String) async throws -> TaskRecord {
        guard let task = try await store.task(id) else { throw APIError.notFound(id) }
        return task
    }

    /// Waits (bounded) until the task is running or final.
    public nonisolated func waitRunning(_ id: String, timeout: Duration) async throws -> TaskRecord {
        let updates = changes.subscribe()
        let task = try await self.task(id)
        guard task.state != .running, !task.state.isFinal else { return task }
        if let changed = try? await withTimeout(min(timeout, limits.waitLimit), "running", {
            for await t in updates where t.id == id && (t.state == .running || t.state.isFinal) { return t }
            throw CancellationError()
        }) {
            return changed
        }
        return try await self.task(id)
    }

    public nonisolated func viewerToken(_ id: String, role: ViewerRole, ttl: Int) async throws -> ViewerToken {
        let task = try await self.task(id)
        guard !task.state.isFinal else {
            throw APIError(.conflict, "task_finished", "task '\(id)' is \(task.state.rawValue): no viewer can join it", details: [("state", task.state.rawValue)])
        }
        return try await tokens.mint(task: id, role: role, ttl: ttl)
    }

    /// Takes no new tasks from now on; running ones go on.
    public func drain() -> (active: Int, queued: Int) {
        draining = true
        recordCapacity()
        logger.notice("draining: no new tasks")
        return (active.count, queue.count)
    }

    /// Waits (bounded) until no task holds a slot or waits for one — a session's slot is given
    /// back once it has ended, after its task's final state. Returns what is left.
    public nonisolated func waitDrained(timeout: Duration) async -> (active: Int, queued: Int) {
        let updates = load.subscribe()
        let now = await capacity()
        guard now.active + now.queued > 0 else { return (now.active, now.queued) }
        if let left = try? await withTimeout(timeout, "the last task to end", {
            for await left in updates where left.active + left.queued == 0 { return left }
            throw CancellationError()
        }) {
            return left
        }
        let left = await capacity()
        return (left.active, left.queued)
    }

    public func capacity() -> Capacity {
        Capacity(max: limits.maxSessions, active: active.count, queued: queue.count, draining: draining)
    }
}
