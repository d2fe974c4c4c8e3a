import ViewerInput
import Metrics
import NIOCore
import NIOWebSocket

/// The viewer's end of a relay, last in the viewer's WebSocket pipeline (after NIO's frame
/// codec). Frames from the viewer go through the RFB filter to the VNC side; the VNC side's
/// reads leave here as binary frames built around its read buffers (the encoder writes the
/// header separately: no copy). Both ends share one event loop, so relaying is plain calls: no
/// locks, no task hops per buffer. Backpressure: each side reads only while the other can take
/// writes.
///
/// It starts before the VNC side is connected: it greets the viewer at once on x11vnc's behalf
/// (`RFBGreeting`), and a viewer that leaves meanwhile ends the relay, gives its place back and
/// closes the pending connection at once, whatever x11vnc is doing.
///
/// It also runs the connection's clocks (`ConnectionClocks`: a ping every interval, closed once
/// two go unanswered, the idle limit and the maximum lifetime) and enforces RFC 6455's rules for
/// the viewer's frames (`ViewerFrames`: reserved bits and opcodes, fragmentation, message size,
/// close codes).
///
/// The conformance suite's echo endpoint (`EchoListener`, kioskd-bench only) runs this same
/// handler with `startEcho`: every rule and clock as above, text accepted (checked UTF-8), and
/// each frame of a message sent back as it arrives instead of relayed.
final class ViewerHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let loop: any EventLoop
    private var context: ChannelHandlerContext?
    private var vnc: VNCHandler?
    /// The connection to the VNC side while it is being made (closed if the viewer leaves first).
    private var upstream: (any Channel)?
    private var greeting = RFBGreeting()
    private var slot: ViewerSlot?
    private var filter = RFBFilter(policy: .init(role: .view))
    private var frames = ViewerFrames(maxMessage: 1 << 20, acceptsText: false)
    private var settings = BridgeSettings()
    /// Where the viewer's messages go: the VNC side (the relay), or back to the viewer (the
    /// conformance endpoint's echo).
    private var echo = false
    /// Whether the viewer's messages have somewhere to go: the VNC side has joined, or the echo
    /// has started. Until then frames are held in `early`.
    private var joined = false
    private var done: EventLoopPromise<Relay.Totals>?
    /// Frames that arrived before the VNC side joined (at most one read's worth: reads are held).
    private var early: [WebSocketFrame] = []
    private var readPending = false
    private var ended = false
    /// The viewer's connection as it ends: our close, answered or lingering.
    private let connection = LingeringClose()
    private var totals = Relay.Totals()
    private let clocks: ConnectionClocks
    /// Keysyms the filter refused and not yet reported; reports go at most once a second.
    private var refused: [UInt32: Int] = [:]
    private var lastReport: NIODeadline?
    private var reportDue: Scheduled<Void>?
    private var onRefused: (@Sendable ([UInt32: Int]) -> Void)?

    init(loop: any EventLoop) {
        self.loop = loop
        clocks = ConnectionClocks(loop: loop)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Starts the relay: greets the viewer and starts the clocks; the VNC side joins once it is
    /// connected. The future completes when the relay has ended, which gives `slot` back.
    /// `onRefused` gets the keysyms the filter refused, counted, at most once a second.
    func start(policy: RFBFilter.Policy, settings: BridgeSettings, slot: ViewerSlot,
               onRefused: @escaping @Sendable ([UInt32: Int]) -> Void) -> EventLoopFuture<Relay.Totals> {
        if ended {
            slot.release()
            return loop.makeSucceededFuture(totals)
        }
        let done = loop.makePromise(of: Relay.Totals.self)
        self.done = done
        self.slot = slot
        self.filter = RFBFilter(policy: policy)
        self.frames = ViewerFrames(maxMessage: settings.maxFrameSize, acceptsText: false)
        self.settings = settings
        self.onRefused = onRefused
        startClocks()
        deliver(ByteBuffer(bytes: RFBGreeting.version))
        deliveryComplete()
        return done.futureResult
    }

    /// The conformance endpoint only (kioskd-bench's Autobahn run; the daemon never calls it):
    /// no VNC side, no greeting; each message frame goes back to the viewer as it came (text
    /// accepted, checked UTF-8), under the same rules, limits and clocks as a relayed viewer.
    func startEcho(settings: BridgeSettings) -> EventLoopFuture<Relay.Totals> {
        if ended { return loop.makeSucceededFuture(totals) }
        let done = loop.makePromise(of: Relay.Totals.self)
        self.done = done
        self.settings = settings
        frames = ViewerFrames(maxMessage: settings.maxFrameSize, acceptsText: true)
        echo = true
        startClocks()
        joined = true
        let held = early
        early = []
        for frame in held where !ended { receive(frame) }
        context?.flush()
        resumeReading()
        return done.futureResult
    }

    /// The connection to the VNC side has been created and is connecting; false when the relay
    /// has already ended (the caller abandons it).
    func connecting(_ channel: any Channel) -> Bool {
        guard !ended else { return false }
        upstream = channel
        return true
    }

    /// The VNC side is connected: what the viewer sent meanwhile goes to it, and relaying begins.
    func join(_ vnc: VNCHandler) {
        upstream = nil
        if ended { return vnc.unlink() }
        self.vnc = vnc
        joined = true
        vnc.join(self)
        let held = early
        early = []
        for frame in held where !ended { receive(frame) }
        vnc.flush()
        resumeReading()
    }

    // MARK: From the viewer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !ended else { return connection.afterEnd(frame, context) }
        if joined { receive(frame) } else { early.append(frame) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if echo { context.flush() } else { vnc?.flush() }
    }

    private func receive(_ frame: WebSocketFrame) {
        switch frames.receive(frame) {
        case .data(let payload, let text, let first, let fin):
            totals.fromViewer += payload.readableBytes
            clocks.lastActivity = .now()
            if echo {
                totals.toViewer += payload.readableBytes
                send(WebSocketFrame(fin: fin, opcode: first ? (text ? .text : .binary) : .continuation, data: payload))
                return
            }
            let out = filter.feed(payload.readableBytesView)
            if !out.forward.isEmpty, let vnc { vnc.write(ByteBuffer(bytes: out.forward)) }
            for (kind, n) in out.dropped { Counter(label: "kioskd_bridge_dropped_total", dimensions: [("message", kind)]).increment(by: n) }
            if !out.refusedKeysyms.isEmpty { noteRefused(out.refusedKeysyms) }
            if let violation = out.violation { finish(violation.reason, close: (violation.code, violation.reason)) }
        case .ping(let payload):
            send(WebSocketFrame(fin: true, opcode: .pong, data: payload))
            context?.flush()
        case .pong:
            clocks.pong()
        case .closed(let code):
            // The viewer's own close is answered with its code, as RFC 6455 asks.
            finish("viewer closed", close: (code, ""), answering: true)
        case .fail(let code, let reason, let why):
            finish(why, close: (code, reason))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.inactivated()
        finish("viewer closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            // NIO's decoder refused a frame (its automatic answer is off: it would close at once,
            // without the linger): over the frame limit, or a control frame fragmented or over
            // 125 bytes. What arrives after it is dropped by the decoder, reported as
            // `dataReceivedInErrorState`, while the close lingers.
            error == .invalidFrameLength
                ? finish("sent a frame over \(settings.maxFrameSize) bytes", close: (1009, "frame too large"))
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

    // MARK: To the viewer

    /// A read from the VNC side, as one binary frame, less the server's own greeting (the
    /// viewer has had it from `start`).
    func fromServer(_ buffer: ByteBuffer) {
        var buffer = buffer
        if !greeting.done {
            guard let taken = greeting.swallow(buffer.readableBytesView) else {
                return finish("the VNC server did not greet with RFB 3.8", close: (1011, "unexpected VNC server"))
            }
            buffer.moveReaderIndex(forwardBy: taken)
            guard buffer.readableBytes > 0 else { return }
        }
        deliver(buffer)
    }

    private func deliver(_ buffer: ByteBuffer) {
        guard !ended else { return }
        totals.toViewer += buffer.readableBytes
        clocks.lastActivity = .now()
        send(WebSocketFrame(fin: true, opcode: .binary, data: buffer))
    }

    func deliveryComplete() {
        context?.flush()
    }

    private func send(_ frame: WebSocketFrame) {
        context?.write(wrapOutboundOut(frame), promise: nil)
    }

    // MARK: Backpressure

    var canTakeWrites: Bool { context?.channel.isWritable ?? false }

    /// Whether what the viewer sends can go on: the VNC side takes writes (or, echoing, the
    /// viewer itself does).
    private var sinkTakesWrites: Bool { echo ? canTakeWrites : vnc?.canTakeWrites ?? false }

    func read(context: ChannelHandlerContext) {
        // Once ended, reads only drain the viewer (see `LingeringClose`).
        if ended || sinkTakesWrites { context.read() } else { readPending = true }
    }

    func resumeReading() {
        guard readPending, sinkTakesWrites else { return }
        readPending = false
        context?.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            if echo { resumeReading() } else { vnc?.resumeReading() }
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Clocks

    private func startClocks() {
        clocks.start(settings, lifetimeReason: "reached the maximum viewer lifetime",
                     finish: { self.finish($0, close: $1) },
                     sendPing: {
                         self.send(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer()))
                         self.context?.flush()
                     })
    }

    // MARK: Refused keysyms

    private func noteRefused(_ keysyms: [UInt32]) {
        for keysym in keysyms {
            refused[keysym, default: 0] += 1
            let refusal = ViewerKeysyms.refusal(keysym)?.rawValue ?? "unknown"
            Counter(label: "kioskd_bridge_keysyms_refused_total", dimensions: [("class", refusal)]).increment()
        }
        guard reportDue == nil else { return }
        let due = lastReport.map { $0 + .seconds(1) } ?? .now()
        if due <= .now() { return reportRefused() }
        reportDue = loop.assumeIsolated().scheduleTask(deadline: due) {
            self.reportDue = nil
            self.reportRefused()
        }
    }

    private func reportRefused() {
        guard !refused.isEmpty else { return }
        lastReport = .now()
        onRefused?(refused)
        refused = [:]
    }

    // MARK: The end

    /// Ends the relay once: the viewer gets `close` (code, reason) when it is still there, the
    /// VNC side is closed, and the totals go to whoever awaits them. `answering`: the close
    /// answers the viewer's own, so the connection closes once it is out; any other close of
    /// ours lingers (`LingeringClose`).
    func finish(_ reason: String, close: (code: UInt16, reason: String)? = nil, answering: Bool = false) {
        guard !ended else { return }
        ended = true
        // Before the viewer's close goes out: a client that has seen it finds the place free.
        slot?.release()
        slot = nil
        totals.reason = reason
        reportRefused()
        reportDue?.cancel()
        reportDue = nil
        clocks.stop()
        early = []
        if connection.end(context, close: close, answering: answering), readPending {
            readPending = false
            context?.read()
        }
        vnc?.unlink()
        vnc = nil
        upstream?.close(promise: nil)
        upstream = nil
        done?.succeed(totals)
        done = nil
    }
}

@available(*, unavailable)
extension ViewerHandler: Sendable {}

/// An upgraded viewer: its event loop and the relay's handler, already in its pipeline so no
/// frame is missed while the VNC side connects.
struct ViewerConnection: Sendable {
    let loop: any EventLoop
    let handler: NIOLoopBound<ViewerHandler>

    /// Closes the viewer with `code`: a full session, an unreachable VNC server, a shutdown (a
    /// relay that has already ended is left as it is).
    func refuse(_ reason: String, code: UInt16, _ text: String) {
        let handler = self.handler
        loop.execute { handler.value.finish(reason, close: (code, text)) }
    }
}

extension ViewerConnection {
    /// The conformance endpoint's session (`EchoListener`): echoes until the viewer, a rule or a
    /// clock ends it; a cancelled server closes it with 1001 as it does a relayed viewer.
    func echo(settings: BridgeSettings) async -> Relay.Totals {
        let handler = self.handler
        let running = loop.flatSubmit { handler.value.startEcho(settings: settings) }
        return await withTaskCancellationHandler {
            (try? await running.get()) ?? Relay.Totals(reason: "echo failed")
        } onCancel: {
            refuse("the daemon is shutting down", code: 1001, "server shutting down")
        }
    }
}
