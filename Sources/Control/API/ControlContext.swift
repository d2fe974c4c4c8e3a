import Hummingbird
import NIOCore
import Store

/// Per request: Hummingbird's core context, and the connection, for its peer credentials.
public struct ControlContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// Bodies are small JSON objects: anything over 1 MiB is refused with 413.
    public var maxUploadSize: Int { 1 << 20 }
}

/// Refuses a peer that is not on the allowlist (403), before any route runs.
struct PeerCheck: RouterMiddleware {
    let allowlist: PeerAllowlist

    func handle(_ request: Request, context: ControlContext, next: (Request, ControlContext) async throws -> Response) async throws -> Response {
        guard let peer = await PeerCredentials.of(context.channel) else {
            throw APIError(.forbidden, "peer_unknown", "the peer's credentials could not be read")
        }
        guard allowlist.permits(peer) else {
            throw APIError(.forbidden, "peer_not_allowed",
                           "uid \(peer.uid) / gid \(peer.gid) may not use the control socket (control.allow_uids, control.allow_gids)")
        }
        return try await next(request, context)
    }
}

/// Every error leaves as `{"error": {"code", "message"}}`: the API's own, Hummingbird's (unknown
/// route, body too large), the store's (503), and anything unexpected (500, details in the log).
struct JSONErrors: RouterMiddleware {
    func handle(_ request: Request, context: ControlContext, next: (Request, ControlContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            let code = switch error.status {
            case .notFound: "not_found"
            case .methodNotAllowed: "method_not_allowed"
            case .contentTooLarge: "body_too_large"
            default: "http_\(error.status.code)"
            }
            let message = switch error.status {
            case .notFound: "no route \(request.method) \(request.uri.path) (see GET /v1/openapi.json)"
            case .contentTooLarge: "the body is larger than \(context.maxUploadSize) bytes"
            default: error.body ?? error.status.reasonPhrase
            }
            throw APIError(error.status, code, message)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "body_too_large", "the body is larger than \(context.maxUploadSize) bytes")
        } catch let error as StoreError {
            context.logger.error("store error", metadata: ["error": "\(error)"])
            throw APIError(.serviceUnavailable, "store_unavailable", error.description)
        } catch is CancellationError {
            throw APIError(.serviceUnavailable, "shutting_down", "kioskd is stopping")
        } catch {
            context.logger.error("unexpected error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            throw APIError(.internalServerError, "internal", "internal error; the daemon's log has the details")
        }
    }
}
