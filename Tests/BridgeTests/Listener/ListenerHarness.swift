import Bridge
import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Logging
import NIOSSL
import Store
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// The public listener without sessions, for what it decides before a session is reached:
/// connection limits, deadlines, refusals, tokens, headers. Tasks are written to the store as
/// running; a viewer that gets through is relayed to a socket that does not exist.
struct ListenerHarness {
    let dir: String
    let service: TaskService
    let port: Int

    /// A harness for `body`: the listener (HTTPS with `tls`) and the service run beside it and
    /// are cancelled and awaited once it ends; then the store is closed and the directory removed.
    static func with<T>(_ name: String, settings: BridgeSettings = BridgeSettings(), external: ExternalTokens? = nil, limits: TaskLimits = TaskLimits(),
                        tls: NIOSSLContext? = nil, _ body: (ListenerHarness) async throws -> T) async throws -> T {
        let dir = try makeTempDir("kioskd-listener-\(name)")
        defer { removeTree(dir) }
        let store = try SQLiteTaskStore(path: dir + "/kioskd.sqlite")
        do {
            let result = try await serve(store, dir: dir, settings: settings, external: external, limits: limits, tls: tls, body)
            await store.close()
            return result
        } catch {
            await store.close()
            throw error
        }
    }

    private static func serve<T>(_ store: any TaskStore, dir: String, settings: BridgeSettings, external: ExternalTokens?, limits: TaskLimits,
                                 tls: NIOSSLContext?, _ body: (ListenerHarness) async throws -> T) async throws -> T {
        var logger = Logger(label: "test.listener")
        logger.logLevel = .critical
        try await store.migrate()
        let tokens = await ViewerTokens(secret: try ViewerTokens.secret(at: dir + "/viewer-token.key"))
        let service = TaskService(store: store, sessions: NoSessions(), tokens: tokens, limits: limits,
                                  template: { id, request in SessionSettings(id: id, url: request.url) }, logger: logger)
        _ = try await service.interruptUnfinished()
        let nowhere = dir + "/no-x11vnc.sock"
        let access = ViewerAccess(service: service, settings: settings, external: external) { _ in
            BridgeTarget(vncSocket: nowhere, websockify: nil) {}
        }
        let server = PublicServer(access: access, settings: settings, tls: tls)
        let bound = OnceValue<Int>()
        return try await withBackground({ [logger] in
            try await race({ await service.run() }, { try await server.run(.hostname("127.0.0.1", port: 0), logger: logger) { bound.set($0) } })
        }) {
            let port = try await withTimeout(.seconds(10), "the public listener") { try await bound.wait() }
            return try await body(ListenerHarness(dir: dir, service: service, port: port))
        }
    }

    /// A task in the store as running, and a view token for it.
    func runningTask(_ id: String) async throws -> String {
        _ = try await service.store.create(TaskRecord(id: id, state: .running, request: "{}", createdAt: 1, updatedAt: 1),
                                           event: NewEvent(type: "state_changed", time: 1))
        return try await service.tokens.mint(task: id, role: .view, ttl: 300).token
    }

    /// `request` on a new connection; see `readAnswer`.
    func exchange(_ request: String, timeout: Int = 10) throws -> RawAnswer {
        let fd = try connectLoopback(port: port, timeout: timeout)
        defer { close(fd) }
        sendAll(fd, Array(request.utf8))
        return readAnswer(fd)
    }
}

/// Sessions are never started here.
final class NoSessions: SessionProvider {
    let sessionEvents = Broadcast<(session: String, event: SessionEvent)>()
    /// Fails at once; a page named "hold" boots until kioskd stops (it holds a slot).
    func startSession(_ settings: SessionSettings) async throws -> SessionInfo {
        if settings.url.contains("hold") { await untilCancelled() }
        throw SessionError.failedToStart(id: settings.id, reason: "no sessions in this harness")
    }
    func adoptSession(_ id: String, by task: String, url: String) async throws -> SessionInfo {
        throw SessionError.setup("no warm sessions in this harness")
    }
    func sessionMemory() async -> [String: MemoryReading] { [:] }
    func stopSession(_ id: String, reason: String) async {}
    func listSessions() async -> [SessionInfo] { [] }
}
