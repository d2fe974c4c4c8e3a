import Metrics
import ViewerInput
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Connects one viewer to its session and relays until either side ends: x11vnc directly, or
/// the session's websockify in websockify mode. The relay itself is two channel handlers on the
/// viewer's event loop (`ViewerHandler`, `VNCHandler`); this connects them and reports. The
/// viewer's side starts first (it greets the viewer while the VNC side connects), so a viewer
/// that leaves during the connect ends the relay at once and abandons the connect.
struct Relay {
    let role: ViewerRole
    let target: BridgeTarget
    let settings: BridgeSettings

    struct Totals: Sendable {
        var fromViewer = 0
        var toViewer = 0
        var reason = "viewer closed"
    }

    /// Relays until either side ends; returns what went through and why it ended. The relay's
    /// end gives `slot` back. `onRefused` gets the keysyms the filter refused (at most once a
    /// second).
    func run(_ viewer: ViewerConnection, slot: ViewerSlot, onRefused: @escaping @Sendable ([UInt32: Int]) -> Void) async -> Totals {
        let policy = RFBFilter.Policy(role: role == .control ? .control : .view, clipboard: settings.clipboard)
        let settings = self.settings, handler = viewer.handler
        let running = viewer.loop.flatSubmit { handler.value.start(policy: policy, settings: settings, slot: slot, onRefused: onRefused) }
        // A cancelled server (its graceful period over) ends the relay instead of waiting on it.
        let totals = await withTaskCancellationHandler {
            do {
                let upstream = try await connect(viewer)
                viewer.loop.execute { handler.value.join(upstream.value) }
            } catch {
                viewer.refuse("cannot reach the session's VNC server: \(error)", code: 1011, "session unavailable")
            }
            return (try? await running.get()) ?? Totals(reason: "relay failed")
        } onCancel: {
            viewer.refuse("the daemon is shutting down", code: 1001, "server shutting down")
        }
        Counter(label: "kioskd_bridge_bytes_total", dimensions: [("direction", "from_viewer")]).increment(by: totals.fromViewer)
        Counter(label: "kioskd_bridge_bytes_total", dimensions: [("direction", "to_viewer")]).increment(by: totals.toViewer)
        return totals
    }

    private func connect(_ viewer: ViewerConnection) async throws -> NIOLoopBound<VNCHandler> {
        if let websockify = target.websockify {
            return try await viaWebsockify(websockify.port, secret: websockify.secret, viewer)
        }
        return try await direct(target.vncSocket, viewer)
    }

    /// x11vnc on its Unix socket, with big reads (a screen update crosses in a few frames, not
    /// hundreds).
    private func direct(_ socket: String, _ viewer: ViewerConnection) async throws -> NIOLoopBound<VNCHandler> {
        try await bootstrap(viewer).connect(unixDomainSocketPath: socket) { channel in
            channel.eventLoop.makeCompletedFuture {
                let handler = VNCHandler()
                try channel.pipeline.syncOperations.addHandler(handler)
                return NIOLoopBound(handler, eventLoop: channel.eventLoop)
            }
        }
    }

    /// The session's websockify: a WebSocket client upgrade (offering `binary`, with the
    /// session's secret), then the same handler behind a frame adapter.
    private func viaWebsockify(_ port: Int, secret: String, _ viewer: ViewerConnection) async throws -> NIOLoopBound<VNCHandler> {
        let maxFrameSize = settings.maxFrameSize
        let upgraded = try await bootstrap(viewer).channelOption(.tcpOption(.tcp_nodelay), value: 1).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                let upgrader = NIOTypedWebSocketClientUpgrader<NIOLoopBound<VNCHandler>>(maxFrameSize: max(maxFrameSize, 1 << 20)) { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = VNCHandler()
                        try channel.pipeline.syncOperations.addHandlers([WebsockifyFrames(), handler])
                        return NIOLoopBound(handler, eventLoop: channel.eventLoop)
                    }
                }
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/",
                                           headers: ["Host": "127.0.0.1:\(port)", "Sec-WebSocket-Protocol": "binary", "Content-Length": "0",
                                                    "Authorization": "Bearer \(secret)"])
                var configuration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: .init(
                    upgradeRequestHead: head, upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in
                        channel.eventLoop.makeFailedFuture(WebsockifyRefused())
                    }))
                // websockify may send the RFB greeting right behind its 101.
                configuration.leftOverBytesStrategy = .forwardBytes
                return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration)
            }
        }
        return try await upgraded.get()
    }

    /// On the viewer's event loop; the viewer's handler learns of the connection before it is
    /// made, so a viewer that leaves meanwhile closes it.
    private func bootstrap(_ viewer: ViewerConnection) -> ClientBootstrap {
        let handler = viewer.handler
        return ClientBootstrap(group: viewer.loop)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16384, maximum: 1 << 20))
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                handler.value.connecting(channel) ? channel.eventLoop.makeSucceededVoidFuture() : channel.eventLoop.makeFailedFuture(ViewerGone())
            }
    }
}

struct ViewerGone: Error, CustomStringConvertible {
    var description: String { "the viewer left" }
}

struct WebsockifyRefused: Error, CustomStringConvertible {
    var description: String { "the session's websockify refused the WebSocket upgrade" }
}
