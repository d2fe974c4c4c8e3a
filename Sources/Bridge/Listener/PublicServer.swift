import Control
import HTTPTypes
import Hummingbird
import ViewerInput
import Logging
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

/// The public listener: ALB health, the host's pressure, the VNC WebSocket bridge, the noVNC
/// viewer page. Health and pressure read the task service the viewers' access uses.
public struct PublicServer: Sendable {
    let access: ViewerAccess
    let settings: BridgeSettings
    let viewers: ViewerRegistry
    let tls: NIOSSLContext?

    /// `tls`: serve HTTPS/WSS (for direct exposure; behind a load balancer that ends TLS, nil).
    public init(access: ViewerAccess, settings: BridgeSettings, tls: NIOSSLContext? = nil) {
        self.access = access
        self.settings = settings
        self.tls = tls
        viewers = ViewerRegistry(limit: settings.maxViewers)
    }

    /// Serves on `endpoint` until cancelled (then gracefully, 3 s); `onReady` gets the port.
    public func run(_ endpoint: ListenEndpoint, logger: Logger, onReady: @escaping @Sendable (Int) -> Void) async throws {
        try await Self.listen(endpoint, settings: settings, tls: tls, router: httpRouter(), decide: decide(logger: logger), logger: logger, onReady: onReady)
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
                                    BridgeChannel(responder: responder, tls: tls, decide: decide, maxFrameSize: settings.maxFrameSize, peers: peers,
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
        router.get("/api/v1/vnc/ws") { request, _ -> Response in
            let grant = try await access.authorize(request)
            guard viewers.count(grant.taskID) < viewers.limit else { throw Self.full(grant.taskID, viewers.limit) }
            throw APIError(.badRequest, "upgrade_required", "this endpoint speaks WebSocket (Upgrade: websocket, version 13)")
        }
        router.get("/viewer") { request, _ -> Response in
            let grant = try await access.authorize(request)
            return ViewerPage.response(taskID: grant.taskID, token: request.uri.queryParameters.get("token") ?? "", role: grant.role)
        }
        router.middlewares.add(NoVNCFiles(directory: settings.noVNCDirectory, origins: settings.origins))
        return router
    }

    /// A viewer turned away at the limit (counted: made only to be answered).
    static func full(_ task: String, _ limit: Int) -> APIError {
        Counter(label: "kioskd_bridge_refused_total", dimensions: [("reason", "viewer_limit")]).increment()
        return APIError(.serviceUnavailable, "viewer_limit", "task '\(task)' already has \(limit) viewers (public.max_viewers)")
    }

    /// An upgrade request: authorized (else refused, and the HTTP route says why), a place
    /// under the viewer limit, and `binary` echoed when offered (noVNC offers none).
    func decide(logger: Logger) -> BridgeChannel.Decide {
        let access = self.access, settings = self.settings, viewers = self.viewers
        return { head, _ in
            let request = Request(head: head, body: .init(buffer: .init()))
            guard request.uri.path == "/api/v1/vnc/ws" else {
                return .refuse(APIError(.notFound, "not_found", "no WebSocket at \(request.uri.path) (the bridge is /api/v1/vnc/ws)"))
            }
            let grant: ViewerAccess.Grant
            do {
                grant = try await access.authorize(request)
            } catch let error as APIError {
                return .refuse(error)
            } catch {
                return .refuse(APIError(.internalServerError, "internal", "internal error; the daemon's log has the details"))
            }
            guard viewers.count(grant.taskID) < viewers.limit else { return .refuse(Self.full(grant.taskID, viewers.limit)) }
            let offered = head.headerFields[.secWebSocketProtocol]?.split(separator: ",").map { $0.filter { !$0.isWhitespace } } ?? []
            let fields: HTTPFields = offered.contains("binary") ? [.secWebSocketProtocol: "binary"] : [:]
            return .upgrade(fields, { viewer, log in
                await Self.serve(grant, viewer, access: access, viewers: viewers, settings: settings, logger: log)
            })
        }
    }

    static func serve(_ grant: ViewerAccess.Grant, _ viewer: ViewerConnection,
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
            let totals = await Relay(grant: grant, settings: settings).run(viewer, slot: slot) { reporter.yield($0) }
            reporter.finish()
            await group.waitForAll()
            return totals
        }
        slot.release()
        if grant.role == .control { await grant.target.releaseInput() }
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
