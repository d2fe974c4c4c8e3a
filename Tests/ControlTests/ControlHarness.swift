import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Logging
import Store
import Supervision
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Sessions without X: what the task service sees of the real ones (ready, ended, events),
/// steered by the URL: "fail" fails the boot, "hold" waits until released.
final class FakeSessions: SessionProvider {
    let sessionEvents = Broadcast<(session: String, event: SessionEvent)>()
    private let state = Mutex<(created: [String], live: Set<String>, held: [String: OnceValue<Void>], adopted: [String: String],
                               memory: [String: MemoryReading])>(([], [], [:], [:], [:]))

    var created: [String] { state.withLock { $0.created } }
    /// Warm sessions given to a task: session id → the URL it opened.
    var adopted: [String: String] { state.withLock { $0.adopted } }

    /// What the next measurements say of a session.
    func setMemory(_ id: String, _ reading: MemoryReading) { state.withLock { $0.memory[id] = reading } }

    func adoptSession(_ id: String, by task: String, url: String) async throws -> SessionInfo {
        guard state.withLock({ $0.live.contains(id) }) else { throw SessionError.setup("no warm session '\(id)'") }
        state.withLock { $0.adopted[id] = url }
        return SessionInfo(id: id, state: .ready, display: ":42", cdpURL: "http://127.0.0.1:29222", vncSocket: "/nonexistent/vnc.sock",
                           websockifyPort: nil, directory: "/nonexistent", pids: ["chromium": 1], end: nil)
    }

    func sessionMemory() async -> [String: MemoryReading] {
        state.withLock { s in s.memory.filter { s.live.contains($0.key) } }
    }

    func startSession(_ settings: SessionSettings) async throws -> SessionInfo {
        state.withLock { $0.created.append(settings.id) }
        if settings.url.contains("fail") { throw SessionError.failedToStart(id: settings.id, reason: "chromium: exited with status 1") }
        if settings.url.contains("hold") {
            let gate = OnceValue<Void>()
            state.withLock { $0.held[settings.id] = gate }
            try await gate.wait()
        }
        state.withLock { _ = $0.live.insert(settings.id) }
        sessionEvents.publish((settings.id, .ready))
        return SessionInfo(id: settings.id, state: .ready, display: ":42", cdpURL: "http://127.0.0.1:29222", vncSocket: "/nonexistent/vnc.sock",
                           websockifyPort: nil, directory: "/nonexistent", pids: ["chromium": 1], end: nil)
    }

    func release(_ id: String) { state.withLock { $0.held[id] }?.set(()) }

    func stopSession(_ id: String, reason: String) async {
        guard state.withLock({ $0.live.remove(id) }) != nil else { return }
        sessionEvents.publish((id, .ended(SessionEnd(reason: reason, failed: false))))
    }

    /// The session dies by itself (its restart budget spent).
    func crash(_ id: String) {
        guard state.withLock({ $0.live.remove(id) }) != nil else { return }
        sessionEvents.publish((id, .lockdown(.blocked(combo: "Ctrl+W", purpose: .close))))
        sessionEvents.publish((id, .ended(SessionEnd(reason: "restart budget spent", failed: true))))
    }

    func listSessions() async -> [SessionInfo] {
        state.withLock { $0.live.sorted() }.map {
            SessionInfo(id: $0, state: .ready, display: ":42", cdpURL: "http://127.0.0.1:29222", vncSocket: "/nonexistent/vnc.sock", websockifyPort: nil,
                        directory: "/nonexistent", pids: [:], end: nil)
        }
    }
}

/// Host memory pressure as the test sets it.
final class Pressure: Sendable {
    private let current = Mutex<Double>(0)
    init() {}
    var value: Double {
        get { current.withLock { $0 } }
        set { current.withLock { $0 = newValue } }
    }
}

/// A task service on a SQLite store in a temporary directory, served on a temporary socket.
struct ControlHarness {
    let dir: String
    let store: any TaskStore
    let sessions: FakeSessions
    let service: TaskService
    let client: ControlClient

    /// A harness for `body`. The service and its socket run beside the body and are cancelled
    /// and awaited once it ends; then the store is closed, and the directory removed unless the
    /// caller gave it. Nothing stops the tasks: to a later harness on the same `dir`, the end of
    /// this one is the daemon dying.
    /// `capacity` and `budget` set memory admission and the warm pool; `pressure` is what the
    /// service reads as host memory pressure.
    static func with<T>(limits: TaskLimits = TaskLimits(), capacity: CapacitySettings = CapacitySettings(), budget: UInt64? = nil,
                        pressure: Pressure = Pressure(), allow: PeerAllowlist? = nil, dir given: String? = nil,
                        _ body: (ControlHarness) async throws -> T) async throws -> T {
        let dir = try given ?? makeTempDir("kioskd-control")
        defer { if given == nil { removeTree(dir) } }
        let store = try SQLiteTaskStore(path: dir + "/kioskd.sqlite")
        do {
            let result = try await serve(store, dir: dir, limits: limits, capacity: capacity, budget: budget, pressure: pressure, allow: allow, body)
            await store.close()
            return result
        } catch {
            await store.close()
            throw error
        }
    }

    private static func serve<T>(_ store: any TaskStore, dir: String, limits: TaskLimits, capacity: CapacitySettings, budget: UInt64?,
                                 pressure: Pressure, allow: PeerAllowlist?, _ body: (ControlHarness) async throws -> T) async throws -> T {
        try await store.migrate()
        let sessions = FakeSessions()
        var logger = Logger(label: "test.control")
        logger.logLevel = .warning
        let tokens = await ViewerTokens(secret: try ViewerTokens.secret(at: dir + "/viewer-token.key"))
        let service = TaskService(store: store, sessions: sessions, tokens: tokens, limits: limits, capacity: capacity, budget: budget,
                                  template: { id, request in request.session(from: SessionSettings(id: id, url: request.url)) },
                                  hostPressure: { pressure.value }, logger: logger)
        _ = try await service.interruptUnfinished()
        let socket = dir + "/control.sock"
        let control = ControlServer(socketPath: socket, group: nil, allowlist: allow ?? PeerAllowlist(uids: [getuid()], gids: []))
        let routes = ControlRoutes(service: service, storeKind: "sqlite") { TreeNode(id: "kioskd", kind: "supervisor", status: "running") }
        let ready = OnceValue<Void>()
        return try await withBackground({ [logger] in
            try await race({ await service.run() }, { try await control.run(routes, logger: logger) { ready.set(()) } })
        }) {
            try await withTimeout(.seconds(10), "the control socket") { try await ready.wait() }
            return try await body(ControlHarness(dir: dir, store: store, sessions: sessions, service: service, client: ControlClient(socketPath: socket)))
        }
    }

    /// The parsed JSON of an answer.
    static func json(_ answer: ControlClient.Answer) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(answer.body))
    }

    /// Polls nothing: waits on the service's own event feed for the task to reach `state`.
    func waitState(_ id: String, _ state: TaskState, timeout: Duration = .seconds(10)) async throws {
        let updates = service.appended.subscribe()
        if try await store.task(id)?.state == state { return }
        try await withTimeout(timeout, "task \(id) to be \(state.rawValue)") {
            for await e in updates where e.taskID == id && e.data.contains("\"to\":\"\(state.rawValue)\"") { return }
        }
    }
}

extension JSONValue {
    var int: Int? { number.map { Int($0) } }
}

extension ControlClient.Answer {
    var json: JSONValue? { try? ControlHarness.json(self) }
    var errorCode: String? { json?["error"]?["code"]?.string }
}
