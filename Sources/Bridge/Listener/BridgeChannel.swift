import HTTPTypes
import Hummingbird
import HummingbirdCore
import Control
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOSSL
import NIOWebSocket

/// The public listener's connections: HTTP/1.1 with a WebSocket upgrade, as Hummingbird's
/// upgrade channel does, with one difference that matters to browsers: a refused upgrade is
/// answered with its status and JSON body (401/403/404/503, the error `decide` gave), where
/// Hummingbird's channel answers a bare 400 that a browser only sees as close code 1006. NIO
/// consumes the request of a refused upgrade, so that answer is written here, not by the
/// router. Connections get TCP_NODELAY.
///
/// The pipeline is NIO's upgradable HTTP server pipeline, assembled here rather than by
/// `configureUpgradableHTTPServerPipeline` so the request-line limit and the `RequestGuard`
/// (deadlines, JSON answers to what the decoder refuses) sit beside the decoder and leave with
/// it on the upgrade. A connection from an address over its limit gets only a 429.
struct BridgeChannel: HTTPChannelHandler {
    enum Decision: Sendable {
        case upgrade(HTTPFields, Serving)
        case refuse(APIError)
    }

    /// What an accepted upgrade becomes.
    enum Serving: Sendable {
        /// The VNC bridge (`ViewerHandler`; or the conformance suite's echo).
        case viewer(Session)
        /// A message relay to an upstream already upgraded (`RelayClientHandler`): a task's
        /// CDP endpoint, or the owner host's internal listener. `maxMessage`: the client's limit.
        case relay(NIOLoopBound<UpstreamHandler>, maxMessage: Int, RelaySession)
    }

    /// Decides on an upgrade request; `channel` is the client's connection (an upstream opened
    /// for it runs on its event loop and closes with it).
    typealias Decide = @Sendable (HTTPRequest, any Channel, Logger) async -> Decision
    /// Serves an upgraded viewer: its connection (the relay's handler is already in its
    /// pipeline) and its logger.
    typealias Session = @Sendable (ViewerConnection, Logger) async -> Void
    /// Serves an upgraded relay's client (its handler already joined to the upstream).
    typealias RelaySession = @Sendable (RelayConnection, Logger) async -> Void

    enum Negotiated: Sendable {
        case websocket(ViewerConnection, Session, Logger)
        case relayed(RelayConnection, RelaySession, Logger)
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, APIError)
        /// Over the per-address limit: `PeerRefusal` answers and closes.
        case turnedAway
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    /// TLS for direct exposure (behind an ALB the listener speaks plain HTTP).
    let tls: NIOSSLContext?
    let decide: Decide
    let maxFrameSize: Int
    /// The frame limit of relayed connections' decoders (CDP's messages are large).
    let maxRelayFrameSize: Int
    /// The clocks of relayed connections (viewers have theirs from their session).
    let settings: BridgeSettings
    let peers: PeerCounts
    let guardLimits: RequestGuard.Limits
    let maxRequestLine: Int

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.syncOptions?.setOption(.tcpOption(.tcp_nodelay), value: 1)
            if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
            guard peers.admit(channel) else {
                try channel.pipeline.syncOperations.addHandlers([HTTPResponseEncoder(), PeerRefusal(.tooManyFromPeer(limit: peers.limit))])
                return Value(negotiated: channel.eventLoop.makeSucceededFuture(.turnedAway), channel: channel)
            }
            let chosen = NIOLockedValueBox<Serving?>(nil)
            let refusal = NIOLockedValueBox<APIError?>(nil)
            let decide = self.decide
            let settings = self.settings
            let upgrader = SizedWebSocketUpgrader(chosen: chosen, maxFrameSize: maxFrameSize, maxRelayFrameSize: maxRelayFrameSize,
                // The decoder's refusals (a frame over the limit, a bad control frame) are
                // answered by `ViewerHandler`, with its lingering close: NIO's own handler
                // closes at once, and a reset could lose the close frame.
                enableAutomaticErrorHandling: false,
                shouldUpgrade: { channel, head in
                    let promise = channel.eventLoop.makePromise(of: HTTPHeaders?.self)
                    // NIO's upgrader asks through a future; the decision is async (token, store).
                    promise.completeWithTask {
                        guard let request = try? HTTPRequest(head, secure: false, splitCookie: false) else {
                            refusal.withLockedValue { $0 = APIError(.badRequest, "invalid_request", "malformed upgrade request") }
                            return nil
                        }
                        switch await decide(request, channel, logger) {
                        case .upgrade(let fields, let serving):
                            chosen.withLockedValue { $0 = serving }
                            return HTTPHeaders(fields)
                        case .refuse(let error):
                            refusal.withLockedValue { $0 = error }
                            return nil
                        }
                    }
                    return promise.futureResult
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        switch chosen.withLockedValue({ $0 }) {
                        case .viewer(let session):
                            let handler = ViewerHandler(loop: channel.eventLoop)
                            try channel.pipeline.syncOperations.addHandler(handler)
                            let viewer = ViewerConnection(loop: channel.eventLoop, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                            return Negotiated.websocket(viewer, session, logger)
                        case .relay(let upstream, let maxMessage, let session):
                            // The upstream was opened on this connection's event loop.
                            let handler = RelayClientHandler(loop: channel.eventLoop, settings: settings, maxMessage: maxMessage)
                            try channel.pipeline.syncOperations.addHandler(handler)
                            handler.start(upstream.value)
                            let client = RelayConnection(loop: channel.eventLoop, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                            return Negotiated.relayed(client, session, logger)
                        case nil:
                            throw ChannelError.inappropriateOperationForState
                        }
                    }
                })
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    // Plain requests, and refused upgrades (NIO hands the request on): both
                    // go to the HTTP router.
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        if let error = refusal.withLockedValue({ $0 }) { return Negotiated.refused(http, error) }
                        return Negotiated.http(http)
                    }
                })
            var decoderLimits = NIOHTTPDecoderLimitConfiguration()
            decoderLimits.maxHeaderFieldSize = guardLimits.maxHeaderBytes
            decoderLimits.maxHeaderListSize = guardLimits.maxHeaderBytes
            let encoder = HTTPResponseEncoder()
            let line = RequestLineLimit(limit: maxRequestLine)
            let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: decoderLimits))
            let requestGuard = RequestGuard(line: line, limits: guardLimits)
            let upgradeHandler = NIOTypedHTTPServerUpgradeHandler(httpEncoder: encoder, extraHTTPHandlers: [line, decoder, requestGuard],
                                                                  upgradeConfiguration: upgrades)
            try channel.pipeline.syncOperations.addHandlers([encoder, line, decoder, requestGuard, upgradeHandler])
            let negotiated = upgradeHandler.upgradeResultFuture
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let http1):
                await handleHTTP(asyncChannel: http1, logger: logger)
            case .refused(let http1, let error):
                let body = ByteBuffer(string: error.body + "\n")
                try await http1.executeThenClose { _, outbound in
                    try await outbound.write(contentsOf: [
                        .head(HTTPResponse(status: error.status, headerFields: [.contentType: "application/json", .contentLength: "\(body.readableBytes)",
                                                                             .connection: "close"])),
                        .body(body), .end(nil),
                    ])
                }
            case .websocket(let viewer, let session, let logger):
                await session(viewer, logger)
            case .relayed(let client, let session, let logger):
                await session(client, logger)
            case .turnedAway:
                break
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }
}

/// NIO's WebSocket upgrader with the frame limit of what the upgrade becomes: a viewer's
/// (`public.max_frame_size`, small: RFB input) or a relayed connection's (CDP's large
/// messages). NIO keeps one upgrader per protocol name and fixes the decoder's limit in it, so
/// this one holds both and picks, after `shouldUpgrade` has decided, the one that builds the
/// pipeline; the answer is built by either (they share the decision).
struct SizedWebSocketUpgrader: NIOTypedHTTPServerProtocolUpgrader {
    typealias UpgradeResult = BridgeChannel.Negotiated
    let chosen: NIOLockedValueBox<BridgeChannel.Serving?>
    let viewer: NIOTypedWebSocketServerUpgrader<UpgradeResult>
    let relay: NIOTypedWebSocketServerUpgrader<UpgradeResult>

    init(chosen: NIOLockedValueBox<BridgeChannel.Serving?>, maxFrameSize: Int, maxRelayFrameSize: Int,
         enableAutomaticErrorHandling: Bool,
         shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
         upgradePipelineHandler: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>) {
        self.chosen = chosen
        viewer = NIOTypedWebSocketServerUpgrader(maxFrameSize: maxFrameSize, enableAutomaticErrorHandling: enableAutomaticErrorHandling,
                                                 shouldUpgrade: shouldUpgrade, upgradePipelineHandler: upgradePipelineHandler)
        relay = NIOTypedWebSocketServerUpgrader(maxFrameSize: maxRelayFrameSize, enableAutomaticErrorHandling: enableAutomaticErrorHandling,
                                                shouldUpgrade: shouldUpgrade, upgradePipelineHandler: upgradePipelineHandler)
    }

    var supportedProtocol: String { viewer.supportedProtocol }
    var requiredUpgradeHeaders: [String] { viewer.requiredUpgradeHeaders }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        viewer.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        if case .relay = chosen.withLockedValue({ $0 }) {
            return relay.upgrade(channel: channel, upgradeRequest: upgradeRequest)
        }
        return viewer.upgrade(channel: channel, upgradeRequest: upgradeRequest)
    }
}
