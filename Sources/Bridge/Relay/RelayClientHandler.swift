import Metrics
import NIOCore
import NIOWebSocket

/// The client's end of a message relay, last in its WebSocket pipeline (after NIO's frame codec):
/// an agent on a task's CDP endpoint, or a viewer or agent relayed to the task's owner host.
/// Messages pass as they are, text or binary, fragmented as they came, both ways; nothing reads
/// them (CDP is Chromium's to parse, RFB the owner host's to filter). Both ends share the
/// client's event loop, so relaying is plain calls: no locks, no task hops per frame.
/// Backpressure: each side reads only while the other can take writes.
///
/// The client's frames obey RFC 6455 as a viewer's do (`ViewerFrames`: masking, reserved bits,
/// fragmentation, close codes, UTF-8 text, the message limit); the connection has a viewer's
/// clocks (`ConnectionClocks`: pings, idle, lifetime) and lingering close. A close from either side is passed on
/// with its code: the client's to the upstream (and answered), the upstream's to the client.
final class RelayClientHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let settings: BridgeSettings
    private var context: ChannelHandlerContext?
    private var upstream: UpstreamHandler?
    private var frames: ViewerFrames
    private var slot: ViewerSlot?
    private let done: EventLoopPromise<Relay.Totals>
    private var readPending = false
    private var ended = false
    private let connection = LingeringClose()
    private var totals = Relay.Totals(reason: "client closed")
    private let clocks: ConnectionClocks

    /// `maxMessage`: the largest message the client may send (frames of a message together).
    init(loop: any EventLoop, settings: BridgeSettings, maxMessage: Int) {
        self.settings = settings
        clocks = ConnectionClocks(loop: loop)
        frames = ViewerFrames(maxMessage: maxMessage, acceptsText: true)
        done = loop.makePromise()
    }

    /// Completes once the relay has ended, with what went through and why it ended.
    var finished: EventLoopFuture<Relay.Totals> { done.futureResult }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Joins the upstream (connected and upgraded before the client's upgrade was answered) and
    /// starts the clocks.
    func start(_ upstream: UpstreamHandler) {
        self.upstream = upstream
        clocks.start(settings, lifetimeReason: "reached the maximum connection lifetime",
                     finish: { self.finish($0, close: $1) },
                     sendPing: { self.context?.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil) })
        upstream.join(self)
    }

    /// The client's place under its limit, given back when the relay ends (at once if it has).
    func hold(_ slot: ViewerSlot) {
        if ended { slot.release() } else { self.slot = slot }
    }

    // MARK: From the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !ended else { return connection.afterEnd(frame, context) }
        switch frames.receive(frame) {
        case .data(let payload, let text, let first, let fin):
            totals.fromViewer += payload.readableBytes
            clocks.lastActivity = .now()
            upstream?.write(WebSocketFrame(fin: fin, opcode: first ? (text ? .text : .binary) : .continuation, data: payload))
        case .ping(let payload):
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)), promise: nil)
        case .pong:
            clocks.pong()
        case .closed(let code):
            finish("client closed", close: (code, ""), answering: true, upstreamClose: (code, ""))
        case .fail(let code, let reason, let why):
            finish(why, close: (code, reason))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        upstream?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.inactivated()
        finish("client closed", upstreamClose: (1001, "client gone"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            error == .invalidFrameLength
                ? finish("sent a frame over the message limit", close: (1009, "frame too large"))
                : finish("broke the WebSocket protocol (\(error))", close: (1002, "invalid control frame"))
        } else {
            finish("connection failed: \(error)")
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            finish("the daemon is shutting down", close: (1001, "server shutting down"))
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: To the client

    /// An upstream data frame, as it came.
    func fromUpstream(_ frame: WebSocketFrame) {
        guard !ended else { return }
        totals.toViewer += frame.length
        clocks.lastActivity = .now()
        context?.write(wrapOutboundOut(frame), promise: nil)
    }

    func deliveryComplete() {
        context?.flush()
    }

    /// The upstream closed (with its close frame's code and reason, or by hanging up).
    func upstreamEnded(_ close: (code: UInt16, reason: String)?) {
        let reason = close.map { "the upstream closed (\($0.code)\($0.reason.isEmpty ? "" : " \($0.reason)"))" } ?? "the upstream hung up"
        finish(reason, close: close ?? (1011, "upstream gone"), upstreamClose: close.map { ($0.code, "") })
    }

    // MARK: Backpressure

    var canTakeWrites: Bool { context?.channel.isWritable ?? false }

    func read(context: ChannelHandlerContext) {
        if ended || upstream?.canTakeWrites ?? false { context.read() } else { readPending = true }
    }

    func resumeReading() {
        guard readPending, upstream?.canTakeWrites ?? false else { return }
        readPending = false
        context?.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { upstream?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    // MARK: The end

    /// Ends the relay once: the client gets `close` when it is still there (lingering, unless
    /// `answering` its own close: `LingeringClose`), the upstream gets `upstreamClose` (or 1001)
    /// and is closed, the place is given back and the totals go to whoever awaits them.
    func finish(_ reason: String, close: (code: UInt16, reason: String)? = nil, answering: Bool = false,
                upstreamClose: (code: UInt16, reason: String)? = nil) {
        guard !ended else { return }
        ended = true
        slot?.release()
        slot = nil
        totals.reason = reason
        clocks.stop()
        if connection.end(context, close: close, answering: answering), readPending {
            readPending = false
            context?.read()
        }
        upstream?.unlink(close: upstreamClose ?? (1001, "going away"))
        upstream = nil
        done.succeed(totals)
    }
}

@available(*, unavailable)
extension RelayClientHandler: Sendable {}

/// An upgraded client of a message relay: its event loop and its handler, already joined to the
/// upstream.
struct RelayConnection: Sendable {
    let loop: any EventLoop
    let handler: NIOLoopBound<RelayClientHandler>

    /// Closes the client with `code` (a limit reached, a shutdown); an ended relay is left as it is.
    func refuse(_ reason: String, code: UInt16, _ text: String) {
        let handler = self.handler
        loop.execute { handler.value.finish(reason, close: (code, text)) }
    }

    /// Waits for the relay's end; a cancelled server (its graceful period over) closes it with
    /// 1001. `slot`: the client's place, given back on its event loop as the relay ends.
    func run(slot: ViewerSlot?) async -> Relay.Totals {
        let handler = self.handler
        if let slot { loop.execute { handler.value.hold(slot) } }
        let finished = loop.flatSubmit { handler.value.finished }
        return await withTaskCancellationHandler {
            (try? await finished.get()) ?? Relay.Totals(reason: "relay failed")
        } onCancel: {
            loop.execute { handler.value.finish("the daemon is shutting down", close: (1001, "server shutting down")) }
        }
    }
}
