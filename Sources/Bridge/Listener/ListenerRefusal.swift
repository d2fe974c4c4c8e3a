import Control
import Metrics
import NIOCore
import NIOHTTP1

/// Why the listener turned a connection away without the router: a metric's reason and the
/// JSON answer (`{"error": {"code", "message"}}`, as the router's refusals).
enum ListenerRefusal: Error, Equatable {
    case tooManyFromPeer(limit: Int)
    case headerTimeout
    case authTimeout
    case malformed
    case requestLineTooLong(limit: Int)
    case headersTooLarge(limit: Int)
    case webSocketVersion(String?)
    case webSocketKey

    var error: APIError {
        switch self {
        case .tooManyFromPeer(let limit):
            APIError(.tooManyRequests, "too_many_connections", "this address already has \(limit) connections open (public.max_connections_per_ip)")
        case .headerTimeout:
            APIError(.requestTimeout, "request_timeout", "the request head did not arrive in time (public.header_timeout)")
        case .authTimeout:
            APIError(.requestTimeout, "connection_timeout", "the connection did not become a viewer in time (public.auth_timeout)")
        case .malformed:
            APIError(.badRequest, "malformed_request", "the request is not valid HTTP/1.1 (the only protocol spoken here)")
        case .requestLineTooLong(let limit):
            APIError(.uriTooLong, "request_line_too_long", "the request line is longer than \(limit) bytes (public.max_request_line)")
        case .headersTooLarge(let limit):
            APIError(.requestHeaderFieldsTooLarge, "headers_too_large", "the header fields exceed \(limit) bytes (public.max_header_bytes)")
        case .webSocketVersion(let version):
            APIError(.upgradeRequired, "websocket_version", "WebSocket version \(version ?? "(none)") is not spoken here; 13 is")
        case .webSocketKey:
            APIError(.badRequest, "invalid_request", "a WebSocket upgrade needs one Sec-WebSocket-Key")
        }
    }

    /// RFC 6455 §4.4: a version refused says which one is spoken.
    var headers: [(String, String)] {
        if case .webSocketVersion = self { [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")] } else { [] }
    }

    var metricReason: String {
        switch self {
        case .tooManyFromPeer: "per_peer"
        case .headerTimeout: "header_timeout"
        case .authTimeout: "auth_timeout"
        case .malformed: "malformed"
        case .requestLineTooLong: "request_line"
        case .headersTooLarge: "headers"
        case .webSocketVersion: "websocket_version"
        case .webSocketKey: "websocket_key"
        }
    }

    /// The decoder's errors as refusals: an oversized head is 431, the rest 400 (both
    /// Content-Length and Transfer-Encoding, bare LF, bad tokens; an HTTP/2 preface too: the
    /// decoder's version error also stands for a malformed version, so 505 could be wrong).
    init(_ error: HTTPParserError, maxHeaderBytes: Int) {
        self = error == .headerOverflow ? .headersTooLarge(limit: maxHeaderBytes) : .malformed
    }

    /// A WebSocket upgrade NIO's upgrader would turn away before `decide` sees it, and then lose
    /// the request (the router would get its end without its head): another version than 13,
    /// or no key. nil for anything else, upgrades NIO attempts included.
    init?(webSocketUpgrade head: HTTPRequestHead) {
        let upgrade = head.headers["Upgrade"].contains { $0.lowercased().contains("websocket") }
        let connection = head.headers[canonicalForm: "Connection"].contains { $0.lowercased() == "upgrade" }
        guard upgrade && connection else { return nil }
        let versions = head.headers["Sec-WebSocket-Version"]
        if versions != ["13"] { self = .webSocketVersion(versions.first) } else if head.headers["Sec-WebSocket-Key"].count != 1 { self = .webSocketKey } else { return nil }
    }
}

extension ListenerRefusal {
    /// How long a refused connection is kept for the peer to read the answer.
    static let linger = TimeAmount.seconds(2)

    /// Writes the status and JSON body with `Connection: close`, then closes the way HTTP
    /// servers must (RFC 9112 §9.6): output first, so the answer is not lost to a reset from
    /// unread input, then the rest when the peer closes or `linger` has passed. The linger
    /// counts from the write, not from its end: a write that never ends (a peer that reads
    /// nothing, a TLS handshake that never completes, which holds every write) must not hold
    /// the connection.
    func answer(_ context: ChannelHandlerContext, wrap: (HTTPServerResponsePart) -> NIOAny) {
        Counter(label: "kioskd_bridge_refused_total", dimensions: [("reason", metricReason)]).increment()
        let error = self.error, body = ByteBuffer(string: error.body + "\n")
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: Int(error.status.code)),
                                    headers: HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "\(body.readableBytes)"),
                                                          ("Connection", "close"), ("X-Content-Type-Options", "nosniff")] + headers))
        context.write(wrap(.head(head)), promise: nil)
        context.write(wrap(.body(.byteBuffer(body))), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrap(.end(nil)), promise: written)
        let loop = context.eventLoop, bound = NIOLoopBound(context, eventLoop: loop)
        loop.scheduleTask(in: Self.linger) { bound.value.close(promise: nil) }
        written.futureResult.whenComplete { _ in
            let halfClosed = loop.makePromise(of: Void.self)
            bound.value.close(mode: .output, promise: halfClosed)
            halfClosed.futureResult.whenFailure { _ in bound.value.close(promise: nil) }
        }
    }
}
