import NIOCore

/// The VNC server's end of a relay, last in the connection to x11vnc (or after
/// `WebsockifyFrames` in websockify mode). Its reads go to the viewer as they are; the
/// viewer's filtered bytes are written here. Until the viewer's side joins, what arrives (the
/// RFB greeting) is held and reads stop.
final class VNCHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var viewer: ViewerHandler?
    private var early: [ByteBuffer] = []
    private var readPending = false
    private var closedEarly = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func join(_ viewer: ViewerHandler) {
        self.viewer = viewer
        let held = early
        early = []
        for buffer in held { viewer.fromServer(buffer) }
        viewer.deliveryComplete()
        if closedEarly { return closed() }
        resumeReading()
    }

    /// The relay has ended: close the connection to the VNC server.
    func unlink() {
        viewer = nil
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let viewer { viewer.fromServer(buffer) } else { early.append(buffer) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        viewer?.deliveryComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if viewer == nil { closedEarly = true } else { closed() }
        context.fireChannelInactive()
    }

    private func closed() {
        viewer?.finish("the VNC server closed the connection", close: (1001, "session closed"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed read or write ends the connection; channelInactive ends the relay.
        context.close(promise: nil)
    }

    func write(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    // MARK: Backpressure

    var canTakeWrites: Bool { context?.channel.isWritable ?? false }

    func read(context: ChannelHandlerContext) {
        if let viewer, viewer.canTakeWrites { context.read() } else { readPending = true }
    }

    func resumeReading() {
        guard readPending, viewer?.canTakeWrites ?? false else { return }
        readPending = false
        context?.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { viewer?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }
}

@available(*, unavailable)
extension VNCHandler: Sendable {}
