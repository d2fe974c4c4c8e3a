import Control
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import NIOPosix
import Supervision
import Synchronization
import WSClient

/// Moves one viewer's bytes to and from its session: server → viewer as binary frames, viewer →
/// server through the RFB filter. Backpressure both ways (each side awaits the other's writes),
/// TCP_NODELAY toward x11vnc, and bounded idle time and lifetime.
struct Relay {
    let grant: ViewerAccess.Grant
    let settings: BridgeSettings
    /// The viewer connection's loop: the VNC side runs on it too.
    let loop: any EventLoop
    let logger: Logger

    struct Totals: Sendable {
        var fromViewer = 0
        var toViewer = 0
        var reason = "viewer closed"
    }

    /// Relays until either side ends; returns what went through and why it ended.
    func run(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter) async throws -> Totals {
        if let port = grant.target.websockifyPort {
            return try await viaWebsockify(port, inbound, outbound)
        }
        let channel = try await ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // Big reads become big frames: a screen update crosses in a few messages, not hundreds.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16384, maximum: 1 << 20))
            .connectTimeout(.seconds(5))
            .connect(host: "127.0.0.1", port: grant.target.vncPort) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        return try await channel.executeThenClose { serverIn, serverOut in
            try await pump(inbound, outbound,
                           toServer: { bytes in try await serverOut.write(ByteBuffer(bytes: bytes)) },
                           fromServer: { deliver in for try await buffer in serverIn { try await deliver(buffer) } })
        }
    }

    /// websockify mode: the same relay, with the session's websockify as the server side.
    private func viaWebsockify(_ port: Int, _ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter) async throws -> Totals {
        let result = OnceValue<Totals>()
        let configuration = WebSocketClientConfiguration(maxFrameSize: settings.maxFrameSize, additionalHeaders: [.secWebSocketProtocol: "binary"])
        _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/", configuration: configuration, eventLoopGroup: loop, logger: logger) { serverIn, serverOut, _ in
            result.set(try await pump(inbound, outbound,
                                    toServer: { bytes in try await serverOut.write(.binary(ByteBuffer(bytes: bytes))) },
                                    fromServer: { deliver in
                                        for try await message in serverIn.messages(maxSize: 16 << 20) {
                                            if case .binary(let buffer) = message { try await deliver(buffer) }
                                        }
                                    }))
        }
        return result.current ?? Totals()
    }

    private func pump(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter,
                      toServer: @escaping @Sendable ([UInt8]) async throws -> Void,
                      fromServer: @escaping @Sendable (@Sendable (ByteBuffer) async throws -> Void) async throws -> Void) async throws -> Totals {
        let policy = RFBFilter.Policy(role: grant.role == .control ? .control : .view, clipboard: settings.clipboard)
        let activity = Activity()
        let settings = self.settings
        return try await withThrowingTaskGroup(of: Totals.self) { group in
            group.addTask {
                var totals = Totals()
                try await fromServer { buffer in
                    activity.touch(toViewer: buffer.readableBytes)
                    try await outbound.write(.binary(buffer))
                }
                totals.reason = "the VNC server closed the connection"
                try await outbound.close(.goingAway, reason: "session closed")
                return totals
            }
            group.addTask {
                var filter = RFBFilter(policy: policy)
                var totals = Totals()
                // An oversized message throws out of here: the WebSocket layer closes with 1009.
                do {
                    for try await message in inbound.messages(maxSize: settings.maxFrameSize) {
                        guard case .binary(let buffer) = message else {
                            totals.reason = "sent a text frame"
                            try await outbound.close(.unacceptableData, reason: "binary frames only")
                            return totals
                        }
                        activity.touch(fromViewer: buffer.readableBytes)
                        let out = filter.feed(buffer.readableBytesView)
                        if !out.forward.isEmpty { try await toServer(out.forward) }
                        for (kind, n) in out.dropped { Counter(label: "kioskd_bridge_dropped_total", dimensions: [("message", kind)]).increment(by: n) }
                        if let violation = out.violation {
                            totals.reason = violation.reason
                            try await outbound.close(.unknown(violation.code), reason: violation.reason)
                            return totals
                        }
                    }
                }
                return totals
            }
            group.addTask {
                var totals = Totals()
                let started = ContinuousClock.now
                while true {
                    let idle = activity.idleSince
                    let now = ContinuousClock.now
                    if now - started >= settings.maxLifetime {
                        totals.reason = "reached the maximum viewer lifetime"
                        try await outbound.close(.goingAway, reason: "maximum lifetime reached")
                        return totals
                    }
                    if now - idle >= settings.idleTimeout {
                        totals.reason = "idle for \(settings.idleTimeout)"
                        try await outbound.close(.goingAway, reason: "idle")
                        return totals
                    }
                    try await Task.sleep(for: min(settings.idleTimeout - (now - idle), settings.maxLifetime - (now - started)))
                }
            }
            var result = try await group.next() ?? Totals()
            group.cancelAll()
            let counted = activity.totals
            result.fromViewer = counted.0
            result.toViewer = counted.1
            Counter(label: "kioskd_bridge_bytes_total", dimensions: [("direction", "from_viewer")]).increment(by: counted.0)
            Counter(label: "kioskd_bridge_bytes_total", dimensions: [("direction", "to_viewer")]).increment(by: counted.1)
            return result
        }
    }
}

/// Bytes each way and when the last one moved: atomics, so the relay's hot path takes no lock
/// and no actor hop.
final class Activity: Sendable {
    private let fromViewer = Atomic<Int>(0), toViewer = Atomic<Int>(0)
    private let origin = ContinuousClock.now
    private let lastNanos = Atomic<Int64>(0)

    var totals: (Int, Int) { (fromViewer.load(ordering: .relaxed), toViewer.load(ordering: .relaxed)) }
    var idleSince: ContinuousClock.Instant { origin + .nanoseconds(lastNanos.load(ordering: .relaxed)) }

    func touch(fromViewer n: Int = 0, toViewer m: Int = 0) {
        if n > 0 { fromViewer.add(n, ordering: .relaxed) }
        if m > 0 { toViewer.add(m, ordering: .relaxed) }
        let (s, atto) = (ContinuousClock.now - origin).components
        lastNanos.store(s * 1_000_000_000 + atto / 1_000_000_000, ordering: .relaxed)
    }
}
