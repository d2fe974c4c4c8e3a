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
    /// A warm session under the given id: the host's defaults at about:blank.
    nonisolated let warmTemplate: @Sendable (String) -> SessionSettings
    /// Host memory pressure (PSI some avg10); nil where PSI is off.
    nonisolated let hostPressure: @Sendable () -> Double?
    /// Every stored event, for long polls and streams.
    public nonisolated let appended = Broadcast<EventRecord>()
    /// Every stored state change (the task as stored), for `wait=true`.
    public nonisolated let changes = Broadcast<TaskRecord>()
    /// Tasks holding a slot and waiting for one, after every change of either (a drain waits on it).
    nonisolated let load = Broadcast<(active: Int, queued: Int)>()
    /// How often sessions are measured and host pressure read.
    static let sampleInterval = Duration.seconds(2)
    nonisolated let logger: Logger
    /// Cluster mode: the shared queue, the lease and its fence (TaskService+Cluster); nil on one host.
    public nonisolated let cluster: ClusterLink?

    /// Work the actor hands to `run()`'s group: it may not start tasks of its own.
    enum Work: Sendable {
        /// Boot the task's session, or give it the warm session named.
        case boot(TaskRecord, CreateTask, warm: String?)
        case bootWarm(String)
        case stopSession(String, reason: String)
        /// Let the pool refill again after a failed warm boot, once this has passed.
        case resumeWarm(after: Duration)
    }
    private nonisolated let work: AsyncStream<Work>
    nonisolated let post: AsyncStream<Work>.Continuation
    /// Subscribed at creation, so no session event falls between a boot and `run()`'s follower.
    private nonisolated let sessionEvents: AsyncStream<(session: String, event: SessionEvent)>

    /// Who may start: slots, memory, pressure, the queue and the warm pool (decisions only).
    var admission: Admission
    /// Queued tasks' validated requests.
    var requests: [String: CreateTask] = [:]
    /// The session of each task that took a warm one (which keeps its own id), and back.
    var warmSessionOf: [String: String] = [:]
    private var taskOfSession: [String: String] = [:]
    /// Warm boots that failed in a row: the pool waits longer after each.
    private var warmFailures = 0
    private var warmPaused = false
    /// Warm sessions opening their task's page: the pool refills once none is, so a new
    /// session's boot does not take the CPU from the task that is starting.
    private var adopting = 0
    /// When each task with a session became running.
    private var runningSince: [String: ContinuousClock.Instant] = [:]
    var deadlines = TaskDeadlines()
    /// Set when the deadlines change, to wake the deadline loop.
    var deadlinesChanged = OnceValue<Void>()
    /// Tasks whose session is being stopped after their final state (that state may be stored
    /// by another host too: the session is stopped once).
    var stopping: Set<String> = []
    /// Cluster mode: when this host's lease ends unless renewed (its own clock, from the
    /// renewal's sending, so it ends here before the store ends it), and the claimer's turn.
    var leaseExpiry = ContinuousClock.now
    var claiming = false
    var claimAgain = false

    /// `budget`: bytes the sessions may use together (`HostMemory.budget`); nil: unbounded.
    public init(store: any TaskStore, sessions: any SessionProvider, tokens: ViewerTokens, limits: TaskLimits,
                capacity: CapacitySettings = CapacitySettings(), budget: UInt64? = nil,
                template: @escaping @Sendable (String, CreateTask) -> SessionSettings,
                warmTemplate: (@Sendable (String) -> SessionSettings)? = nil,
                hostPressure: @escaping @Sendable () -> Double? = { HostMemory.pressure() }, cluster: ClusterLink? = nil, logger: Logger) {
        self.cluster = cluster
        self.store = store
        self.sessions = sessions
        self.tokens = tokens
        self.limits = limits
        self.template = template
        let warmTemplate = warmTemplate ?? { id in template(id, CreateTask(url: "about:blank")) }
        self.warmTemplate = warmTemplate
        self.hostPressure = hostPressure
        admission = Admission(Admission.Settings(
            maxSessions: limits.maxSessions, maxQueued: limits.maxQueued, budget: budget ?? .max,
            initialEstimate: capacity.sessionEstimate, pressureHigh: capacity.pressureHigh, pressureLow: capacity.pressureLow,
            warm: capacity.warm, warmShape: warmTemplate("").shape, maxYoung: capacity.maxStarting))
        self.logger = logger
        (work, post) = AsyncStream.makeStream(of: Work.self)
        sessionEvents = sessions.sessionEvents.subscribe()
    }

    // MARK: - Life of the service

    /// Marks what a previous run left unfinished as interrupted (its sessions died with it).
    /// Call once, before `run()`; returns the interrupted tasks.
    public func interruptUnfinished() async throws -> [TaskRecord] {
        // The store is shared: only this host's own earlier tasks are its to end.
        if cluster != nil { return try await joinCluster() }
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
            group.addTask { await self.sample() }
            if let cluster {
                group.addTask { await self.heartbeat() }
                group.addTask { await self.followCluster() }
                group.addTask { for await _ in cluster.wake { await self.claimCycle() } }
            }
            await self.step()
            // Ends when cancelled.
            for await item in work {
                group.addTask {
                    switch item {
                    case .boot(let task, let request, let warm): await self.boot(task, request, warm: warm)
                    case .bootWarm(let id): await self.bootWarm(id)
                    case .stopSession(let id, let reason): await self.sessions.stopSession(id, reason: reason)
                    case .resumeWarm(let after):
                        guard (try? await Task.sleep(for: after)) != nil else { return }
                        await self.resumeWarm()
                    }
                }
            }
            group.cancelAll()
        }
        await leaveCluster()
    }

    private func followSessions() async {
        for await (session, event) in sessionEvents { await sessionEvent(session, event) }
    }

    /// Measures the sessions and reads host pressure every `sampleInterval`: admission learns the
    /// estimate from the peaks and waits while pressure is high.
    private func sample() async {
        repeat {
            let readings = await sessions.sessionMemory()
            let now = ContinuousClock.now
            for (id, since) in runningSince { admission.running(id, for: now - since) }
            for (session, reading) in readings {
                // Learned from the working sets it sees, not the kernel's peak: that one counts
                // the file cache a session was charged for, which is reclaimed before any kill.
                admission.measured(taskOfSession[session] ?? session, usage: reading.current, peak: reading.current)
            }
            admission.observe(pressure: hostPressure() ?? 0)
            await step()
        } while (try? await Task.sleep(for: Self.sampleInterval)) != nil
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
                        let why = task.state == .queued ? "; it waited in the queue (\(admission.capacity.reason ?? "no room"))" : ""
                        _ = try? await move(id, .timeOut, reason: "not running after \(after)" + why, data: [:])
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
        let record = TaskRecord(id: id, state: .queued, request: request.canonical, createdAt: now, updatedAt: now, origin: cluster?.hostID)
        if let existing = try await store.task(id) { return try same(existing, request) }
        let settings = template(id, request)
        if let refusal = cluster != nil ? clusterRefusal(limit: settings.limits.memoryMax) : admission.refusal(limit: settings.limits.memoryMax) {
            throw Self.error(refusal)
        }
        let (task, created) = try await store.create(record, event: NewEvent(type: "state_changed", time: now, data: #"{"to":"queued"}"#))
        guard created else { return try same(task, request) }
        if let first = try await store.events(id, after: 0, limit: 1).first { appended.publish(first) }
        changes.publish(task)
        logger.info("task created", metadata: ["task": "\(id)"])
        Counter(label: "kioskd_tasks_created_total").increment()
        deadlines.arm(id, now: .now, startTimeout: request.timeoutSeconds.map { .seconds($0) } ?? limits.startTimeout,
                      lifetime: request.maxLifetimeSeconds.map { .seconds($0) } ?? limits.maxLifetime)
        deadlinesChanged.set(())
        if cluster != nil {
            // Into the shared queue; this host claims it at once if it has room.
            await claimCycle()
            return (try await store.task(id) ?? task, true)
        }
        requests[id] = request
        admission.enqueue(id, shape: settings.shape, limit: settings.limits.memoryMax)
        await step()
        return (try await store.task(id) ?? task, true)
    }

    /// A refused create, as the API answers it: 503 with Retry-After where waiting helps.
    static func error(_ refusal: Admission.Refusal) -> APIError {
        let mib = { (bytes: UInt64) in "\(bytes >> 20) MiB" }
        switch refusal {
        case .draining:
            return APIError(.serviceUnavailable, "draining", "this host is draining: it takes no new tasks", retryAfter: Capacity.retryAfterSeconds)
        case .queueFull(let limit):
            return APIError(.serviceUnavailable, "queue_full", "\(limit) tasks already wait for room on this host; try again later",
                            retryAfter: Capacity.retryAfterSeconds)
        case .tooLarge(let needs, let budget):
            return APIError(.serviceUnavailable, "over_budget",
                            "a session is expected to need \(mib(needs)), more than this host's session memory budget of \(mib(budget))")
        }
    }

    /// A retried create: the same request gets the task; another request with that id is a conflict.
    private nonisolated func same(_ existing: TaskRecord, _ request: CreateTask) throws -> (task: TaskRecord, created: Bool) {
        guard existing.request == request.canonical else {
            throw APIError(.conflict, "task_id_reused", "task '\(existing.id)' exists with a different request; use a new task_id",
                           details: [("state", existing.state.rawValue)])
        }
        return (existing, false)
    }

    /// Carries out what admission decides now: starts, warm boots, warm sessions given up.
    func step() async {
        var actions = admission.next(newWarmID: { "w-" + randomHex(6) })
        // A task taking a warm session in this very step counts as adopting already.
        if warmPaused || adopting > 0 || actions.contains(where: { if case .start(_, .some) = $0 { true } else { false } }) {
            actions.removeAll { if case .bootWarm(let id) = $0 { admission.released(id); return true } else { return false } }
        }
        for action in actions {
            switch action {
            case .start(let id, let warm):
                guard let request = requests.removeValue(forKey: id),
                      case .moved(let task, _)? = try? await move(id, .begin, data: warm.map { ["warm_session": "\"\($0)\""] } ?? [:]) else {
                    // It ended while it waited (the deadline loop or a cancel raced the start).
                    if let warm { admission.released(id); post.yield(.stopSession(warm, reason: "its task ended before it started")) }
                    else { admission.released(id) }
                    continue
                }
                if let warm {
                    warmSessionOf[id] = warm
                    taskOfSession[warm] = id
                    adopting += 1
                }
                post.yield(.boot(task, request, warm: warm))
            case .bootWarm(let id):
                post.yield(.bootWarm(id))
            case .giveUpWarm(let id):
                logger.info("giving up a warm session", metadata: ["session": "\(id)", "reason": "\(admission.capacity.reason ?? "room")"])
                post.yield(.stopSession(id, reason: "the warm pool gives it up"))
            }
        }
        recordCapacity()
    }

    /// The capacity as gauges, for the autoscaler and the alerts (docs/metrics.md), and on `load`.
    private func recordCapacity() {
        let c = admission.capacity
        load.publish((c.active, c.queued))
        Gauge(label: "kioskd_tasks_active").record(c.active)
        Gauge(label: "kioskd_tasks_queued").record(c.queued)
        Gauge(label: "kioskd_sessions_max").record(c.max)
        Gauge(label: "kioskd_sessions").record(c.sessions)
        Gauge(label: "kioskd_tasks_available").record(c.available)
        Gauge(label: "kioskd_warm_sessions").record(c.warmReady)
        Gauge(label: "kioskd_draining").record(c.draining ? 1 : 0)
        Gauge(label: "kioskd_accepting").record(c.accepting ? 1 : 0)
        Gauge(label: "kioskd_memory_budget_bytes").record(Int64(clamping: c.budget))
        Gauge(label: "kioskd_memory_used_bytes").record(Int64(clamping: c.used))
        Gauge(label: "kioskd_memory_committed_bytes").record(Int64(clamping: c.committed))
        Gauge(label: "kioskd_session_memory_estimate_bytes").record(Int64(clamping: c.estimate))
        Gauge(label: "kioskd_memory_pressure").record(c.pressure)
    }

    /// Boots a warm session; ready, it waits in the pool for a task of its shape.
    private func bootWarm(_ id: String) async {
        do {
            _ = try await sessions.startSession(warmTemplate(id))
            warmFailures = 0
            if admission.holdsLeaving(id) {
                // Given up while it booted.
                post.yield(.stopSession(id, reason: "the warm pool gives it up"))
            } else {
                admission.warmBooted(id)
                logger.info("warm session ready", metadata: ["session": "\(id)"])
            }
        } catch {
            guard !Task.isCancelled else { return }
            warmFailures += 1
            let wait = Duration.seconds(min(60, 1 << min(warmFailures, 6)))
            logger.warning("a warm session failed to start; the pool waits before it tries again",
                           metadata: ["session": "\(id)", "reason": "\(error)", "retry_in": "\(wait)"])
            admission.released(id)
            warmPaused = true
            post.yield(.resumeWarm(after: wait))
        }
        await step()
    }

    /// The warm session opens the task's page; then the pool may refill.
    private func adopt(_ warm: String, by id: String, url: String) async throws -> SessionInfo {
        defer { adopting -= 1 }
        return try await sessions.adoptSession(warm, by: id, url: url)
    }

    private func resumeWarm() async {
        warmPaused = false
        await step()
    }

    /// Boots the task's session (or opens its page in the warm session it took); the task is
    /// running once it is ready, failed if it cannot be.
    private func boot(_ task: TaskRecord, _ request: CreateTask, warm: String?) async {
        let id = task.id
        await note(id, "session_booting", warm.map { ["warm_session": $0] } ?? [:])
        do {
            let info = if let warm {
                try await adopt(warm, by: id, url: request.url)
            } else {
                try await sessions.startSession(template(id, request))
            }
            var session = JSONWriter()
            session.field("cdp_url", info.cdpURL)
            session.field("display", info.display)
            session.field("viewer_path", "/viewer?task_id=\(id)")
            session.field("vnc_ws_path", "/api/v1/vnc/ws?task_id=\(id)")
            session.field("cdp_ws_path", "/api/v1/cdp/ws?task_id=\(id)")
            let outcome = try? await move(id, .ready, session: session.text, data: ["session": session.text])
            if case .moved? = outcome { runningSince[id] = .now }
            // The pool waited for this task's page: it may refill now.
            if warm != nil { await step() }
            if case .moved? = outcome { return }
            // Cancelled or timed out while booting: the session is not wanted any more.
            await sessions.stopSession(warm ?? id, reason: "task \(id) ended while its session booted")
        } catch {
            // kioskd is stopping: the task stays starting, and the next start interrupts it.
            guard !Task.isCancelled else { return }
            logger.warning("task's session failed to start", metadata: ["task": "\(id)", "reason": "\(error)"])
            _ = try? await move(id, .fail, reason: "\(error)", data: [:])
            if let warm { await sessions.stopSession(warm, reason: "its task failed to open its page") }
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
    func move(_ id: String, _ command: TaskCommand, reason: String? = nil, session: String? = nil,
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
            let update = TaskUpdate(time: now, reason: reason, session: session), stored = NewEvent(type: "state_changed", time: now, data: event.text)
            let result = if let cluster, owns(id) {
                try await cluster.store.transition(id, from: [task.state], to: to, update: update, event: stored, fence: try fence())
            } else {
                try await store.transition(id, from: [task.state], to: to, update: update, event: stored)
            }
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
    func finished(_ task: TaskRecord) async {
        deadlines.remove(task.id)
        guard !stopping.contains(task.id) else { return }
        if admission.isQueued(task.id) {
            admission.withdraw(task.id)
            requests[task.id] = nil
            await step()
        }
        guard admission.holds(task.id) else { return }
        let id = task.id, state = task.state
        if task.session == nil && state != .cancelled && state != .timedOut && state != .interrupted {
            // It never had a session (a boot failure): nothing to wait for.
            await release(id)
            return
        }
        stopping.insert(id)
        post.yield(.stopSession(warmSessionOf[id] ?? id, reason: "task \(id) is \(state.rawValue)"))
    }

    /// The task's session has ended (or never came to be): its slot and memory are free.
    func release(_ id: String) async {
        guard admission.holds(id) else { return }
        admission.released(id)
        stopping.remove(id)
        cluster?.wakeClaimer()
        runningSince[id] = nil
        if let session = warmSessionOf.removeValue(forKey: id) { taskOfSession[session] = nil }
        await step()
    }

    // MARK: - Session events

    private func sessionEvent(_ session: String, _ event: SessionEvent) async {
        let id = taskOfSession[session] ?? session
        guard admission.holds(id) else { return }
        guard !admission.isWarm(id) else {
            // A warm session's own life: only its end matters (its room is free again).
            if case .ended(let end) = event {
                logger.info("warm session ended", metadata: ["session": "\(id)", "reason": "\(end)"])
                admission.released(id)
                await step()
            }
            return
        }
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
        let event = NewEvent(type: type, time: nowMS(), data: data.text)
        let stored = if let cluster, owns(id) {
            try? await cluster.store.append(id, event: event, fence: try fence())
        } else {
            try? await store.append(id, event: event)
        }
        if let stored {
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

    /// Takes no new tasks from now on and empties the warm pool; running and queued ones go on.
    public func drain() async -> (active: Int, queued: Int) {
        admission.drain()
        logger.notice("draining: no new tasks")
        await requeueClaims(reason: "host \(cluster?.hostID ?? "") is draining")
        await step()
        return (admission.active, admission.queued)
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
        admission.capacity
    }
}
