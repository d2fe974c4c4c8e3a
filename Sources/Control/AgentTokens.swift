import Essentials
import FoundationEssentials
import JWTKit
import ViewerInput

/// What a token minted by `POST /v1/tasks/{id}/viewer-token` grants: a viewer role (the VNC
/// bridge), or `agent` (the task's CDP endpoint on the listeners).
///
/// `agent` is not a `ViewerRole`: that type is also the RFB filter's policy, x11vnc's input and
/// `sessions.input`'s choices, none of which an agent has. An agent token is its own kind of JWT
/// instead (`AgentClaims`: audience `kioskd-agent`, no role), so it can never pass for a viewer
/// token (audience `kioskd-viewer`, a role) or the other way round — on this version or an older
/// one, which knows no such audience.
public enum TokenRole: String, Sendable, CaseIterable {
    case view, control, agent

    /// The viewer role, nil for an agent.
    public var viewer: ViewerRole? { ViewerRole(rawValue: rawValue) }
}

/// The claims of an agent token: which task, from when until when.
struct AgentClaims: KioskdClaims {
    static var audience: String { ViewerTokens.agentAudience }

    var sub: SubjectClaim
    var exp: ExpirationClaim
    var iat: IssuedAtClaim
    var nbf: NotBeforeClaim?
    var iss: IssuerClaim
    var aud: AudienceClaim
    var jti: IDClaim
}

public struct AgentToken: Sendable, Equatable {
    public let token: String
    public let taskID: String
    /// Milliseconds since the epoch.
    public let expiresAt: Int64
}

extension ViewerTokens {
    static let agentAudience = "kioskd-agent"

    /// An agent token for `task` (its CDP endpoint), signed with the viewer tokens' key.
    public func mintAgent(task: String, ttl: Int, now: Date = Date()) async throws -> AgentToken {
        let expires = now.addingTimeInterval(Double(ttl))
        let claims = AgentClaims(sub: .init(value: task), exp: .init(value: expires), iat: .init(value: now), nbf: nil,
                                 iss: .init(value: Self.issuer), aud: .init(value: [Self.agentAudience]), jti: .init(value: randomHex(12)))
        return AgentToken(token: try await keys.sign(claims), taskID: task, expiresAt: Int64(expires.timeIntervalSince1970 * 1000))
    }

    /// The task an agent token grants; throws when it is forged, expired, not valid yet or not an
    /// agent token.
    public func verifyAgent(_ token: String) async throws -> String {
        try await keys.verify(token, as: AgentClaims.self).sub.value
    }
}

extension TaskService {
    /// An agent token for a task that has not ended (409 task_finished otherwise, as for viewers).
    public nonisolated func agentToken(_ id: String, ttl: Int) async throws -> AgentToken {
        let task = try await self.task(id)
        guard !task.state.isFinal else {
            throw APIError(.conflict, "task_finished", "task '\(id)' is \(task.state.rawValue): no agent can join it", details: [("state", task.state.rawValue)])
        }
        return try await tokens.mintAgent(task: id, ttl: ttl)
    }
}
