import Essentials
import Logging
import NIOSSL
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

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
    /// `sslrootcert`: a PEM file of the CA certificates verify-full trusts, instead of the
    /// system's (a managed server's CA: RDS's region bundle, a private CA).
    public var rootCertificate: String?

    public init(host: String, port: Int = 5432, user: String, password: String? = nil, database: String, sslMode: SSLMode = .prefer,
                rootCertificate: String? = nil) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.rootCertificate = rootCertificate
    }

    /// libpq's meaning: `require` encrypts without checking the certificate; `verify-full`
    /// checks the chain (against `sslrootcert`, else the system's CAs) and the host name.
    func tls() throws -> PostgresClient.Configuration.TLS {
        guard let tls = try tlsConfiguration() else { return .disable }
        return sslMode == .prefer ? .prefer(tls) : .require(tls)
    }

    func tlsConfiguration() throws(StoreURLError) -> TLSConfiguration? {
        switch sslMode {
        case .disable:
            return nil
        case .prefer, .require:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            return tls
        case .verifyFull:
            var tls = TLSConfiguration.makeClientConfiguration()
            if let rootCertificate { tls.trustRoots = .certificates(try Self.rootCertificates(at: rootCertificate)) }
            return tls
        }
    }

    /// The certificates of an `sslrootcert` file, or an error saying what is wrong with it.
    static func rootCertificates(at path: String) throws(StoreURLError) -> [NIOSSLCertificate] {
        guard path.hasPrefix("/") else {
            throw StoreURLError("sslrootcert must be an absolute path to a PEM file of CA certificates, got \"\(path)\"")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let why = String(cString: strerror(errno))
            throw StoreURLError("sslrootcert \(path) cannot be read (\(why)): it must be a PEM file of CA certificates that kioskd's user can read")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                let why = String(cString: strerror(errno))
                throw StoreURLError("sslrootcert \(path) cannot be read (\(why)): it must be a PEM file of CA certificates")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            guard bytes.count <= 16 << 20 else { throw StoreURLError("sslrootcert \(path) is over 16 MiB: it must be a PEM file of CA certificates") }
        }
        let marker = Array("-----BEGIN CERTIFICATE-----".utf8)
        guard bytes.count >= marker.count, (0...(bytes.count - marker.count)).contains(where: { bytes[$0..<$0 + marker.count].elementsEqual(marker) }) else {
            throw StoreURLError("sslrootcert \(path) holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line): give the CA certificate that signed the server's, in PEM")
        }
        do {
            return try NIOSSLCertificate.fromPEMBytes(bytes)
        } catch {
            throw StoreURLError("sslrootcert \(path) is not a valid PEM certificate file (\(error)): give the CA certificate that signed the server's, in PEM")
        }
    }
}

/// Where the store lives, parsed from `store.url`.
public enum StoreLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(PostgresSettings)

    /// `sqlite:///abs/path` or `postgres://[user[:password]@]host[:port]/database[?sslmode=…&sslrootcert=/ca.pem]`.
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
        var rootCertificate: String?
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            switch kv.first {
            case "sslmode":
                guard let value = kv.dropFirst().first, let m = PostgresSettings.SSLMode(rawValue: String(value)) else {
                    throw StoreURLError("sslmode must be disable, prefer, require or verify-full, got \"\(kv.dropFirst().first ?? "")\"")
                }
                mode = m
            case "sslrootcert":
                guard let value = kv.dropFirst().first, !value.isEmpty else {
                    throw StoreURLError("sslrootcert needs a value: the absolute path of a PEM file of CA certificates")
                }
                rootCertificate = Self.percentDecoded(value)
            default:
                throw StoreURLError("unknown URL parameter \"\(kv.first ?? "")\" (only sslmode and sslrootcert are read)")
            }
        }
        if let rootCertificate {
            // libpq would verify the chain alone (verify-ca) under require; kioskd has no such
            // mode, and ignoring the file would leave the server unchecked without a word.
            guard mode == .verifyFull else {
                throw StoreURLError("sslrootcert is read only with sslmode=verify-full (\(mode.rawValue) does not check the server's certificate): add sslmode=verify-full")
            }
            _ = try PostgresSettings.rootCertificates(at: rootCertificate)
        }
        self = .postgres(PostgresSettings(host: host, port: port, user: user, password: password, database: database, sslMode: mode,
                                          rootCertificate: rootCertificate))
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

extension PostgresSettings {
    /// Why connecting to the server fails, in an operator's words, when the server's answer
    /// says why: TLS it does not offer or a certificate that does not verify, or a session it
    /// refuses (pg_hba.conf, authentication, no such database). Nil when a connection works or
    /// gets no answer (refused, unreachable, too slow): the caller's "did not answer" says that.
    /// The pool only logs its failed connects and retries them for good, so a store call that
    /// timed out asks here, with one connection of its own, at most `limit` long.
    public func connectionProblem(within limit: Duration = .seconds(3)) async -> String? {
        let tls: PostgresConnection.Configuration.TLS
        do {
            switch (sslMode, try tlsConfiguration()) {
            case (_, nil): tls = .disable
            case (.prefer, let configuration?): tls = .prefer(try NIOSSLContext(configuration: configuration))
            case (_, let configuration?): tls = .require(try NIOSSLContext(configuration: configuration))
            }
        } catch {
            return "\(error)"
        }
        var configuration = PostgresConnection.Configuration(host: host, port: port, username: user, password: password,
                                                             database: database, tls: tls)
        configuration.options.connectTimeout = .init(limit)
        let attempt = configuration
        let quiet = Logger(label: "kioskd.store.diagnosis", factory: { _ in SwiftLogNoOpLogHandler() })
        do {
            let connection = try await withTimeout(limit, "PostgreSQL") {
                try await PostgresConnection.connect(configuration: attempt, id: 0, logger: quiet)
            }
            try? await connection.close()
            return nil
        } catch {
            return explanation(of: error)
        }
    }

    /// A connection error the server's answer explains, said with what to do; nil for the rest.
    func explanation(of error: any Error) -> String? {
        let at = "PostgreSQL at \(host):\(port)"
        var cause: any Error = error
        if let error = error as? PSQLError {
            if error.code == .sslUnsupported {
                return "\(at) does not accept TLS connections, and sslmode=\(sslMode.rawValue) needs TLS: turn ssl on in the server's "
                    + "configuration, or use sslmode=prefer (TLS when the server offers it) only on a network you trust"
            }
            if let message = error.serverInfo?[.message] {
                let onlyTLS = sslMode == .disable && message.contains("no encryption")
                return "\(at) refused the connection: \(message)"
                    + (onlyTLS ? " (the server accepts only TLS: use sslmode=verify-full with sslrootcert, or sslmode=require)" : "")
            }
            guard let underlying = error.underlying else { return nil }
            cause = underlying
        }
        if let cause = cause as? NIOSSLExtraError, cause == .failedToValidateHostname {
            return "\(at): TLS certificate verification failed: the server's certificate is not issued for \"\(host)\" "
                + "(sslmode=verify-full checks the host name): connect by a name the certificate holds, or give the server a certificate for \(host)"
        }
        let text = String(describing: cause)
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            let trusted = rootCertificate.map { "a CA in sslrootcert \($0)" } ?? "a CA of this host's trust store (no sslrootcert given)"
            return "\(at): TLS certificate verification failed: the server's certificate is not signed by \(trusted), or is "
                + "expired or not yet valid: set sslrootcert to the CA certificate that signed the server's"
        }
        if cause is NIOSSLError || cause is BoringSSLError || cause is NIOSSLExtraError {
            return "\(at): the TLS handshake failed (\(text))"
        }
        return nil
    }
}
