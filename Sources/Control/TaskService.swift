import Display
import FoundationEssentials
import Kiosk
import Logging
import Metrics
import Store
import Supervision

/// Limits and defaults of the task service (config `tasks.*`).
public struct TaskLimits: Sendable, Equatable {
    /// Sessions running at once on this host; later tasks wait in `queued`.
    public var maxSessions = 8
    /// Default `timeout_s`: how long a task may take to be running.
    public var startTimeout = Duration.seconds(120)
    /// Default `max_lifetime_s`, counted from creation.
    public var maxLifetime = Duration.seconds(3600)
    /// Finished tasks and their events are deleted this long after they end.
    public var retention = Duration.seconds(7 * 86400)
    /// The longest a request waits (`?wait=`): API gateways cut requests at 29 s.
    public var waitLimit = Duration.seconds(25)

    public init() {}
}

/// Milliseconds since the Unix epoch.
func nowMS() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// The task lifecycle over the store and the sessions. Every change is stored (with its event)
/// before it is announced; reads go straight to the store, outside the actor.
public actor TaskService {
    public nonisolated let store: any TaskStore
    nonisolated let sessions: any SessionProvider
    public nonisolated let tokens: ViewerTokens
    public nonisolated let limits: TaskLimits
    /// The session a task gets: the host's defaults with the request's overrides.
    nonisolated let template: @Sendable (String, CreateTask) -> SessionSettings
    /// Every stored event, for long polls and streams.
    public nonisolated let appended = Broadcast<EventRecord>()
    nonisolated let logger: Logger

    private var queue: [String] = []
    /// Tasks holding a session slot, from admission until their session has ended.
    private var active: Set<String> = []
    private var timers: [String: Task<Void, Never>] = [:]
    private var draining = false
    private var background: [Task<Void, Never>] = []

    public init(store: any TaskStore, sessions: any SessionProvider, tokens: ViewerTokens, limits: TaskLimits,
                template: @escaping @Sendable (String, CreateTask) -> SessionSettings, logger: Logger) {
        self.store = store
        self.sessions = sessions
        self.tokens = tokens
        self.limits = limits
        self.template = template
        self.logger = logger
    }

    // MARK: - Life of the service

    /// Marks what a previous run left unfinished as interrupted, then follows the sessions'
    /// events and prunes old tasks. Returns the interrupted tasks.
    public func start() async throws -> [TaskRecord] {
        let now = nowMS()
        let reason = "kioskd restarted while the task was unfinished; its session is gone"
        let interrupted = try await store.interruptUnfinished(
            update: TaskUpdate(time: now, reason: reason),
            event: NewEvent(type: "state_changed", time: now, data: #"{"to":"interrupted","reason":"kioskd restarted"}"#))
        for task in interrupted {
            logger.warning("task interrupted by a restart", metadata: ["task": "\(task.id)"])
        }
        let stream = sessions.sessionEvents.subscribe()
        background.append(Task { [weak self] in
            for await (session, event) in stream { await self?.sessionEvent(session, event) }
        })
        let retention = limits.retention
        background.append(Task { [weak self] in
            while !Task.isCancelled {
                if let self {
                    let cutoff = nowMS() - Int64(retention.components.seconds * 1000)
                    if let pruned = try? await self.store.prune(endedBefore: cutoff), pruned > 0 {
                        self.logger.info("pruned finished tasks", metadata: ["count": "\(pruned)"])
                    }
                }
                try? await Task.sleep(for: .seconds(3600))
            }
        })
        return interrupted
    }

    /// Stops following sessions; running tasks keep their state (a restart interrupts them).
    public func shutdown() {
        for task in background { task.cancel() }
        for timer in timers.values { timer.cancel() }
        background = []
        timers = [:]
    }

    // MARK: - Create

    /// Creates (or, for a known `task_id` with the same request, returns) a task. A new task is
    /// queued and, when a slot is free, starting by the time this returns.
    public func create(_ request: CreateTask) async throws -> (task: TaskRecord, created: Bool) {
        let id = request.taskID ?? Self.newID()
        let now = nowMS()
        let record = TaskRecord(id: id, state: .queued, request: request.canonical, createdAt: now, updatedAt: now)
        if let existing = try await store.task(id) { return try same(existing, request) }
        guard !draining else { throw APIError(.serviceUnavailable, "draining", "this host is draining: it takes no new tasks") }
        let (task, created) = try await store.create(record, event: NewEvent(type: "state_changed", time: now, data: #"{"to":"queued"}"#))
        guard created else { return try same(task, request) }
        if let first = try await store.events(id, after: 0, limit: 1).first { appended.publish(first) }
        logger.info("task created", metadata: ["task": "\(id)"])
        Counter(label: "kioskd_tasks_created_total").increment()
        arm(task, request)
        queue.append(id)
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

    private static func newID() -> String {
        var rng = SystemRandomNumberGenerator()
        return "t-" + (0..<12).map { _ in String(UInt8.random(in: 0...255, using: &rng), radix: 16).leftPadded(2) }.joined()
    }

    /// Starts queued tasks while there are free slots.
    private func admit() async {
        while active.count < limits.maxSessions, !queue.isEmpty {
            let id = queue.removeFirst()
            active.insert(id)
            guard case .moved(let task, _)? = try? await move(id, .begin, data: [:]) else {
                active.remove(id)
                continue
            }
            Task { await self.boot(task) }
        }
    }

    /// Boots the task's session; the task is running once it is ready, failed if it cannot be.
    private func boot(_ task: TaskRecord) async {
        let id = task.id
        let request = (try? CreateTask(body: Array(task.request.utf8))) ?? CreateTask(url: "about:blank")
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
            logger.warning("task's session failed to start", metadata: ["task": "\(id)", "reason": "\(error)"])
            _ = try? await move(id, .fail, reason: "\(error)", data: [:])
            release(id)
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
            logger.info("task \(to.rawValue)", metadata: ["task": "\(id)", "from": "\(task.state.rawValue)"])
            if to.isFinal { Counter(label: "kioskd_tasks_finished_total", dimensions: [("state", to.rawValue)]).increment() }
            if to.isFinal { finished(moved) }
            return result
        }
        guard let task = try await store.task(id) else { return .notFound }
        return .conflict(task)
    }

    /// A final state: no more timers; the session (if any) is stopped, and its slot is given
    /// back when it has ended.
    private func finished(_ task: TaskRecord) {
        timers.removeValue(forKey: task.id)?.cancel()
        if let i = queue.firstIndex(of: task.id) { queue.remove(at: i) }
        guard active.contains(task.id) else { return }
        let sessions = self.sessions, id = task.id, state = task.state
        if task.session == nil && state != .cancelled && state != .timedOut && state != .interrupted {
            // It never had a session (a boot failure): nothing to wait for.
            release(id)
            return
        }
        Task { await sessions.stopSession(id, reason: "task \(id) is \(state.rawValue)") }
    }

    private func release(_ id: String) {
        guard active.remove(id) != nil else { return }
        Task { await self.admit() }
    }

    /// Per-task deadlines: running within `timeout_s`, and at most `max_lifetime_s` in all.
    private func arm(_ task: TaskRecord, _ request: CreateTask) {
        let start = request.timeoutSeconds.map { Duration.seconds($0) } ?? limits.startTimeout
        let lifetime = request.maxLifetimeSeconds.map { Duration.seconds($0) } ?? limits.maxLifetime
        let id = task.id
        timers[id] = Task { [weak self] in
            do {
                if start < lifetime {
                    try await Task.sleep(for: start)
                    if let task = try? await self?.store.task(id), task.state == .queued || task.state == .starting {
                        _ = try? await self?.move(id, .timeOut, reason: "not running after \(start)", data: [:])
                    }
                }
                try await Task.sleep(for: lifetime - min(start, lifetime))
                _ = try? await self?.move(id, .timeOut, reason: "reached its maximum lifetime of \(lifetime)", data: [:])
            } catch {}
        }
    }

    // MARK: - Session events

    private func sessionEvent(_ id: String, _ event: SessionEvent) async {
        guard active.contains(id) else { return }
        switch event {
        case .supervision(let e):
            switch e.kind {
            case .exited(let child, let reason, let again):
                await note(id, "process_exited", ["child": child, "reason": "\(reason)", "restart": again ? "true" : "false"])
            case .starting(let child, let generation) where generation > 1:
                await note(id, "process_restarted", ["child": child, "generation": "\(generation)"])
            default:
                break
            }
        case .browser(let b):
            await note(id, "browser", ["message": b.description])
        case .lockdown(let l):
            switch l {
            case .blocked(let combo, let purpose): await note(id, "key_blocked", ["combo": combo, "purpose": purpose.rawValue])
            case .windowClosed(_, let name): await note(id, "window_closed", ["name": name])
            case .inputReleased(let keys, let buttons):
                await note(id, "input_released", ["keys": keys.joined(separator: " "), "buttons": buttons.map(String.init).joined(separator: " ")])
            case .regrabbed(let n): await note(id, "keymap_regrabbed", ["grabs": "\(n)"])
            }
        case .ready:
            await note(id, "session_ready", [:])
        case .ended(let end):
            await note(id, "session_ended", ["reason": end.reason, "failed": end.failed ? "true" : "false"])
            if let task = try? await store.task(id), !task.state.isFinal {
                _ = try? await move(id, end.failed ? .fail : .cancel, reason: "session ended: \(end.reason)", data: [:])
            }
            release(id)
        }
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
        let updates = appended.subscribe()
        var task = try await self.task(id)
        guard task.state != .running, !task.state.isFinal else { return task }
        _ = try? await withTimeout(min(timeout, limits.waitLimit), "running") {
            for await e in updates where e.taskID == id && e.type == "state_changed" {
                if e.data.contains(#""to":"running""#) || TaskState.allCases.contains(where: { $0.isFinal && e.data.contains(#""to":"\#($0.rawValue)""#) }) { return }
            }
        }
        task = try await self.task(id)
        return task
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
        logger.notice("draining: no new tasks")
        return (active.count, queue.count)
    }

    public func capacity() -> (max: Int, active: Int, queued: Int, draining: Bool) {
        (limits.maxSessions, active.count, queue.count, draining)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
