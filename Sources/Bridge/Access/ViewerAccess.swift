import Control
import HTTPTypes
import Hummingbird
import Metrics
import Store
import ViewerInput

/// Who a request is, decided before any upgrade: the token's task and role, the task's state,
/// the origin. Every refusal is an `APIError` with its status and a JSON body; the token itself
/// is never logged or echoed.
public struct ViewerAccess: Sendable {
    let service: TaskService
    let settings: BridgeSettings
    let external: ExternalTokens?
    let target: @Sendable (String) async -> BridgeTarget?

    public struct Grant: Sendable {
        public let taskID: String
        public let role: ViewerRole
        public let target: BridgeTarget
    }

    /// `external`: also accept the identity provider's JWTs (kioskd's own tokens always work).
    public init(service: TaskService, settings: BridgeSettings, external: ExternalTokens? = nil,
                target: @escaping @Sendable (String) async -> BridgeTarget?) {
        self.service = service
        self.settings = settings
        self.external = external
        self.target = target
    }

    /// The grant, or the refusal (counted by its code in `kioskd_bridge_refused_total`).
    public func authorize(_ request: Request) async throws -> Grant {
        do {
            return try await grant(request)
        } catch let refusal as APIError {
            Counter(label: "kioskd_bridge_refused_total", dimensions: [("reason", refusal.code)]).increment()
            throw refusal
        }
    }

    private func grant(_ request: Request) async throws -> Grant {
        try checkOrigin(request)
        let query = request.uri.queryParameters
        guard let taskID = query.get("task_id") ?? query.get("session_id"), !taskID.isEmpty else {
            throw APIError(.badRequest, "invalid_request", "task_id is required")
        }
        guard let token = query.get("token"), !token.isEmpty else {
            throw APIError(.unauthorized, "token_missing", "a viewer token is required (token=…)")
        }
        var granted: (task: String?, role: ViewerRole)
        if let own = try? await service.tokens.verify(token) {
            granted = (own.task, own.role)
        } else if let external, let theirs = try? await external.verify(token) {
            granted = theirs
        } else {
            throw APIError(.unauthorized, "token_invalid", "the token is invalid or expired")
        }
        guard granted.task == nil || granted.task == taskID else { throw APIError(.forbidden, "token_other_task", "the token is for another task") }
        if let asked = query.get("role"), asked != granted.role.rawValue {
            throw APIError(.forbidden, "token_other_role", "the token grants the \(granted.role.rawValue) role, not \(asked)")
        }
        guard let task = try? await service.store.task(taskID) else {
            throw APIError(.notFound, "task_not_found", "no task with id '\(taskID)'")
        }
        guard !task.state.isFinal else { throw APIError(.notFound, "task_ended", "task '\(taskID)' is \(task.state.rawValue)") }
        guard task.state == .running, let target = await target(taskID) else {
            throw APIError(.serviceUnavailable, "session_not_ready", "task '\(taskID)' is \(task.state.rawValue): its session is not ready yet")
        }
        return Grant(taskID: taskID, role: granted.role, target: target)
    }

    /// Browsers always send an http(s) Origin on a WebSocket (or "null"): it must be allowed.
    /// The listener's own origin always is (its /viewer page opens the WebSocket from there),
    /// besides `public.origins`. Non-browser clients (no Origin, or a ws:// one as some client
    /// libraries send) are judged by their token alone.
    func checkOrigin(_ request: Request) throws(APIError) {
        guard let origin = request.headers[.origin], !origin.hasPrefix("ws://"), !origin.hasPrefix("wss://") else { return }
        if settings.origins.contains(origin) { return }
        if let host = request.head.authority, origin == "http://\(host)" || origin == "https://\(host)" { return }
        throw APIError(.forbidden, "origin_not_allowed", "origin \(origin) may not open the viewer (public.origins)")
    }
}
