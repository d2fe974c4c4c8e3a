import Control
import Hummingbird
import Logging

/// The WebSocket conformance suite's echo endpoint (Autobahn|Testsuite's fuzzingclient,
/// `scripts/test-autobahn.sh`): the public listener's own stack (`PublicServer.listen`: the
/// connection limits, request guard, NIO's upgrade in `BridgeChannel`, NIO's frame codec with
/// `maxFrameSize`, then `ViewerHandler` with its frame rules, pings and close handshake), where
/// every upgrade, on any path and without a token, gets a session that echoes each message back
/// (`ViewerHandler.startEcho`) instead of the relay.
///
/// Test-only: `kioskd-bench --serve-autobahn-echo` runs it; nothing in the daemon creates one, and
/// it is SPI so no ordinary import of Bridge sees it.
@_spi(Conformance)
public enum EchoListener {
    /// Serves on `endpoint` until cancelled; `onReady` gets the port.
    public static func run(_ endpoint: ListenEndpoint, settings: BridgeSettings, logger: Logger,
                           onReady: @escaping @Sendable (Int) -> Void) async throws {
        let router = Router(context: PublicContext.self)
        router.middlewares.add(PublicErrors())
        let decide: BridgeChannel.Decide = { head, _, _ in
            let offered = head.headerFields[.secWebSocketProtocol]?.split(separator: ",").map { $0.filter { !$0.isWhitespace } } ?? []
            return .upgrade(offered.contains("binary") ? [.secWebSocketProtocol: "binary"] : [:], .viewer({ viewer, log in
                let totals = await viewer.echo(settings: settings)
                log.debug("echo ended", metadata: ["reason": "\(totals.reason)", "bytes_in": "\(totals.fromViewer)"])
            }))
        }
        try await PublicServer.listen(endpoint, settings: settings, tls: nil, router: router, decide: decide, logger: logger, onReady: onReady)
    }
}
