import Essentials
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Owns the host's sessions: admission, lookup, stop, and the sweep of an earlier run's
/// leftovers before the first session starts. A session is its own supervision tree with its
/// own budget; one session failing never touches another.
public actor SessionManager {
    public nonisolated let host: SessionHost
    private var sessions: [String: Session] = [:]
    /// Ids being created: reserved so a second create with the same id fails at once.
    private var starting: Set<String> = []
    /// Warm sessions given to a task, by task id: the session keeps its own id.
    private var owners: [String: String] = [:]
    private var closed = false
    /// Every session's events, tagged with its id.
    public nonisolated let events = Broadcast<(session: String, event: SessionEvent)>()

    public init(host: SessionHost) {
        self.host = host
    }

    /// The manager's life: prepares and sweeps (`start`), reports ready, then serves until
    /// cancelled; then refuses new sessions and stops every one, each by its tree, in order.
    public func run(ready: @Sendable (SweepReport) -> Void) async throws {
        ready(try await start())
        await untilCancelled()
        await stopAll(reason: "kioskd is stopping")
    }

    /// Prepares the directories and removes what an earlier run left. Call once, before `create`.
    public func start() async throws -> SweepReport {
        try host.prepare()
        if let guardSpec = host.portGuard {
            try await guardSpec.install(scratchDir: host.recordsDir, logger: host.logger)
            if (host.user?.uid ?? geteuid()) == geteuid() {
                // The guard tells users apart, and the sessions' pages would be kioskd's own.
                host.logger.warning("sessions run as kioskd's own user: the port guard cannot keep one session's page off another's CDP port; run kioskd as root (sessions.user) to separate them")
            }
        }
        return await Sweeper(host: host).sweep()
    }

    /// Boots a session; returns it ready. Throws `SessionError` (bad settings, duplicate id,
    /// failed start: the reason names the program and what it printed).
    public func create(_ settings: SessionSettings) async throws -> Session {
        guard !closed else { throw SessionError.shuttingDown }
        guard sessions[settings.id] == nil, !starting.contains(settings.id) else { throw SessionError.duplicate(settings.id) }
        starting.insert(settings.id)
        defer { starting.remove(settings.id) }
        let sink = SessionEventSink(id: settings.id, all: events)
        let session: Session
        do {
            session = try await Session.start(settings, host: host, sink: sink) { [weak self] id in await self?.forget(id) }
        } catch {
            sink.finish()
            throw error
        }
        sessions[settings.id] = session
        // It may have ended (and been forgotten) between becoming ready and being added.
        if await session.info().state == .ended { sessions[settings.id] = nil }
        return session
    }

    private func forget(_ id: String) {
        sessions[id] = nil
        owners = owners.filter { $0.value != id }
    }

    /// The session by its own id, or by the task that took it from the warm pool.
    public func session(_ id: String) -> Session? { sessions[id] ?? owners[id].flatMap { sessions[$0] } }

    /// Gives the warm session `id` to the task `task`: it opens the task's page and answers to
    /// the task's id from now on (viewers and lookups find it by either).
    public func adopt(_ id: String, by task: String, url: String) async throws -> Session {
        guard let session = sessions[id] else { throw SessionError.setup("no warm session '\(id)'") }
        owners[task] = id
        do {
            try await session.open(url)
        } catch {
            owners[task] = nil
            throw error
        }
        return session
    }

    /// What each live session uses, by session id.
    public func memory() async -> [String: MemoryReading] {
        var out: [String: MemoryReading] = [:]
        for (id, session) in sessions {
            if let reading = await session.memory() { out[id] = reading }
        }
        return out
    }

    public func list() async -> [SessionInfo] {
        var out: [SessionInfo] = []
        for session in sessions.values { out.append(await session.info()) }
        return out.sorted { $0.id < $1.id }
    }

    /// Stops one session; nil when there is none with that id.
    public func stop(_ id: String, reason: String) async -> SessionEnd? {
        guard let session = session(id) else { return nil }
        return await session.stop(reason: reason)
    }

    /// Refuses new sessions and stops every one, concurrently.
    public func stopAll(reason: String) async {
        closed = true
        let all = Array(sessions.values)
        await withTaskGroup(of: Void.self) { group in
            for s in all { group.addTask { await s.stop(reason: reason) } }
        }
        await host.portGuard?.remove(logger: host.logger)
        host.cgroups?.removeParents()
    }
}
