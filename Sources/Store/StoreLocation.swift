import NIOSSL
import PostgresNIO

/// PostgreSQL connection settings from a `postgres://user:password@host:port/db?sslmode=…` URL.
public struct PostgresSettings: Sendable, Equatable {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode

    public init(host: String, port: Int = 5432, user: String, password: String? = nil, database: String, sslMode: SSLMode = .prefer) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
    }

    /// libpq's meaning: `require` encrypts without checking the certificate; `verify-full`
    /// checks the chain and the host name.
    func tls() throws -> PostgresClient.Configuration.TLS {
        switch sslMode {
        case .disable:
            return .disable
        case .prefer, .require:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            return sslMode == .prefer ? .prefer(tls) : .require(tls)
        case .verifyFull:
            return .require(.makeClientConfiguration())
        }
    }
}

/// Where the store lives, parsed from `store.url`.
public enum StoreLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(PostgresSettings)

    /// `sqlite:///abs/path` or `postgres://[user[:password]@]host[:port]/database[?sslmode=…]`.
    /// The password may also come from `PGPASSWORD`.
    public init(url: String, environment: [String: String] = [:]) throws(StoreURLError) {
        if url.hasPrefix("sqlite://") {
            let path = String(url.dropFirst("sqlite://".count))
            guard path.hasPrefix("/") else { throw StoreURLError("sqlite:// needs an absolute path (sqlite:///var/lib/kioskd/kioskd.sqlite), got \"\(url)\"") }
            self = .sqlite(path: path)
            return
        }
        let scheme = url.hasPrefix("postgres://") ? "postgres://" : url.hasPrefix("postgresql://") ? "postgresql://" : nil
        guard let scheme else { throw StoreURLError("must be empty, sqlite:///path or postgres://…, got a URL with another scheme") }
        var rest = Substring(url.dropFirst(scheme.count))
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        guard let slash = rest.firstIndex(of: "/"), rest.index(after: slash) < rest.endIndex else {
            throw StoreURLError("a PostgreSQL URL needs a host and a database: postgres://user@host:5432/kioskd")
        }
        let database = String(rest[rest.index(after: slash)...])
        var authority = rest[..<slash]
        var user = "kioskd", password: String? = environment["PGPASSWORD"]
        if let at = authority.lastIndex(of: "@") {
            let info = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = info.firstIndex(of: ":") {
                user = Self.percentDecoded(info[..<colon])
                password = Self.percentDecoded(info[info.index(after: colon)...])
            } else {
                user = Self.percentDecoded(info)
            }
        }
        var host = String(authority), port = 5432
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw StoreURLError("the PostgreSQL port must be 1–65535, got \"\(authority[authority.index(after: colon)...])\"")
            }
            port = p
            host = String(authority[..<colon])
        }
        host = host.trimmingBrackets
        guard !host.isEmpty else { throw StoreURLError("a PostgreSQL URL needs a host and a database: postgres://user@host:5432/kioskd") }
        var mode = PostgresSettings.SSLMode.prefer
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            guard kv.first == "sslmode" else { throw StoreURLError("unknown URL parameter \"\(kv.first ?? "")\" (only sslmode is read)") }
            guard let value = kv.dropFirst().first, let m = PostgresSettings.SSLMode(rawValue: String(value)) else {
                throw StoreURLError("sslmode must be disable, prefer, require or verify-full, got \"\(kv.dropFirst().first ?? "")\"")
            }
            mode = m
        }
        self = .postgres(PostgresSettings(host: host, port: port, user: user, password: password, database: database, sslMode: mode))
    }

    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var i = text.utf8.startIndex
        let utf8 = text.utf8
        while i < utf8.endIndex {
            if utf8[i] == UInt8(ascii: "%"), let h = utf8.index(i, offsetBy: 2, limitedBy: utf8.endIndex), h < utf8.endIndex,
               let v = UInt8(String(decoding: utf8[utf8.index(after: i)...h], as: UTF8.self), radix: 16) {
                bytes.append(v)
                i = utf8.index(after: h)
            } else {
                bytes.append(utf8[i])
                i = utf8.index(after: i)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Opens the store this location names (not yet migrated).
    public func open(logger: Logger) throws -> any TaskStore {
        switch self {
        case .sqlite(let path): try SQLiteTaskStore(path: path)
        case .postgres(let settings): try PostgresTaskStore(settings, logger: logger)
        }
    }
}

public struct StoreURLError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension String {
    var trimmingBrackets: String { hasPrefix("[") && hasSuffix("]") ? String(dropFirst().dropLast()) : self }
}
