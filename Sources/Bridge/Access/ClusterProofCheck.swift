import Control
import FoundationEssentials
import HTTPTypes
import Hummingbird
import Metrics

/// The internal listener's first check on a plain request (an upgrade is checked the same way in
/// `PublicServer.decide`): the host-to-host proof, or 401 before anything else is looked at.
struct ClusterProofCheck: RouterMiddleware {
    static let field = HTTPField.Name(ClusterAuth.header)!
    let auth: ClusterAuth

    func handle(_ request: Request, context: PublicContext, next: (Request, PublicContext) async throws -> Response) async throws -> Response {
        if let refusal = auth.check(request.headers[Self.field], method: request.method.rawValue, target: request.head.path ?? "",
                                    now: Int64(Date.now.timeIntervalSince1970)) {
            throw Self.refuse(refusal)
        }
        return try await next(request, context)
    }

    /// The refusal, counted like the listener's others.
    static func refuse(_ refusal: ClusterAuth.Refusal) -> APIError {
        let error = APIError(.unauthorized, "cluster_proof_\(refusal.rawValue)", refusal.message)
        Counter(label: "kioskd_bridge_refused_total", dimensions: [("reason", error.code)]).increment()
        return error
    }
}
