import Essentials
import FoundationEssentials
import Control
import JWTKit
import ViewerInput

/// Viewer tokens issued by someone else (the API layer's identity provider): HS256 with a shared
/// secret, or RS256/ES256 from a JWKS document (Cognito's shape: iss, exp, token_use, and aud or
/// client_id; nbf and iat when present). The task and role come from claims named in the config; a token without the task
/// claim is refused unless the config says any task will do.
public struct ExternalTokenSettings: Sendable, Equatable {
    public var hs256Secret: [UInt8]?
    /// A JWKS document (JSON), e.g. Cognito's /.well-known/jwks.json saved to a file.
    public var jwks: String?
    public var issuer: String
    /// Must be in `aud`, or equal `client_id` (Cognito access tokens carry no aud).
    public var audience: String
    /// Accepted `token_use` values when the claim is present (Cognito: access, id).
    public var tokenUse: [String] = ["access", "id"]
    public var taskClaim = "kioskd_task"
    public var roleClaim = "kioskd_role"
    public var requireTaskClaim = true

    public init(hs256Secret: [UInt8]? = nil, jwks: String? = nil, issuer: String, audience: String) {
        self.hs256Secret = hs256Secret
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
    }
}

public struct ExternalTokens: Sendable {
    let settings: ExternalTokenSettings
    private let keys: JWTKeyCollection

    public init(_ settings: ExternalTokenSettings) async throws {
        self.settings = settings
        keys = JWTKeyCollection()
        if let secret = settings.hs256Secret { await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256) }
        if let jwks = settings.jwks { try await keys.add(jwksJSON: jwks) }
    }

    /// The task (nil: any) and role a token grants; throws when it is not valid.
    func verify(_ token: String) async throws -> (task: String?, role: ViewerRole) {
        let claims = try await keys.verify(token, as: ExternalClaims.self)
        guard claims.iss == settings.issuer else { throw TokenRefusal("issuer") }
        let now = Date().timeIntervalSince1970
        guard let exp = claims.exp, exp > now else { throw TokenRefusal("expired") }
        // Optional claims, but binding when present (RFC 7519 §4.1.5–6), with a little skew.
        if let nbf = claims.other["nbf"]?.number, nbf > now + ViewerTokens.clockSkew { throw TokenRefusal("not valid yet") }
        if let iat = claims.other["iat"]?.number, iat > now + ViewerTokens.clockSkew { throw TokenRefusal("issued in the future") }
        guard claims.aud.contains(settings.audience) || claims.clientID == settings.audience else { throw TokenRefusal("audience") }
        if let use = claims.tokenUse, !settings.tokenUse.contains(use) { throw TokenRefusal("token_use") }
        let task = claims.other[settings.taskClaim]?.string
        if task == nil && settings.requireTaskClaim { throw TokenRefusal("no task claim") }
        let role = claims.other[settings.roleClaim]?.string.flatMap(ViewerRole.init(rawValue:)) ?? .view
        return (task, role)
    }
}

struct TokenRefusal: Error {
    let why: String
    init(_ why: String) { self.why = why }
}

/// The registered claims checked here, and every other claim by name (the task and role claims
/// are configurable).
struct ExternalClaims: JWTPayload {
    let iss: String?
    let exp: Double?
    let aud: [String]
    let clientID: String?
    let tokenUse: String?
    let other: [String: JSONValue]

    init(_ claims: [String: JSONValue]) {
        other = claims
        iss = claims["iss"]?.string
        exp = claims["exp"]?.number
        aud = claims["aud"]?.string.map { [$0] } ?? []
        clientID = claims["client_id"]?.string
        tokenUse = claims["token_use"]?.string
    }

    struct Key: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        var other: [String: JSONValue] = [:]
        for key in c.allKeys { other[key.stringValue] = try? c.decode(JSONValue.self, forKey: key) }
        self.other = other
        iss = other["iss"]?.string
        exp = other["exp"]?.number
        switch other["aud"] {
        case .string(let s)?: aud = [s]
        case .array(let a)?: aud = a.compactMap(\.string)
        default: aud = []
        }
        clientID = other["client_id"]?.string
        tokenUse = other["token_use"]?.string
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for (k, v) in other { try c.encode(v, forKey: Key(stringValue: k)) }
    }

    func verify(using _: some JWTAlgorithm) throws {}
}
