import Control
import HTTPTypes
import Hummingbird
import ViewerInput
import Logging
import FoundationEssentials
import Metrics
import NIOCore
import NIOSSL

/// The public listener's request context.
public struct PublicContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

/// The public listener: ALB health, the host's pressure, the VNC WebSocket bridge, a task's CDP
/// endpoint, the noVNC viewer page. Health and pressure read the task service the viewers'
/// access uses. In cluster mode, a viewer or agent of a task another host owns is relayed to
/// that host's internal listener (`ClusterRelay`) — which is this same server, made by
/// `internalListener`: every request proves it comes from a host of the cluster, and nothing is
/// relayed again.
public struct PublicServer: Sendable {
    let access: ViewerAccess
    let settings: BridgeSettings
    let viewers: ViewerRegistry
    let agents: ViewerRegistry
    /// Connections relayed to other hosts, open now (by task).
    let relayed: ViewerRegistry
    let tls: NIOSSLContext?
    /// How to reach other hosts' internal listeners (cluster mode).
    let relay: ClusterRelay?
    /// The internal listener's check: every request carries this cluster's proof.
    let proof: ClusterAuth?

    /// `tls`: serve HTTPS/WSS (for direct exposure; behind a load balancer that ends TLS, nil).
    /// `relay`: cluster mode, where `access`'s routing may name another host.
    public init(access: ViewerAccess, settings: BridgeSettings, tls: NIOSSLContext? = nil, relay: ClusterRelay? = nil) {
        self.init(access: access, settings: settings, tls: tls, relay: relay, proof: nil)
    }

    private init(access: ViewerAccess, settings: BridgeSettings, tls: NIOSSLContext?, relay: ClusterRelay?, proof: ClusterAuth?) {
        self.access = access
        self.settings = settings
        self.tls = tls
        self.relay = relay
        self.proof = proof
        viewers = ViewerRegistry(limit: settings.maxViewers)
        agents = ViewerRegistry(limit: settings.maxViewers) { Gauge(label: "kioskd_bridge_agents").record($0) }
        relayed = ViewerRegistry(limit: .max) { Gauge(label: "kioskd_bridge_relayed").record($0) }
    }

    /// A cluster host's internal listener (`cluster.listen`): the viewer and CDP routes with
    /// their checks (token, role, task, limits), for the other hosts' relays only: a request
    /// without a valid proof is 401 before anything else. It serves this host's tasks alone
    /// (its routing is local whatever `access`'s is), so a connection is never relayed twice.
    /// `settings`: the public listener's; one address (a relaying host) may hold every
    /// connection.
    public static func internalListener(access: ViewerAccess, settings: BridgeSettings, auth: ClusterAuth) -> PublicServer {
        var settings = settings
        settings.maxConnectionsPerPeer = .max
        // No browser opens it: the relaying host has judged the Origin (and does not pass it on).
        settings.origins = []
        return PublicServer(access: access.local(), settings: settings, tls: nil, relay: nil, proof: auth)
    }

    /// Serves on `endpoint` until cancelled (then gracefully, 3 s); `onReady` gets the port.
    public func run(_ endpoint: ListenEndpoint, logger: Logger, onReady: @escaping @Sendable (Int) -> Void) async throws {
        try await Self.listen(endpoint, settings: settings, tls: tls, router: proof.map(internalRouter) ?? httpRouter(), decide: decide(logger: logger),
                              logger: logger, onReady: onReady)
    }

    /// The listener's connections, whatever they serve: the connection limits, the request guard
    /// and NIO's WebSocket upgrade (`BridgeChannel`), plain requests to `router`, upgrades as
    /// `decide` says. The daemon's listener, and the conformance suite's echo endpoint
    /// (`EchoListener`), which must run on exactly this stack.
    static func listen(_ endpoint: ListenEndpoint, settings: BridgeSettings, tls: NIOSSLContext?, router: Router<PublicContext>,
                       decide: @escaping BridgeChannel.Decide, logger: Logger, onReady: @escaping @Sendable (Int) -> Void) async throws {
        let limits = ConnectionLimits.resolve(settings, openFiles: ConnectionLimits.openFileLimit())
        if let asked = settings.maxConnections, asked > limits.total {
            logger.warning("public.max_connections lowered to what the open-file limit leaves room for",
                           metadata: ["asked": "\(asked)", "used": "\(limits.total)", "open_files": "\(ConnectionLimits.openFileLimit())"])
        }
        logger.info("public listener connection limits", metadata: ["limits": "\(limits)"])
        let guardLimits = RequestGuard.Limits(headerTimeout: TimeAmount(settings.headerTimeout), authTimeout: TimeAmount(settings.authTimeout),
                                              maxHeaderBytes: settings.maxHeaderBytes)
        let peers = PeerCounts(limit: limits.perPeer)
        let server = HTTPServer(router: router, endpoint: endpoint,
                                childChannel: { responder in
                                    BridgeChannel(responder: responder, tls: tls, decide: decide, maxFrameSize: settings.maxFrameSize,
                                                  maxRelayFrameSize: max(settings.maxAgentMessage, settings.maxFrameSize), settings: settings, peers: peers,
                                                  guardLimits: guardLimits, maxRequestLine: settings.maxRequestLine)
                                },
                                connections: ListenerConnections(limit: limits.total), logger: logger) { channel in
            onReady(channel.localAddress?.port ?? 0)
        }
        try await serveUntilCancelled(server, logger: logger)
    }

    func httpRouter() -> Router<PublicContext> {
        let router = Router(context: PublicContext.self)
        router.middlewares.add(PublicErrors())
        let access = self.access, viewers = self.viewers, settings = self.settings
        // Liveness only (one broken session never makes the host unhealthy); a drain makes it
        // 503 so the load balancer moves on.
        router.get("/health") { _, _ in
            await access.service.capacity().draining
                ? Response(status: .serviceUnavailable, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"draining"}"#)))
                : Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"healthy"}"#)))
        }
        // Whether a new task would start here now: 200 while it would, 503 when it would wait
        // (no slot, no memory, memory pressure, tasks queued) or the host drains — for the API
        // layer's target group or a scaling policy, never for the viewers' (a full host still
        // serves its tasks' viewers).
        router.get("/pressure") { _, _ in
            let c = await access.service.capacity()
            var w = JSONWriter()
            w.field("accepting", c.accepting)
            w.field("reason", c.reason)
            c.write(into: &w)
            var headers: HTTPFields = [.contentType: "application/json"]
            if !c.accepting { headers[.retryAfter] = "\(Capacity.retryAfterSeconds)" }
            return Response(status: c.accepting ? .ok : .serviceUnavailable, headers: headers, body: .init(byteBuffer: ByteBuffer(string: w.text + "\n")))
        }
        // Reached without an upgrade (or when the upgrade was refused): the same checks, so a
        // refusal is a status with a JSON body, never a bare close.
        Self.webSocketRoutes(router, access: access, viewers: viewers, agents: agents)
        router.get("/viewer") { request, _ -> Response in
            let grant = try await access.authorize(request)
            return ViewerPage.response(taskID: grant.taskID, token: request.uri.queryParameters.get("token") ?? "", role: grant.role)
        }
        router.middlewares.add(NoVNCFiles(directory: settings.noVNCDirectory, origins: settings.origins))
        return router
    }

    /// The WebSocket routes reached without an upgrade (or when the upgrade was refused): the
    /// same checks, so a refusal is a status with a JSON body, never a bare close.
    static func webSocketRoutes(_ router: Router<PublicContext>, access: ViewerAccess, viewers: ViewerRegistry, agents: ViewerRegistry) {
        router.get("/api/v1/vnc/ws") { request, _ -> Response in
            let grant = try await access.authorize(request, at: .viewer)
            if case .here = grant.destination, viewers.count(grant.taskID) >= viewers.limit { throw Self.full(grant.taskID, viewers.limit) }
            throw APIError(.badRequest, "upgrade_required", "this endpoint speaks WebSocket (Upgrade: websocket, version 13)")
        }
        router.get("/api/v1/cdp/ws") { request, _ -> Response in
            let grant = try await access.authorize(request, at: .agent)
            if case .here = grant.destination, agents.count(grant.taskID) >= agents.limit { throw Self.full(grant.taskID, agents.limit, agents: true) }
            throw APIError(.badRequest, "upgrade_required", "this endpoint speaks WebSocket (Upgrade: websocket, version 13): Playwright's connect_over_cdp, or any CDP client")
        }
    }

    /// The internal listener's routes: the proof first, then the WebSocket routes' answers.
    func internalRouter(_ auth: ClusterAuth) -> Router<PublicContext> {
        let router = Router(context: PublicContext.self)
        router.middlewares.add(PublicErrors())
        router.middlewares.add(ClusterProofCheck(auth: auth))
        Self.webSocketRoutes(router, access: access, viewers: viewers, agents: agents)
        return router
    }

    /// A viewer or agent turned away at the limit (counted: made only to be answered).
    static func full(_ task: String, _ limit: Int, agents: Bool = false) -> APIError {
        Counter(label: "kioskd_bridge_refused_total", dimensions: [("reason", agents ? "agent_limit" : "viewer_limit")]).increment()
        return agents
            ? APIError(.serviceUnavailable, "agent_limit", "task '\(task)' already has \(limit) agents connected (public.max_viewers)")
            : APIError(.serviceUnavailable, "viewer_limit", "task '\(task)' already has \(limit) viewers (public.max_viewers)")
    }

    /// An upgrade request: on the internal listener, the proof first; then authorized for its
    /// door (else refused, and the HTTP route says why). A viewer here gets a place under the
    /// viewer limit, and `binary` echoed when offered (noVNC offers none); an agent here gets a
    /// place under the same limit and the browser's CDP WebSocket, opened before the answer; a
    /// task another host owns gets that host's answer, relayed.
    func decide(logger: Logger) -> BridgeChannel.Decide {
        let server = self
        return { head, channel, _ in
            if let proof = server.proof,
               let refusal = proof.check(head.headerFields[ClusterProofCheck.field], method: head.method.rawValue, target: head.path ?? "",
                                         now: Int64(Date.now.timeIntervalSince1970)) {
                return .refuse(ClusterProofCheck.refuse(refusal))
            }
            let request = Request(head: head, body: .init(buffer: .init()))
            let door: ViewerAccess.Door
            switch request.uri.path {
            case "/api/v1/vnc/ws": door = .viewer
            case "/api/v1/cdp/ws": door = .agent
            default:
                return .refuse(APIError(.notFound, "not_found", "no WebSocket at \(request.uri.path) (the bridge is /api/v1/vnc/ws, a task's CDP endpoint /api/v1/cdp/ws)"))
            }
            do {
                let grant = try await server.access.authorize(request, at: door)
                switch (grant.destination, door) {
                case (.owner(_, let address), _):
                    return try await server.toOwner(grant, door, address: address, head, channel)
                case (.here, .viewer):
                    return server.viewer(grant, head)
                case (.here(let target), .agent):
                    return try await server.agent(grant, target, channel)
                }
            } catch let error as APIError {
                return .refuse(error)
            } catch {
                return .refuse(APIError(.internalServerError, "internal", "internal error; the daemon's log has the details"))
            }
        }
    }

    private func viewer(_ grant: ViewerAccess.Grant, _ head: HTTPRequest) -> BridgeChannel.Decision {
        guard case .here(let target) = grant.destination else { return .refuse(APIError(.internalServerError, "internal", "not a local task")) }
        guard viewers.count(grant.taskID) < viewers.limit else { return .refuse(Self.full(grant.taskID, viewers.limit)) }
        let offered = head.headerFields[.secWebSocketProtocol]?.split(separator: ",").map { $0.filter { !$0.isWhitespace } } ?? []
        let fields: HTTPFields = offered.contains("binary") ? [.secWebSocketProtocol: "binary"] : [:]
        let access = self.access, viewers = self.viewers, settings = self.settings
        return .upgrade(fields, .viewer({ viewer, log in
            await Self.serve(grant, target, viewer, access: access, viewers: viewers, settings: settings, logger: log)
        }))
    }

    static func serve(_ grant: ViewerAccess.Grant, _ target: BridgeTarget, _ viewer: ViewerConnection,
                      access: ViewerAccess, viewers: ViewerRegistry, settings: BridgeSettings, logger: Logger) async {
        guard let slot = viewers.join(grant.taskID) else {
            return viewer.refuse("viewer limit reached", code: 1013, "viewer limit reached")
        }
        var log = logger
        log[metadataKey: "task"] = "\(grant.taskID)"
        log[metadataKey: "role"] = "\(grant.role.rawValue)"
        Counter(label: "kioskd_bridge_connections_total", dimensions: [("role", grant.role.rawValue)]).increment()
        let started = ContinuousClock.now
        let connected = ["role": grant.role.rawValue, "viewers": "\(viewers.count(grant.taskID))"]
        log.info("viewer connected")
        // The relay starts at once (the viewer is greeted while x11vnc connects); the task's
        // events are written beside it, in order: connected, refused keysyms (the relay reports
        // them from its event loop), and disconnected once the relay and they are done.
        let (reports, reporter) = AsyncStream.makeStream(of: [UInt32: Int].self, bufferingPolicy: .bufferingOldest(16))
        let totals = await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await access.note(grant.taskID, "viewer_connected", connected)
                for await refused in reports { await access.note(grant.taskID, "keysym_blocked", Self.describe(refused)) }
            }
            let totals = await Relay(role: grant.role, target: target, settings: settings).run(viewer, slot: slot) { reporter.yield($0) }
            reporter.finish()
            await group.waitForAll()
            return totals
        }
        slot.release()
        if grant.role == .control { await target.releaseInput() }
        let seconds = (ContinuousClock.now - started).components.seconds
        await access.note(grant.taskID, "viewer_disconnected", ["role": grant.role.rawValue, "reason": totals.reason, "seconds": "\(seconds)",
                                                                 "bytes_in": "\(totals.fromViewer)", "bytes_out": "\(totals.toViewer)"])
        log.info("viewer disconnected", metadata: ["reason": "\(totals.reason)", "bytes_in": "\(totals.fromViewer)", "bytes_out": "\(totals.toViewer)"])
    }
}

extension PublicServer {
    /// A keysym_blocked event's fields: each keysym in hex with why it was refused and how often.
    static func describe(_ refused: [UInt32: Int]) -> [String: String] {
        let keysyms = refused.sorted { $0.key < $1.key }.map { keysym, n in
            "0x\(String(keysym, radix: 16)) (\(ViewerKeysyms.refusal(keysym)?.rawValue ?? "unknown"))\(n > 1 ? " x\(n)" : "")"
        }
        return ["keysyms": keysyms.joined(separator: ", "), "count": "\(refused.values.reduce(0, +))"]
    }
}

extension ViewerAccess {
    /// A task event from the bridge (string fields).
    func note(_ task: String, _ type: String, _ fields: [String: String]) async {
        var data = JSONWriter()
        for (k, v) in fields.sorted(by: { $0.key < $1.key }) { data.field(k, v) }
        _ = try? await service.append(task, type: type, data: data.text)
    }
}

/// Errors as `{"error": {"code", "message"}}` on the public listener too.
struct PublicErrors: RouterMiddleware {
    func handle(_ request: Request, context: PublicContext, next: (Request, PublicContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            throw APIError(error.status, error.status == .notFound ? "not_found" : "http_\(error.status.code)",
                           error.status == .notFound ? "no route \(request.method) \(request.uri.path)" : error.status.reasonPhrase)
        } catch {
            context.logger.error("unexpected error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            throw APIError(.internalServerError, "internal", "internal error; the daemon's log has the details")
        }
    }
}
