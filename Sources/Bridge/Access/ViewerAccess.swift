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
    let routing: any TaskRouting
    let target: @Sendable (String) async -> BridgeTarget?

    /// Which door a request knocks on: the VNC bridge (and the viewer page), or the task's CDP
    /// endpoint. Each takes its own kind of token only.
    public enum Door: Sendable {
        case viewer, agent
    }

    /// Where an authorized connection is served.
    public enum Destination: Sendable {
        /// Here: the task's running session.
        case here(BridgeTarget)
        /// On the host that owns the task: relayed to its internal listener (`address`).
        case owner(host: String, address: String)
    }

    public struct Grant: Sendable {
        public let taskID: String
        /// The viewer's role (an agent's grant says view: nothing reads it).
        public let role: ViewerRole
        public let destination: Destination
    }

    /// `external`: also accept the identity provider's JWTs (kioskd's own tokens always work).
    /// `routing`: which host owns a task (outside cluster mode, and on the internal listener,
    /// which never relays again: this one).
    public init(service: TaskService, settings: BridgeSettings, external: ExternalTokens? = nil, routing: any TaskRouting = LocalRouting(),
                target: @escaping @Sendable (String) async -> BridgeTarget?) {
        self.service = service
        self.settings = settings
        self.external = external
        self.routing = routing
        self.target = target
    }

    /// The grant, or the refusal (counted by its code in `kioskd_bridge_refused_total`).
    public func authorize(_ request: Request, at door: Door = .viewer) async throws -> Grant {
        do {
            return try await grant(request, door)
        } catch let refusal as APIError {
            Counter(label: "kioskd_bridge_refused_total", dimensions: [("reason", refusal.code)]).increment()
            throw refusal
        }
    }

    private func grant(_ request: Request, _ door: Door) async throws -> Grant {
        try checkOrigin(request)
        let query = request.uri.queryParameters
        guard let taskID = query.get("task_id") ?? query.get("session_id"), !taskID.isEmpty else {
            throw APIError(.badRequest, "invalid_request", "task_id is required")
        }
        guard let token = query.get("token"), !token.isEmpty else {
            throw APIError(.unauthorized, "token_missing", door == .viewer ? "a viewer token is required (token=…)" : "an agent token is required (token=…)")
        }
        var granted: (task: String?, role: ViewerRole)
        switch door {
        case .viewer:
            if let own = try? await service.tokens.verify(token) {
                granted = (own.task, own.role)
            } else if let external, let theirs = try? await external.verify(token) {
                granted = theirs
            } else if (try? await service.tokens.verifyAgent(token)) != nil {
                throw APIError(.forbidden, "token_other_role", "an agent token opens the task's CDP endpoint (/api/v1/cdp/ws), not the viewer")
            } else {
                throw APIError(.unauthorized, "token_invalid", "the token is invalid or expired")
            }
            if let asked = query.get("role"), asked != granted.role.rawValue {
                throw APIError(.forbidden, "token_other_role", "the token grants the \(granted.role.rawValue) role, not \(asked)")
            }
        case .agent:
            if let task = try? await service.tokens.verifyAgent(token) {
                granted = (task, .view)
            } else if let viewer = try? await service.tokens.verify(token) {
                throw APIError(.forbidden, "token_other_role", "a \(viewer.role.rawValue) token opens the viewer, not the CDP endpoint: mint one with role agent")
            } else if let external, (try? await external.verify(token)) != nil {
                throw APIError(.forbidden, "token_other_role", "the identity provider's tokens open the viewer, not the CDP endpoint: mint one with role agent")
            } else {
                throw APIError(.unauthorized, "token_invalid", "the token is invalid or expired")
            }
        }
        guard granted.task == nil || granted.task == taskID else { throw APIError(.forbidden, "token_other_task", "the token is for another task") }
        guard let task = try? await service.store.task(taskID) else {
            throw APIError(.notFound, "task_not_found", "no task with id '\(taskID)'")
        }
        guard !task.state.isFinal else { throw APIError(.notFound, "task_ended", "task '\(taskID)' is \(task.state.rawValue)") }
        // Another host's task is that host's to judge further (running, session, limits).
        if case .remote(let host, let address) = await routing.owner(of: taskID) {
            return Grant(taskID: taskID, role: granted.role, destination: .owner(host: host, address: address))
        }
        guard task.state == .running, let target = await target(taskID) else {
            throw APIError(.serviceUnavailable, "session_not_ready", "task '\(taskID)' is \(task.state.rawValue): its session is not ready yet")
        }
        return Grant(taskID: taskID, role: granted.role, destination: .here(target))
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

extension ViewerAccess {
    /// The same access serving this host's tasks only (the internal listener's).
    func local() -> ViewerAccess {
        ViewerAccess(service: service, settings: settings, external: external, routing: LocalRouting(), target: target)
    }
}
