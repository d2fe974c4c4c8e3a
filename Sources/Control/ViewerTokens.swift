import Essentials
import FoundationEssentials
import JWTKit
import Kiosk
import Supervision
import ViewerInput

/// The claims of a viewer token: which task, which role, from when until when.
struct ViewerClaims: KioskdClaims {
    static var audience: String { ViewerTokens.audience }

    var sub: SubjectClaim
    var role: ViewerRole
    var exp: ExpirationClaim
    var iat: IssuedAtClaim
    var nbf: NotBeforeClaim?
    var iss: IssuerClaim
    var aud: AudienceClaim
    var jti: IDClaim
}

/// What kioskd's own tokens (viewer and agent) share, and the one check of it: not expired,
/// issued by kioskd for this kind's audience, and `iat`/`nbf` at most `ViewerTokens.clockSkew`
/// ahead. Each kind has its own audience, so one kind never verifies as another.
protocol KioskdClaims: JWTPayload {
    /// The audience this kind of token is minted for and the only one it verifies with.
    static var audience: String { get }
    var exp: ExpirationClaim { get }
    var iat: IssuedAtClaim { get }
    var nbf: NotBeforeClaim? { get }
    var iss: IssuerClaim { get }
    var aud: AudienceClaim { get }
}

extension KioskdClaims {
    func verify(using _: some JWTAlgorithm) throws {
        try exp.verifyNotExpired()
        try aud.verifyIntendedAudience(includes: Self.audience)
        guard iss.value == ViewerTokens.issuer else { throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "not issued by kioskd") }
        let skewed = Date().addingTimeInterval(ViewerTokens.clockSkew)
        guard iat.value <= skewed else { throw JWTError.claimVerificationFailure(failedClaim: iat, reason: "issued in the future") }
        if let nbf, nbf.value > skewed { throw JWTError.claimVerificationFailure(failedClaim: nbf, reason: "not valid yet") }
    }
}

public struct ViewerToken: Sendable, Equatable {
    public let token: String
    public let taskID: String
    public let role: ViewerRole
    /// Milliseconds since the epoch.
    public let expiresAt: Int64
}

/// Short-lived viewer tokens: HS256 JWTs (jwt-kit) bound to one task and one role, signed with
/// a host secret kept in the state directory, so they survive a daemon restart.
public final class ViewerTokens: Sendable {
    static let audience = "kioskd-viewer"
    static let issuer = "kioskd"
    /// How far ahead of this host's clock a token's iat or nbf may be (the issuer's clock may
    /// run a little fast); a token valid only later is refused.
    public static let clockSkew: TimeInterval = 60
    /// Internal: agent tokens (`AgentTokens.swift`) are signed with the same key.
    let keys = JWTKeyCollection()

    public init(secret: [UInt8]) async {
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
    }

    /// The host secret at `path`: 32 random bytes, created (0600) on first use.
    public static func secret(at path: String) throws -> [UInt8] {
        if let bytes = readSmallFileBytes(path, limit: 4096), bytes.count >= 32 { return bytes }
        let bytes = randomBytes(32)
        try writeFile(path, bytes, mode: 0o600, owner: nil)
        return bytes
    }

    public func mint(task: String, role: ViewerRole, ttl: Int, now: Date = Date()) async throws -> ViewerToken {
        let expires = now.addingTimeInterval(Double(ttl))
        let nonce = randomHex(12)
        let claims = ViewerClaims(sub: .init(value: task), role: role, exp: .init(value: expires), iat: .init(value: now), nbf: nil,
                                  iss: .init(value: Self.issuer), aud: .init(value: [Self.audience]), jti: .init(value: nonce))
        let token = try await keys.sign(claims)
        return ViewerToken(token: token, taskID: task, role: role, expiresAt: Int64(expires.timeIntervalSince1970 * 1000))
    }

    /// The task and role a token grants; throws when it is forged, expired, not valid yet or not
    /// a viewer token.
    public func verify(_ token: String) async throws -> (task: String, role: ViewerRole) {
        let claims = try await keys.verify(token, as: ViewerClaims.self)
        return (claims.sub.value, claims.role)
    }
}
