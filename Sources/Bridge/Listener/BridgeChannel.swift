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
        case upgrade(HTTPFields, Session)
        case refuse(APIError)
    }

    typealias Decide = @Sendable (HTTPRequest, Logger) async -> Decision
    /// Serves an upgraded viewer: its connection (the relay's handler is already in its
    /// pipeline) and its logger.
    typealias Session = @Sendable (ViewerConnection, Logger) async -> Void

    enum Negotiated: Sendable {
        case websocket(ViewerConnection, Session, Logger)
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
            let chosen = NIOLockedValueBox<Session?>(nil)
            let refusal = NIOLockedValueBox<APIError?>(nil)
            let decide = self.decide
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: maxFrameSize,
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
                        switch await decide(request, logger) {
                        case .upgrade(let fields, let session):
                            chosen.withLockedValue { $0 = session }
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
                        guard let session = chosen.withLockedValue({ $0 }) else { throw ChannelError.inappropriateOperationForState }
                        let handler = ViewerHandler(loop: channel.eventLoop)
                        try channel.pipeline.syncOperations.addHandler(handler)
                        let viewer = ViewerConnection(loop: channel.eventLoop, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                        return Negotiated.websocket(viewer, session, logger)
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
            case .turnedAway:
                break
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }
}
