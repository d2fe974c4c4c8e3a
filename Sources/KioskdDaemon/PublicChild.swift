import Bridge
import Control
import Kiosk
import Logging
import Supervision

/// The public listener as a child of the root, after the control API (whose task service and
/// tokens it uses). Ready once it listens.
enum PublicChild {
    static func spec(_ config: Config, service: OnceValue<TaskService>, sessions: SessionManager, logger: Logger) -> ChildSpec {
        ChildSpec(
            id: "public",
            kind: .task { context in
                let service = try await service.wait()
                var settings = BridgeSettings()
                settings.origins = config.publicListener.origins.values
                settings.pingInterval = config.publicListener.pingInterval
                settings.idleTimeout = config.publicListener.idleTimeout
                settings.maxLifetime = config.publicListener.maxLifetime
                settings.maxViewers = config.publicListener.maxViewers
                settings.clipboard = config.publicListener.clipboard
                let access = ViewerAccess(service: service, settings: settings) { id in await target(sessions, id) }
                let server = PublicServer(access: access, settings: settings) { await service.capacity().draining }
                try await server.run(host: config.publicListener.listen.host, port: config.publicListener.listen.port, logger: logger) { port in
                    context.markReady("listening on \(config.publicListener.listen.host):\(port)")
                }
            },
            restart: .permanent,
            shutdown: .timeout(.seconds(5)),
            readiness: .signaled,
            readyTimeout: .seconds(30))
    }

    /// Where a running task's viewers go: its session's x11vnc, or its websockify.
    static func target(_ sessions: SessionManager, _ id: String) async -> BridgeTarget? {
        guard let session = await sessions.session(id) else { return nil }
        let info = await session.info()
        guard info.state == .ready else { return nil }
        return BridgeTarget(vncPort: info.vncPort, websockifyPort: info.websockifyPort) {
            _ = try? await session.releaseHeldInput()
        }
    }
}
