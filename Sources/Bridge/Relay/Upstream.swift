import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Opens the far end of a message relay before the client's own upgrade is answered: a WebSocket
/// client upgrade to the task's Chromium or to the owner host's internal listener, on the
/// client's event loop (so the relay's two handlers call each other directly). The upstream's
/// refusal comes back whole (status and body) for the client's answer; an upgraded upstream
/// holds what it receives until the client's side joins.
enum Upstream {
    enum Answer: Sendable {
        /// Upgraded: its handler, and the subprotocol it chose (echoed to the client).
        case upgraded(NIOLoopBound<UpstreamHandler>, subprotocol: String?)
        /// Not upgraded: the status and (at most 64 KiB of) the body.
        case refused(status: HTTPResponseStatus, body: String)
    }

    private enum Negotiated: Sendable {
        case upgraded(NIOLoopBound<UpstreamHandler>, String?)
        case refused(EventLoopFuture<(HTTPResponseStatus, String)>)
    }

    /// `target`: path and query; `headers`: besides Host and the upgrade's own. `client`: the
    /// connection this is for, on whose event loop it runs and with whose close it closes
    /// (whatever happens to the client's upgrade, the upstream never outlives it).
    static func open(host: String, port: Int, target: String, headers: HTTPHeaders, client: any Channel, maxMessage: Int,
                     connectTimeout: TimeAmount = .seconds(5)) async throws -> Answer {
        let negotiated = try await ClientBootstrap(group: client.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16384, maximum: 1 << 20))
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                client.closeFuture.whenComplete { _ in channel.close(promise: nil) }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<Negotiated>(maxFrameSize: maxMessage) { channel, response in
                        channel.eventLoop.makeCompletedFuture {
                            let handler = UpstreamHandler()
                            try channel.pipeline.syncOperations.addHandler(handler)
                            return .upgraded(NIOLoopBound(handler, eventLoop: channel.eventLoop), response.headers.first(name: "Sec-WebSocket-Protocol"))
                        }
                    }
                    var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers)
                    head.headers.replaceOrAdd(name: "Host", value: port == 80 ? host : "\(host):\(port)")
                    head.headers.replaceOrAdd(name: "Content-Length", value: "0")
                    var configuration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: .init(
                        upgradeRequestHead: head, upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                let reader = RefusalReader(promise: channel.eventLoop.makePromise())
                                try channel.pipeline.syncOperations.addHandler(reader)
                                return .refused(reader.promise.futureResult)
                            }
                        }))
                    // The owner's bridge greets at once: its first frame may follow the 101.
                    configuration.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration)
                }
            }
        switch try await negotiated.get() {
        case .upgraded(let handler, let subprotocol):
            return .upgraded(handler, subprotocol: subprotocol)
        case .refused(let answer):
            let (status, body) = try await answer.get()
            return .refused(status: status, body: body)
        }
    }
}

/// Reads a refused upgrade's answer (head and body, the body bounded) and closes the connection.
private final class RefusalReader: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<(HTTPResponseStatus, String)>
    private var status = HTTPResponseStatus.badGateway
    private var body = ByteBuffer()

    init(promise: EventLoopPromise<(HTTPResponseStatus, String)>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = head.status
        case .body(var chunk): if body.readableBytes < 64 << 10 { body.writeBuffer(&chunk) }
        case .end:
            answered()
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        answered()
        context.fireChannelInactive()
    }

    private var done = false
    private func answered() {
        guard !done else { return }
        done = true
        promise.succeed((status, String(buffer: body)))
    }
}

@available(*, unavailable)
extension RefusalReader: Sendable {}
