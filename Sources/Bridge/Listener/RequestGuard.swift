import NIOCore
import NIOHTTP1

/// Counts the request line's bytes ahead of NIO's decoder, which counts the line against its
/// header limit and reports both as one error: a long URI (a token in the query) is answered
/// 414, not 431. Once it has refused, it drops what the peer still sends.
final class RequestLineLimit: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let limit: Int
    private var lineBytes = 0
    private var inLine = true
    private var refused = false
    /// Bytes of the current request so far: 0 means the connection is idle between requests.
    private(set) var received = 0

    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let bytes = unwrapInboundIn(data).readableBytesView
        received += bytes.count
        var index = bytes.startIndex
        while inLine, index < bytes.endIndex {
            guard let lf = bytes[index...].firstIndex(of: 0x0A) else {
                lineBytes += bytes.endIndex - index
                break
            }
            lineBytes += lf - index
            index = lf + 1
            // Empty lines before a request line are allowed (RFC 9112 §2.2).
            if lineBytes <= 1 { lineBytes = 0 } else { inLine = false }
        }
        if lineBytes > limit {
            refused = true
            context.fireErrorCaught(ListenerRefusal.requestLineTooLong(limit: limit))
            return
        }
        context.fireChannelRead(data)
    }

    /// The previous request has been read: what comes next starts a request line.
    func nextRequest() {
        inLine = true
        lineBytes = 0
        received = 0
    }
}

/// A connection's deadlines and refusals until it is an authenticated viewer (the upgrade
/// removes it with the decoder; the relay has its own limits). The request head must arrive
/// within `headerTimeout` of the start or of the previous answer; the connection must have
/// upgraded within `authTimeout` (an answer under way then gets `headerTimeout` more to be
/// sent: one its peer never reads would hold the connection); whatever the decoder refuses,
/// and WebSocket upgrades NIO's upgrader would drop, get their status and a JSON body, and the
/// connection is closed (NIO's own error handler answers a bare 400 and closes nothing).
/// Deadlines, not idle timers (IdleStateHandler): a peer sending a byte now and then would keep
/// an idle timer from firing.
final class RequestGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    struct Limits: Sendable {
        let headerTimeout: TimeAmount
        let authTimeout: TimeAmount
        let maxHeaderBytes: Int
    }

    private let line: RequestLineLimit
    private let limits: Limits
    private var headerDeadline: Scheduled<Void>?
    private var authDeadline: Scheduled<Void>?
    private var answerDeadline: Scheduled<Void>?
    /// A request head has arrived and its answer has not ended.
    private var inRequest = false
    /// An answer's head has been written and its end has not.
    private var responding = false
    private var answered = 0
    private var closeAfterAnswer = false
    private var refused = false

    init(line: RequestLineLimit, limits: Limits) {
        self.line = line
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancelDeadlines() }

    func channelInactive(context: ChannelHandlerContext) {
        cancelDeadlines()
        context.fireChannelInactive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard authDeadline == nil else { return }
        let loop = context.eventLoop, bound = NIOLoopBound((self, context), eventLoop: loop)
        authDeadline = loop.scheduleTask(in: limits.authTimeout) { bound.value.0.authExpired(bound.value.1) }
        armHeaderDeadline(context)
    }

    private func armHeaderDeadline(_ context: ChannelHandlerContext) {
        headerDeadline?.cancel()
        let loop = context.eventLoop, bound = NIOLoopBound((self, context), eventLoop: loop)
        headerDeadline = loop.scheduleTask(in: limits.headerTimeout) { bound.value.0.headerExpired(bound.value.1) }
    }

    private func cancelDeadlines() {
        headerDeadline?.cancel()
        authDeadline?.cancel()
        answerDeadline?.cancel()
        headerDeadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            headerDeadline?.cancel()
            headerDeadline = nil
            if let refusal = ListenerRefusal(webSocketUpgrade: head) { return refuse(context, refusal) }
            inRequest = true
        case .end:
            line.nextRequest()
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            responding = true
            return context.write(data, promise: promise)
        case .head, .body:
            return context.write(data, promise: promise)
        case .end:
            break
        }
        inRequest = false
        responding = false
        answered += 1
        if closeAfterAnswer {
            let done = promise ?? context.eventLoop.makePromise()
            context.write(data, promise: done)
            done.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.write(data, promise: promise)
        if !refused { armHeaderDeadline(context) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if refused { return }   // the decoder's complaints about what follows a refusal
        switch error {
        case let parser as HTTPParserError:
            refuse(context, ListenerRefusal(parser, maxHeaderBytes: limits.maxHeaderBytes))
        case let refusal as ListenerRefusal:
            refuse(context, refusal)
        default:
            context.fireErrorCaught(error)
        }
    }

    private func headerExpired(_ context: ChannelHandlerContext) {
        headerDeadline = nil
        // Idle between requests: a keep-alive ending, not a refusal.
        if answered > 0 && line.received == 0 { return context.close(promise: nil) }
        refuse(context, .headerTimeout)
    }

    private func authExpired(_ context: ChannelHandlerContext) {
        if inRequest {
            closeAfterAnswer = true
            let loop = context.eventLoop, bound = NIOLoopBound(context, eventLoop: loop)
            answerDeadline = loop.scheduleTask(in: limits.headerTimeout) { bound.value.close(promise: nil) }
        } else if line.received == 0 && answered > 0 {
            context.close(promise: nil)
        } else {
            refuse(context, .authTimeout)
        }
    }

    private func refuse(_ context: ChannelHandlerContext, _ refusal: ListenerRefusal) {
        refused = true
        cancelDeadlines()
        // Halfway through an answer there is no room for another.
        if responding { return context.close(promise: nil) }
        refusal.answer(context, wrap: { Self.wrapOutboundOut($0) })
    }
}

/// Turns a connection away before any HTTP (its address has too many open): the answer, then
/// the lingering close.
final class PeerRefusal: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = HTTPServerResponsePart

    let refusal: ListenerRefusal
    private var sent = false

    init(_ refusal: ListenerRefusal) { self.refusal = refusal }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { send(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        send(context)
        context.fireChannelActive()
    }

    /// What the peer sends meanwhile is dropped.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func send(_ context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        refusal.answer(context, wrap: { Self.wrapOutboundOut($0) })
    }
}
