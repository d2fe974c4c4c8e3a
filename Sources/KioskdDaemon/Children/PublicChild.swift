import Bridge
import Control
import Essentials
import Kiosk
import Logging
import NIOSSL
import Supervision

/// The public listener as a child of the root, after the control API (whose task service and
/// tokens it uses). Ready once it listens. In cluster mode the task service's cluster link names
/// each task's owner (`ClusterRouting`), and a task another host owns is relayed to that host's
/// internal listener with this cluster's proof.
enum PublicChild {
    static func spec(_ config: Config, socket: CInt?, service: OnceValue<TaskService>, sessions: SessionManager, logger: Logger) -> ChildSpec {
        ChildSpec(
            id: "public",
            kind: .task { context in
                let service = try await service.wait()
                let settings = config.publicListener.bridge
                let routing: any TaskRouting = service.cluster.map { ClusterRouting($0) } ?? LocalRouting()
                let access = ViewerAccess(service: service, settings: settings, external: try await external(config.publicListener.jwt),
                                          routing: routing) { id in
                    await target(sessions, id)
                }
                let relay = service.cluster == nil ? nil : ClusterRelay(auth: ClusterAuth(secret: try ControlChild.clusterSecret(config).bytes))
                let server = PublicServer(access: access, settings: settings, tls: try tls(config.publicListener), relay: relay)
                let listen = config.publicListener.listen
                // systemd's socket (kioskd-public.socket) replaces public.listen.
                let endpoint: ListenEndpoint = socket.map { .inherited(fd: $0, name: "public") } ?? .hostname(listen.host, port: listen.port)
                try await server.run(endpoint, logger: logger) { port in
                    if socket != nil, port != listen.port {
                        logger.warning("the public socket systemd passed is not on public.listen's port: it is served, public.listen is not (edit kioskd-public.socket)",
                                       metadata: ["systemd_port": "\(port)", "public.listen": "\(listen.host):\(listen.port)"])
                    }
                    context.markReady(socket == nil ? "listening on \(listen.host):\(port)" : "listening on systemd's socket, port \(port)")
                }
            },
            restart: .permanent,
            shutdown: .timeout(.seconds(5)),
            readiness: .signaled,
            readyTimeout: .seconds(30))
    }

    /// HTTPS/WSS when the PEM files are given (the config loader has checked they come as a pair).
    static func tls(_ listener: Config.PublicListener) throws -> NIOSSLContext? {
        guard !listener.tlsCertFile.isEmpty, !listener.tlsKeyFile.isEmpty else { return nil }
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(listener.tlsCertFile).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: listener.tlsKeyFile, format: .pem)
            return try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key)))
        } catch {
            throw DaemonError.setup(key: "public.tls.cert_file", message: "cannot load the certificate or key: \(error)")
        }
    }

    /// The identity provider's tokens, when configured (the loader has checked issuer and
    /// audience): the key files are read at start.
    static func external(_ jwt: Config.ExternalJWT) async throws -> ExternalTokens? {
        guard !jwt.hs256SecretFile.isEmpty || !jwt.jwksFile.isEmpty else { return nil }
        var settings = ExternalTokenSettings(issuer: jwt.issuer, audience: jwt.audience)
        if !jwt.hs256SecretFile.isEmpty {
            guard let secret = readSmallFileBytes(jwt.hs256SecretFile, limit: 4096), secret.count >= 32 else {
                throw DaemonError.setup(key: "public.jwt.hs256_secret_file", message: "cannot read \(jwt.hs256SecretFile), or it holds fewer than 32 bytes")
            }
            settings.hs256Secret = secret
        }
        if !jwt.jwksFile.isEmpty {
            guard let text = readSmallFile(jwt.jwksFile) else {
                throw DaemonError.setup(key: "public.jwt.jwks_file", message: "cannot read \(jwt.jwksFile)")
            }
            settings.jwks = text
        }
        settings.taskClaim = jwt.taskClaim
        settings.roleClaim = jwt.roleClaim
        settings.requireTaskClaim = !jwt.anyTask
        do {
            return try await ExternalTokens(settings)
        } catch {
            throw DaemonError.setup(key: "public.jwt.jwks_file", message: "not a usable JWKS document: \(error)")
        }
    }

    /// Where a running task's viewers go (its session's x11vnc, or its websockify) and its
    /// agents (its browser's CDP WebSocket, asked for at each connection: it changes with every
    /// browser launch).
    static func target(_ sessions: SessionManager, _ id: String) async -> BridgeTarget? {
        guard let session = await sessions.session(id) else { return nil }
        let info = await session.info()
        guard info.state == .ready else { return nil }
        var browser: (@Sendable () async -> String?)?
        if let port = info.cdpURL.split(separator: ":").last.flatMap({ Int($0) }) { browser = { await browserDebuggerURL(cdpPort: port) } }
        return BridgeTarget(vncSocket: info.vncSocket, websockify: info.websockifyPort.map { ($0, session.websockifySecret ?? "") },
                            browser: browser) {
            _ = try? await session.releaseHeldInput()
        }
    }
}
