import Bridge
import Control
import Essentials
import Kiosk
import Logging
import Supervision

/// The internal listener (`cluster.listen`), beside the public one in cluster mode only: the
/// other hosts relay their viewers and agents of this host's tasks here, each request with the
/// cluster's proof (`ClusterAuth`). Same task service, tokens and sessions as the public
/// listener; never relays again. Ready once it listens.
enum InternalChild {
    static func spec(_ config: Config, service: OnceValue<TaskService>, sessions: SessionManager, logger: Logger) -> ChildSpec {
        ChildSpec(
            id: "internal",
            kind: .task { context in
                let service = try await service.wait()
                let settings = config.publicListener.bridge
                let access = ViewerAccess(service: service, settings: settings, external: try await PublicChild.external(config.publicListener.jwt)) { id in
                    await PublicChild.target(sessions, id)
                }
                let server = PublicServer.internalListener(access: access, settings: settings, auth: ClusterAuth(secret: try ControlChild.clusterSecret(config).bytes))
                let listen = config.cluster.listen
                try await server.run(.hostname(listen.host, port: listen.port), logger: logger) { port in
                    context.markReady("internal listener on \(listen.host):\(port)")
                }
            },
            restart: .permanent,
            shutdown: .timeout(.seconds(5)),
            readiness: .signaled,
            readyTimeout: .seconds(30))
    }
}
