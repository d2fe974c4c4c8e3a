import HTTPTypes
import Hummingbird

/// An error the control API answers with: an HTTP status and `{"error": {"code", "message"}}`.
/// The message says what was wrong and, where it helps, what to do.
public struct APIError: Error, HTTPResponseError, Equatable, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    /// Extra fields beside code and message (e.g. the task's current state on a conflict).
    public let details: [(String, String)]
    /// Headers the answer carries besides its content type (`Allow` on a 405).
    public var headers: HTTPFields = [:]

    /// `retryAfter`: seconds a client should wait before it asks again (a 503 that passes).
    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, details: [(String, String)] = [], retryAfter: Int? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        if let retryAfter { headers[.retryAfter] = "\(retryAfter)" }
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    public static func == (a: APIError, b: APIError) -> Bool {
        a.status == b.status && a.code == b.code && a.message == b.message && a.details.elementsEqual(b.details) { $0 == $1 }
            && a.headers == b.headers
    }

    public var body: String {
        var error = JSONWriter()
        error.field("code", code)
        error.field("message", message)
        for (k, v) in details { error.field(k, v) }
        var out = JSONWriter()
        out.raw("error", error.text)
        return out.text
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: body + "\n")))
    }

    static func badRequest(_ message: String) -> APIError { APIError(.badRequest, "invalid_request", message) }
    static func notFound(_ id: String) -> APIError { APIError(.notFound, "task_not_found", "no task with id '\(id)'") }
}
