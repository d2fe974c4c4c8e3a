import NIOCore
import NIOWebSocket

/// How the listeners end a client's WebSocket (a viewer's, an agent's, a relayed client's), for
/// the handler that owns the connection (`ViewerHandler`, `RelayClientHandler`), on its event
/// loop.
///
/// A close that answers the client's own goes out and the connection closes. Any other close of
/// ours lingers: the client may still be sending (the rest of a message over the limit, frames
/// after a text one), and a socket closed with unread bytes is reset by the kernel, which can
/// destroy our close frame before the client reads it (Autobahn saw no close code at all, 1006,
/// instead of 1009). So, as the listener does for its HTTP refusals: the output is shut once the
/// close is out (the client reads the close, then the end of the stream), and what the client
/// still sends is read and dropped (`afterEnd`) until it answers with its own close or hangs up,
/// or 2 s pass. The handler lets reads through once it has ended.
///
/// A class: closing the connection can call the handler back at once (`channelInactive` →
/// `inactivated()`) while `end` runs, which a struct's mutating call would not allow.
final class LingeringClose {
    /// The connection has gone (`channelInactive`): nothing more is written to it.
    private(set) var inactive = false
    private var lingering = false
    private var deadline: Scheduled<Void>?

    /// Ends the connection: `close` (code, reason) first when given, answering the client's own
    /// close or lingering; without one, at once. Nothing when it has already gone. True when it
    /// lingers: the handler then lets a read it held go, to drain the client.
    func end(_ context: ChannelHandlerContext?, close: (code: UInt16, reason: String)?, answering: Bool) -> Bool {
        guard let context, !inactive else { return false }
        guard let close else {
            context.close(promise: nil)
            return false
        }
        let sent = context.writeAndFlush(NIOAny(WebSocketFrame.close(close, allocator: context.channel.allocator)))
        if answering {
            sent.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return false
        }
        lingering = true
        sent.assumeIsolated().whenComplete { _ in
            // (With TLS, NIOSSL sends its close_notify first.) Where one direction cannot be
            // shut alone, the connection closes whole.
            context.close(mode: .output).assumeIsolated().whenFailure { _ in context.close(promise: nil) }
        }
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) {
            context.close(promise: nil)
        }
        return true
    }

    /// A frame the client sent after the end: dropped, and its close, the answer to ours,
    /// completes the handshake (the server hangs up).
    func afterEnd(_ frame: WebSocketFrame, _ context: ChannelHandlerContext) {
        if lingering && frame.opcode == .connectionClose { context.close(promise: nil) }
    }

    /// The connection has gone.
    func inactivated() {
        inactive = true
        deadline?.cancel()
        deadline = nil
    }
}

@available(*, unavailable)
extension LingeringClose: Sendable {}

extension WebSocketFrame {
    /// A close frame: the code, then the reason cut to fit a control frame (125 bytes in all).
    /// `maskKey`: a client's close (to an upstream) is masked.
    static func close(_ close: (code: UInt16, reason: String), allocator: ByteBufferAllocator,
                      maskKey: WebSocketMaskingKey? = nil) -> WebSocketFrame {
        var data = allocator.buffer(capacity: 2 + 123)
        data.write(webSocketErrorCode: WebSocketErrorCode(codeNumber: Int(close.code)))
        data.writeBytes(close.reason.utf8.prefix(123))
        return WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: maskKey, data: data)
    }
}
