import Display
import Essentials
import FoundationEssentials
import Logging
import Metrics
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Where a session is in its life.
public enum SessionState: String, Sendable, Codable {
    case starting, ready, stopping, ended
}

/// Why a session ended. `failed` is true when it did not end because someone asked.
public struct SessionEnd: Sendable, Equatable, Codable, CustomStringConvertible {
    public let reason: String
    public let failed: Bool

    public init(reason: String, failed: Bool) {
        self.reason = reason
        self.failed = failed
    }

    public var description: String { (failed ? "failed: " : "") + reason }
}

/// What the API layer and viewers need to know about a session.
public struct SessionInfo: Sendable, Equatable, Codable {
    public var id: String
    public var state: SessionState
    public var display: String
    /// The browser's CDP endpoint for the agent (loopback).
    public var cdpURL: String
    /// x11vnc's Unix socket (in the session's 0700 directory).
    public var vncSocket: String
    public var websockifyPort: Int?
    public var directory: String
    /// Live pids by child id (xvfb, openbox, x11vnc, websockify, chromium).
    public var pids: [String: Int32]
    public var end: SessionEnd?

    public init(id: String, state: SessionState, display: String, cdpURL: String, vncSocket: String, websockifyPort: Int?,
                directory: String, pids: [String: Int32], end: SessionEnd?) {
        self.id = id
        self.state = state
        self.display = display
        self.cdpURL = cdpURL
        self.vncSocket = vncSocket
        self.websockifyPort = websockifyPort
        self.directory = directory
        self.pids = pids
        self.end = end
    }
}

public enum SessionError: Error, Equatable, CustomStringConvertible {
    case invalidSettings([String])
    case duplicate(String)
    case failedToStart(id: String, reason: String)
    case setup(String)
    case shuttingDown

    public var description: String {
        switch self {
        case .invalidSettings(let problems): "invalid session settings: " + problems.joined(separator: "; ")
        case .duplicate(let id): "a session with id '\(id)' already exists"
        case .failedToStart(let id, let reason): "session '\(id)' failed to start: \(reason)"
        case .setup(let why): "cannot set the session up: \(why)"
        case .shuttingDown: "the session manager is shutting down"
        }
    }
}

/// One kiosk session: its resources (display, ports, directory) and its supervision tree.
/// Created ready or not at all; everything it took is given back when it ends, however it ends.
public actor Session {
    public nonisolated let id: String
    public nonisolated let settings: SessionSettings
    public nonisolated let layout: SessionLayout
    /// websockify mode: what the bridge sends as `Authorization: Bearer …` (see Websockify).
    public nonisolated let websockifySecret: String?
    /// Every event of the session; finished after `.ended`.
    public nonisolated var events: Broadcast<SessionEvent> { sink.own }
    private nonisolated let sink: SessionEventSink
    private let supervisor: Supervisor
    private let lockdown: LockdownChild
    private let watch: BrowserWatch
    private let host: SessionHost
    /// The session's cgroup: every one of its processes is in it from before exec; nil
    /// when the host has none (SessionCgroups.Mode.unavailable, or none configured).
    public nonisolated let cgroup: SessionCgroup?
    /// Processes the kernel killed at the session's memory limit so far.
    private var memoryKills = 0
    /// The highest PSS sum seen, for hosts without a cgroup.
    private var pssPeak: UInt64 = 0
    private var state: SessionState = .starting
    private var end: SessionEnd?
    private var stopReason: String?
    private var lastFailure: String?
    private let onEnded: @Sendable (String) async -> Void
    private var runner: Task<SessionEnd, Never>?

    init(settings: SessionSettings, layout: SessionLayout, websockifySecret: String?, supervisor: Supervisor, lockdown: LockdownChild,
         watch: BrowserWatch, cgroup: SessionCgroup?, sink: SessionEventSink, host: SessionHost,
         onEnded: @escaping @Sendable (String) async -> Void) {
        self.lockdown = lockdown
        self.cgroup = cgroup
        self.watch = watch
        self.websockifySecret = websockifySecret
        id = settings.id
        self.onEnded = onEnded
        self.sink = sink
        self.settings = settings
        self.layout = layout
        self.supervisor = supervisor
        self.host = host
    }

    /// Allocates, prepares and boots a session; returns once every program is ready (Chromium
    /// answering CDP and the watch attached). On failure nothing is left behind.
    /// Everything the session goes through is published on `sink` (subscribe before, to see
    /// the boot). `onEnded` runs once the session's resources are released, before `ended()`
    /// returns.
    static func start(_ settings: SessionSettings, host: SessionHost, sink: SessionEventSink,
                      onEnded: @escaping @Sendable (String) async -> Void) async throws -> Session {
        let problems = settings.problems()
        guard problems.isEmpty else { throw SessionError.invalidSettings(problems) }
        var logger = host.logger
        logger[metadataKey: "session"] = "\(settings.id)"

        var taken = Resources(host: host)
        let layout: SessionLayout
        let cookie = XCookie.random()
        let websockifySecret = settings.bridge == .websockify ? randomHex(32) : nil
        var directory: String?
        var cgroup: SessionCgroup?
        do {
            let display = try await taken.display()
            let cdp = try await taken.port()
            let ws = settings.bridge == .websockify ? try await taken.port() : nil
            let slot = SessionLayout.directory(sessionsDir: host.sessionsDir, display: display)
            directory = slot
            layout = SessionLayout(display: display, cdpPort: cdp, websockifyPort: ws, directory: slot)
            try prepareDirectory(layout, cookie: cookie, websockifySecret: websockifySecret, host: host)
            try host.writeRecord(SessionRecord(id: settings.id, display: display, directory: layout.directory))
            // Named like the directory, by the display: unique on the host and short.
            cgroup = try host.cgroups?.create("d\(display)", limits: settings.limits)
        } catch {
            if let directory { removeTree(directory) }
            host.removeRecord(settings.id)
            await taken.release()
            if let e = error as? SessionError { throw e }
            throw SessionError.setup("\(error)")
        }

        let bus = EventBus()
        let lockdown = LockdownChild(options: Lockdown.Options(display: layout.display, cookie: cookie.bytes, entries: settings.grabs, session: settings.id),
                                     logger: logger) { [logger] event in
            switch event {
            case .blocked, .windowClosed: logger.notice("\(event)")
            default: logger.info("\(event)")
            }
            sink.publish(.lockdown(event))
        }
        let watch = BrowserWatch(cdpPort: layout.cdpPort, homeURL: settings.url, tabs: settings.tabs,
                                 verify: lockdown.verifyAgainstBrowser, logger: logger) { [logger] event in
            switch event {
            case .tabCrashed, .unexpectedTarget, .tabClosed, .targetClosed, .returnedHome: logger.warning("\(event)")
            default: logger.info("\(event)")
            }
            sink.publish(.browser(event))
        }
        var spec = SessionTree.spec(settings, layout, user: host.user, lockdown: lockdown, watch: watch, logger: logger)
        if let cgroup { spec = SessionTree.placing(spec, in: cgroup.directories) }
        let supervisor: Supervisor
        do {
            supervisor = try Supervisor(name: settings.id, spec: spec, parentPath: ["sessions"], events: bus, logger: logger)
        } catch {
            await cleanUp(id: settings.id, layout, taken, cgroup: cgroup, host: host, logger: logger)
            throw SessionError.setup("\(error)")
        }
        let session = Session(settings: settings, layout: layout, websockifySecret: websockifySecret, supervisor: supervisor,
                              lockdown: lockdown, watch: watch, cgroup: cgroup, sink: sink, host: host, onEnded: onEnded)
        await session.launch(bus: bus, resources: taken, logger: logger)

        do {
            try await supervisor.waitReady()
        } catch is CancellationError {
            // The caller gave up (kioskd is stopping): the tree stops in order, and the session
            // gives back what it took before this returns.
            await session.stop(reason: "its start was given up")
            throw CancellationError()
        } catch {
            let reason = "\(error)"
            _ = await session.runner?.value
            throw SessionError.failedToStart(id: settings.id, reason: reason)
        }
        await session.markReady()
        return session
    }

    /// Runs the tree and, beside it, forwards its events; then releases what the session took.
    /// A task of its own, not of a caller's group: kioskd's stop must stop each session's tree
    /// in order (cancellation would kill it at once), and `stop` and `SessionManager.stopAll`
    /// await it, so it never outlives the manager.
    private func launch(bus: EventBus, resources: Resources, logger: Logger) {
        let sink = self.sink
        let forward = bus.subscribe()
        let supervisor = self.supervisor, layout = self.layout, host = self.host, id = self.id, cgroup = self.cgroup
        runner = Task {
            // Stopped once the tree has: it must not outlive the session.
            let memoryWatch = cgroup.map { group in Task { await self.watchMemory(group, logger: logger) } }
            let outcome = await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await event in forward {
                        await self.note(event)
                        sink.publish(.supervision(event))
                    }
                }
                let outcome = await supervisor.run()
                bus.finish()
                return outcome
            }
            memoryWatch?.cancel()
            await memoryWatch?.value
            await Session.cleanUp(id: id, layout, resources, cgroup: cgroup, host: host, logger: logger)
            await self.onEnded(self.id)
            return self.finish(outcome)
        }
    }

    /// Reads the group's OOM-kill counter about once a second: a rise means the kernel killed
    /// a process of this session at its limit (Chromium's renderer or browser; the browser
    /// watch or the supervisor brings it back), and the session says so, naming memory.
    private func watchMemory(_ group: SessionCgroup, logger: Logger) async {
        var seen = group.memory().oomKills
        while (try? await Task.sleep(for: .seconds(1))) != nil {
            let reading = group.memory()
            guard reading.oomKills > seen else { continue }
            Counter(label: "kioskd_session_oom_kills_total").increment(by: reading.oomKills - seen)
            seen = reading.oomKills
            memoryKills = reading.oomKills
            let limit = settings.limits.memoryMax
            logger.warning("the kernel killed a session process at its memory limit", metadata: [
                "oom_kills": "\(reading.oomKills)", "usage": "\(reading.current)", "limit": "\(limit.map(String.init) ?? "none")",
            ])
            sink.publish(.memoryLimit(oomKills: reading.oomKills, usage: reading.current, limit: limit))
        }
    }

    /// The last program failure, so a spent budget names the program and not only the group.
    private func note(_ event: SupervisionEvent) {
        switch event.kind {
        case .exited(let child, .failed(let why), _), .startFailed(let child, let why):
            guard child != SessionTree.clientsID else { return }
            lastFailure = "\(child): \(why)"
        default:
            break
        }
    }

    private func markReady() {
        guard state == .starting else { return }
        state = .ready
        sink.publish(.ready)
    }

    private func finish(_ outcome: SupervisorStateMachine.Outcome) -> SessionEnd {
        let end: SessionEnd = switch outcome {
        case .normal(let why): SessionEnd(reason: stopReason ?? why, failed: stopReason == nil)
        case .failedToStart: SessionEnd(reason: outcome.description, failed: true)
        case .gaveUp(let why): SessionEnd(reason: "restart budget spent: \(why)" + (lastFailure.map { "; last failure: \($0)" } ?? "")
                                          + (memoryKills > 0 ? "; \(memoryKills) processes killed at the session's memory limit" : ""), failed: true)
        }
        let cause = switch outcome {
        case .normal: stopReason == nil ? "exited" : "stopped"
        case .failedToStart: "failed_to_start"
        case .gaveUp: "restart_budget_spent"
        }
        Counter(label: "kioskd_sessions_ended_total", dimensions: [("cause", cause)]).increment()
        self.end = end
        state = .ended
        sink.publish(.ended(end))
        sink.finish()
        return end
    }

    /// Stops every program (in reverse order, each by its shutdown spec), removes the
    /// directory and releases the display and ports. Returns how the session ended.
    @discardableResult
    public func stop(reason: String) async -> SessionEnd {
        if state != .ended {
            if stopReason == nil { stopReason = reason }
            state = .stopping
            supervisor.shutdown()
        }
        return await ended()
    }

    /// Waits for the session's end, whatever causes it.
    public func ended() async -> SessionEnd {
        if let end { return end }
        return await runner!.value
    }

    /// Gives a warm session its task's page: the kiosk's page from now on (a browser restart
    /// returns to it too), loaded when this returns.
    public func open(_ url: String) async throws {
        guard state == .ready else { throw SessionError.setup("session '\(id)' is \(state.rawValue), not ready") }
        try await watch.open(url)
    }

    /// What the session's processes use now: its cgroup's accounting, or without one the sum
    /// of their PSS. nil once the session has ended.
    public func memory() async -> MemoryReading? {
        guard state != .ended else { return nil }
        if let cgroup { return cgroup.memory() }
        let entry = SessionLayout.markerVariable + "=" + layout.directory
        let pss = (try? await blocking { ProcessMemory.pss(ofProcessesWith: entry) }) ?? 0
        pssPeak = max(pssPeak, pss)
        return MemoryReading(current: pss, peak: pssPeak, oomKills: 0)
    }

    /// Releases every key and button held on the display: for the bridge, when a controlling
    /// viewer leaves (x11vnc's own "viewer gone" does it for direct connections).
    @discardableResult
    public func releaseHeldInput() async throws -> LockdownEvent {
        try await lockdown.releaseHeldInput()
    }

    /// The display's top-level windows (the window manager's client list), oldest first: one,
    /// the kiosk, while the lockdown holds.
    public func windows() async throws -> [UInt] {
        try await lockdown.windows()
    }

    public func info() async -> SessionInfo {
        var pids: [String: Int32] = [:]
        if state != .ended {
            for node in await supervisor.snapshot().descendants {
                if let pid = node.pid { pids[node.id] = pid }
            }
        }
        return SessionInfo(id: id, state: state, display: ":\(layout.display)", cdpURL: "http://127.0.0.1:\(layout.cdpPort)",
                           vncSocket: layout.vncSocket, websockifyPort: layout.websockifyPort, directory: layout.directory,
                           pids: pids, end: end)
    }

    // MARK: - Resources

    /// The directory tree, owned by the session's user: nothing else can read its cookie or
    /// profile. The Xauthority file and the window manager's config are written here.
    private static func prepareDirectory(_ layout: SessionLayout, cookie: XCookie, websockifySecret: String?, host: SessionHost) throws {
        let user = host.user
        try makeDirectory(layout.directory, mode: 0o700, owner: user)
        for sub in [layout.profileDir, layout.tmpDir, layout.directory + "/.config", layout.directory + "/.cache"] {
            try makeDirectory(sub, mode: 0o700, owner: user)
        }
        try XAuthority.write(path: layout.authFile, display: layout.display, cookie: cookie, owner: user)
        try Openbox.writeConfig(Openbox.Settings(display: layout.display, authFile: layout.authFile, directory: layout.directory), owner: user)
        if let websockifySecret {
            try makeDirectory(layout.websockifyPluginDir, mode: 0o700, owner: user)
            try writeFile(layout.websockifyPluginDir + "/\(Websockify.pluginModule).py", Array(Websockify.pluginSource.utf8), mode: 0o600, owner: user)
            try writeFile(layout.websockifySecretFile, Array(websockifySecret.utf8), mode: 0o600, owner: user)
        }
    }

    private static func cleanUp(id: String, _ layout: SessionLayout, _ resources: Resources, cgroup: SessionCgroup?, host: SessionHost,
                                logger: Logger) async {
        if let cgroup {
            // Each program was stopped by its own rules; what is still in the group escaped
            // them (no cookie, no marker): cgroup.kill reaches it wherever it forked to.
            if cgroup.isPopulated {
                logger.warning("processes were left in the session's cgroup after its tree stopped: killing them")
                cgroup.kill()
            }
            if await !cgroup.waitEmpty(timeout: .seconds(5)) {
                logger.error("the session's cgroup is still populated 5 s after cgroup.kill", metadata: ["cgroup": "\(cgroup.directories)"])
            }
            let left = cgroup.remove()
            if !left.isEmpty { logger.error("could not remove the session's cgroup", metadata: ["left": "\(left)"]) }
        }
        // /proc beside it (and the only check without a cgroup): nothing may carry the
        // session's marker now. The NUL ends the entry, so d1 does not match d10.
        let marker = SessionLayout.markerVariable + "=" + layout.directory + "\0"
        let stray = (try? await blocking { ProcessTree.killAll(environmentEntryPrefix: marker) }) ?? 0
        if stray > 0 { logger.error("killed processes of the session found in /proc after its tree stopped", metadata: ["count": "\(stray)"]) }
        // The tree is stopped: nothing writes here any more. A retry covers files a dying
        // process's last write created while the first pass ran.
        var left: [String] = []
        for _ in 0..<3 {
            left = removeTree(layout.directory)
            if left.isEmpty { break }
        }
        if !left.isEmpty {
            logger.error("could not remove the session directory", metadata: ["path": "\(layout.directory)", "left": "\(left.prefix(5))"])
        }
        host.removeRecord(id)
        // Programs killed outright (a crash, a restart, a SIGKILLed daemon) leave their MIT-SHM
        // segments: without this the host runs out of them.
        SharedMemory.removeOrphans(uid: host.user?.uid ?? geteuid())
        await resources.release()
    }
}

/// What a session took from the host, given back exactly once.
struct Resources: Sendable {
    let host: SessionHost
    private(set) var displays: [Int] = []
    private(set) var ports: [Int] = []

    init(host: SessionHost) { self.host = host }

    mutating func display() async throws -> Int {
        let n = try await host.displays.allocate()
        displays.append(n)
        return n
    }

    mutating func port() async throws -> Int {
        let p = try await host.ports.allocate()
        ports.append(p)
        return p
    }

    func release() async {
        for d in displays { await host.displays.release(d) }
        for p in ports { await host.ports.release(p) }
    }
}

/// Where a session's events go: its own stream, and the manager's stream of every session's
/// (tagged with its id), in the same order.
struct SessionEventSink: Sendable {
    let id: String
    let own = Broadcast<SessionEvent>()
    let all: Broadcast<(session: String, event: SessionEvent)>

    func publish(_ event: SessionEvent) {
        own.publish(event)
        all.publish((id, event))
    }

    /// Ends the session's own stream; the manager's goes on.
    func finish() { own.finish() }
}
