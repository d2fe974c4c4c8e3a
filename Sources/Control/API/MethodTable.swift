import HTTPTypes
import Hummingbird

/// Registers the control API's routes and remembers each path's methods, so that any other
/// method on a known path answers 405 with `Allow` (RFC 9110 §15.5.6), not a 404 that would
/// say the path does not exist.
final class MethodTable {
    private let router: Router<ControlContext>
    private var paths: [String] = []
    private var methods: [String: [HTTPRequest.Method]] = [:]

    /// The methods a client may try on any path; HEAD and OPTIONS included, as clients probe with them.
    static let tried: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options, .trace, .connect]

    init(_ router: Router<ControlContext>) { self.router = router }

    func get(_ path: String, _ handler: @escaping @Sendable (Request, ControlContext) async throws -> some ResponseGenerator) {
        on(.get, path, handler)
    }

    func post(_ path: String, _ handler: @escaping @Sendable (Request, ControlContext) async throws -> some ResponseGenerator) {
        on(.post, path, handler)
    }

    private func on(_ method: HTTPRequest.Method, _ path: String,
                    _ handler: @escaping @Sendable (Request, ControlContext) async throws -> some ResponseGenerator) {
        router.on(RouterPath(path), method: method, use: handler)
        if methods[path] == nil { paths.append(path) }
        methods[path, default: []].append(method)
    }

    /// Call once every route is registered.
    func refuseOtherMethods() {
        for path in paths {
            let allowed = methods[path] ?? []
            let allow = allowed.map(\.rawValue).joined(separator: ", ")
            for method in Self.tried where !allowed.contains(method) {
                router.on(RouterPath(path), method: method) { request, _ -> Response in
                    var error = APIError(.methodNotAllowed, "method_not_allowed", "\(request.method) is not allowed on \(path); allowed: \(allow)")
                    error.headers[.allow] = allow
                    throw error
                }
            }
        }
    }
}
