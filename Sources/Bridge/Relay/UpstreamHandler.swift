import NIOCore
import NIOWebSocket

/// The far end of a message relay, last in a WebSocket this host opened as a client: the task's
/// Chromium (its browser-level CDP endpoint), or the owner host's internal listener. Its data
/// frames go to the client as they came (unmasked, as a server sends them: no copy); the
/// client's go out masked (`write`). Pings are answered here; a close is handed to the client.
/// Until the client's side joins, what arrives is held and reads stop.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var context: ChannelHandlerContext?
    private var client: RelayClientHandler?
    private var early: [WebSocketFrame] = []
    private var readPending = false
    /// The upstream ended (its close frame's code and reason, or none) before the client joined.
    private var endedEarly: (code: UInt16, reason: String)??

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func join(_ client: RelayClientHandler) {
        self.client = client
        let held = early
        early = []
        for frame in held { client.fromUpstream(frame) }
        client.deliveryComplete()
        if let ended = endedEarly { return client.upstreamEnded(ended) }
        resumeReading()
    }

    /// The relay has ended: `close` goes to the upstream first when given (its code), then the
    /// connection closes.
    func unlink(close: (code: UInt16, reason: String)?) {
        client = nil
        guard let context else { return }
        guard let close else { return context.close(promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.close(close, allocator: context.channel.allocator, maskKey: .random())))
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        // A server never masks; should it, the client still gets plain bytes.
        if frame.maskKey != nil { frame = WebSocketFrame(fin: frame.fin, opcode: frame.opcode, data: frame.unmaskedData) }
        switch frame.opcode {
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.data)), promise: nil)
        case .pong:
            break
        case .connectionClose:
            var payload = frame.data
            let code = payload.readInteger(as: UInt16.self).flatMap { ViewerFrames.mayBeSent($0) ? $0 : nil } ?? 1000
            let reason = payload.readString(length: payload.readableBytes) ?? ""
            ended((code, reason))
        default:
            if let client { client.fromUpstream(frame) } else { early.append(frame) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        client?.deliveryComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        ended(nil)
        context.fireChannelInactive()
    }

    private func ended(_ close: (code: UInt16, reason: String)?) {
        if let client { client.upstreamEnded(close) } else if endedEarly == nil { endedEarly = .some(close) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed read or write, or a frame the decoder refused: channelInactive ends the relay.
        context.close(promise: nil)
    }

    /// A client's data frame (already unmasked), sent on masked as a client must.
    func write(_ frame: WebSocketFrame) {
        context?.write(wrapOutboundOut(WebSocketFrame(fin: frame.fin, opcode: frame.opcode, maskKey: .random(), data: frame.data)), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    // MARK: Backpressure

    var canTakeWrites: Bool { context?.channel.isWritable ?? false }

    func read(context: ChannelHandlerContext) {
        if let client, client.canTakeWrites { context.read() } else { readPending = true }
    }

    func resumeReading() {
        guard readPending, client?.canTakeWrites ?? false else { return }
        readPending = false
        context?.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { client?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }
}

@available(*, unavailable)
extension UpstreamHandler: Sendable {}
