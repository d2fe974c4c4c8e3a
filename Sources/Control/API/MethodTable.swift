import HTTPTypes
import Hummingbird

/// Registers the control API's routes and remembers each path's methods, so that any other
/// method on a known path answers 405 with `Allow` (RFC 9110 §15.5.6), not a 404 that would
/// say the path does not exist. Any other method: not a fixed list (clients and fuzzers also
/// send QUERY, PROPFIND and made-up ones), HEAD and OPTIONS included, as no route serves them.
final class MethodTable {
    let router: Router<ControlContext>
    /// Every registered path (Hummingbird's syntax: literal and `{name}` segments) with its
    /// methods, in the order of registration. openapi.json documents exactly these.
    private(set) var registered: [(path: String, methods: [HTTPRequest.Method])] = []

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
        if let i = registered.firstIndex(where: { $0.path == path }) {
            registered[i].methods.append(method)
        } else {
            registered.append((path, [method]))
        }
    }

    /// Call once every route is registered. The middleware added here wraps only what comes
    /// after it, which is Hummingbird's not-found answer: a request reaches it when no route has
    /// its path and method, and if the path is known, the method is what is wrong.
    func refuseOtherMethods() {
        router.middlewares.add(MethodNotAllowed(paths: registered.map { (RoutePattern($0.path), $0.methods) }))
    }
}

/// A route path split into segments, matched the way Hummingbird's trie matches a request path:
/// empty segments skipped, a `{name}` segment matching any one segment.
struct RoutePattern: Sendable, CustomStringConvertible {
    let description: String
    private let segments: [Segment]

    private enum Segment: Sendable {
        case literal(Substring)
        case capture
    }

    init(_ path: String) {
        description = path
        segments = path.split(separator: "/").map { $0.first == "{" && $0.last == "}" ? .capture : .literal($0) }
    }

    func matches(_ path: String) -> Bool {
        let parts = path.split(separator: "/")
        guard parts.count == segments.count else { return false }
        return zip(segments, parts).allSatisfy { segment, part in
            if case .literal(let text) = segment { text == part } else { true }
        }
    }
}

/// 405 with `Allow` for a known path asked with a method none of its routes has.
struct MethodNotAllowed: RouterMiddleware {
    let paths: [(pattern: RoutePattern, methods: [HTTPRequest.Method])]

    func handle(_ request: Request, context: ControlContext, next: (Request, ControlContext) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard let known = paths.first(where: { $0.pattern.matches(path) }), !known.methods.contains(request.method) else {
            return try await next(request, context)
        }
        let allow = known.methods.map(\.rawValue).joined(separator: ", ")
        var error = APIError(.methodNotAllowed, "method_not_allowed", "\(request.method) is not allowed on \(known.pattern); allowed: \(allow)")
        error.headers[.allow] = allow
        throw error
    }
}
