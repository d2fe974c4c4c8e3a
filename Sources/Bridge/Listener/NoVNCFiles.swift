import Control
import FoundationEssentials
import HTTPTypes
import Hummingbird

/// noVNC's files under /novnc/, through Hummingbird's file middleware (which refuses paths
/// leaving the root), with two of its habits taken away and the headers a page needs:
/// - a NUL (%00) ends the name it opens while the type comes from the whole name, so
///   `ui.js%00.html` was ui.js served as HTML: names with control bytes are not found;
/// - a folder is redirected to its path without the /novnc prefix (`//app/` for `/novnc//app`,
///   another host to a browser): nothing here serves folders, so they are not found either;
/// - every file carries a Content-Security-Policy (its own scripts, styles and WebSocket only;
///   framed only by the listener's origin and `public.origins`), nosniff, and for older browsers
///   X-Frame-Options when no other origin may frame it.
struct NoVNCFiles: RouterMiddleware {
    typealias Context = PublicContext

    static let prefix = "/novnc"
    let files: FileMiddleware<PublicContext, LocalFileSystem>
    let headers: HTTPFields

    init(directory: String, origins: [String]) {
        files = FileMiddleware(directory, urlBasePath: Self.prefix, searchForIndexHtml: false)
        var headers: HTTPFields = [
            .contentSecurityPolicy: Self.policy(frameAncestors: origins),
            HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            HTTPField.Name("Referrer-Policy")!: "no-referrer",
        ]
        if origins.isEmpty { headers[HTTPField.Name("X-Frame-Options")!] = "SAMEORIGIN" }
        self.headers = headers
    }

    /// noVNC sets styles from script (not inline in its HTML), draws cursors from data: URLs and
    /// opens its WebSocket to the same host.
    static func policy(frameAncestors origins: [String]) -> String {
        ["default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:", "media-src 'self' data:",
         "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'none'",
         (["frame-ancestors 'self'"] + origins).joined(separator: " ")].joined(separator: "; ")
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard path == Self.prefix || path.hasPrefix(Self.prefix + "/") else { return try await next(request, context) }
        guard let name = path.removingPercentEncoding, !name.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }), !name.contains("//") else {
            throw Self.notFound
        }
        var response = try await files.handle(request, context: context, next: next)
        if (300..<400).contains(response.status.code) && response.status != .notModified { throw Self.notFound }
        response.headers.append(contentsOf: headers)
        return response
    }

    static let notFound = APIError(.notFound, "not_found", "no such file under /novnc/")
}
