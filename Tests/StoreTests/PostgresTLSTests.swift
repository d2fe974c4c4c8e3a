import KioskdTestSupport
import Logging
import Store
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The TLS server of this test process, beside `PostgresFixture.shared` (the plain one). Its
/// pg_hba.conf refuses every TCP session without TLS: a store that works against it is on TLS.
let tlsServer = Task { try await PostgresFixture.start(durable: false, tls: true) }

private var quiet: Logger {
    var logger = Logger(label: "test.pg.tls")
    logger.logLevel = .critical
    return logger
}

/// A new database on `server`; the store opened at `host` with `query` is migrated, creates a
/// task and reads it and its event back.
private func roundTrip(_ server: PostgresFixture, host: String = "127.0.0.1", _ query: String) async throws {
    let name = "tls_" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    _ = try await server.createDatabase(name)
    guard case .postgres(let settings) = try StoreLocation(url: "postgres://kioskd@\(host):\(server.port)/\(name)?\(query)") else {
        throw TestFailure("not a PostgreSQL URL")
    }
    try await using(try PostgresTaskStore(settings, logger: quiet), migrated: true) { store in
        let (created, isNew) = try await store.create(task("tls-1"), event: event("state_changed"))
        #expect(isNew)
        #expect(try await store.task("tls-1") == created)
        #expect(try await store.events("tls-1", after: 0, limit: 10).map(\.type) == ["state_changed"])
    }
}

/// What the operator reads when the store at `url` cannot be used: the migration's StoreError,
/// and a later read's, which must say the same thing.
private func failure(_ url: String) async throws -> String {
    guard case .postgres(let settings) = try StoreLocation(url: url) else { throw TestFailure("not a PostgreSQL URL") }
    var message = ""
    try await using(try PostgresTaskStore(settings, timeout: .seconds(3), logger: quiet)) { store in
        do {
            try await store.migrate()
            Issue.record("\(url) must not work")
        } catch let error as StoreError {
            guard case .migration(let why) = error else { Issue.record("not a migration error: \(error)"); return }
            message = why
        }
        do {
            _ = try await store.task("x")
            Issue.record("\(url) must not work")
        } catch let error as StoreError {
            #expect(error.description == message, "a read says what the migration said")
        }
    }
    return message
}

@Suite("PostgreSQL over TLS")
struct PostgresTLSTests {
    @Test func requireWorksAgainstATLSServerAndIsTLS() async throws {
        try await roundTrip(try await tlsServer.value, "sslmode=require")
    }

    /// The check the others rely on: the TLS server refuses a plain session, with its reason.
    @Test func aPlainSessionIsRefusedByTheTLSOnlyServerWithItsReason() async throws {
        let server = try await tlsServer.value
        _ = try await server.createDatabase("tls_plain")
        let message = try await failure("postgres://kioskd@127.0.0.1:\(server.port)/tls_plain?sslmode=disable")
        #expect(message.hasPrefix("the task store is unavailable: PostgreSQL at 127.0.0.1:\(server.port) refused the connection: "), "\(message)")
        #expect(message.contains("no pg_hba.conf entry for host \"127.0.0.1\", user \"kioskd\", database \"tls_plain\", no encryption"), "\(message)")
        #expect(message.hasSuffix("(the server accepts only TLS: use sslmode=verify-full with sslrootcert, or sslmode=require)"), "\(message)")
    }

    @Test func requireAgainstAServerWithoutTLSFailsSayingSo() async throws {
        let plain = try await PostgresFixture.shared.value
        _ = try await plain.createDatabase("tls_require_plain")
        let message = try await failure("postgres://kioskd@127.0.0.1:\(plain.port)/tls_require_plain?sslmode=require")
        #expect(message == "the task store is unavailable: PostgreSQL at 127.0.0.1:\(plain.port) does not accept TLS connections, and "
            + "sslmode=require needs TLS: turn ssl on in the server's configuration, or use sslmode=prefer (TLS when the server offers it) "
            + "only on a network you trust")
    }

    @Test(arguments: ["localhost", "127.0.0.1"])
    func verifyFullWorksWithTheServersCA(_ host: String) async throws {
        let server = try await tlsServer.value
        try await roundTrip(server, host: host, "sslmode=verify-full&sslrootcert=\(server.tls!.caCertificate)")
    }

    @Test func verifyFullWithAnotherCAFailsNamingCertificateVerification() async throws {
        let server = try await tlsServer.value
        _ = try await server.createDatabase("tls_other_ca")
        let other = server.tls!.otherCACertificate
        let message = try await failure("postgres://kioskd@localhost:\(server.port)/tls_other_ca?sslmode=verify-full&sslrootcert=\(other)")
        #expect(message == "the task store is unavailable: PostgreSQL at localhost:\(server.port): TLS certificate verification failed: "
            + "the server's certificate is not signed by a CA in sslrootcert \(other), or is expired or not yet valid: "
            + "set sslrootcert to the CA certificate that signed the server's")
        // Without sslrootcert the system's CAs are the ones asked, and none signed a test CA.
        let system = try await failure("postgres://kioskd@localhost:\(server.port)/tls_other_ca?sslmode=verify-full")
        #expect(system.contains("TLS certificate verification failed: the server's certificate is not signed by a CA of this host's trust store (no sslrootcert given)"),
                "\(system)")
    }

    @Test func verifyFullAtAnAddressTheCertificateDoesNotNameFails() async throws {
        let server = try await tlsServer.value
        // The same server at 127.0.0.2 works unverified: what verify-full refuses is the name.
        try await roundTrip(server, host: "127.0.0.2", "sslmode=require")
        _ = try await server.createDatabase("tls_wrong_name")
        let ca = server.tls!.caCertificate
        let message = try await failure("postgres://kioskd@127.0.0.2:\(server.port)/tls_wrong_name?sslmode=verify-full&sslrootcert=\(ca)")
        #expect(message == "the task store is unavailable: PostgreSQL at 127.0.0.2:\(server.port): TLS certificate verification failed: "
            + "the server's certificate is not issued for \"127.0.0.2\" (sslmode=verify-full checks the host name): connect by a name "
            + "the certificate holds, or give the server a certificate for 127.0.0.2")
    }

    @Test func preferUsesTLSWhenTheServerOffersIt() async throws {
        try await roundTrip(try await tlsServer.value, "sslmode=prefer")
    }

    @Test func preferWorksInPlainWithAServerWithoutTLS() async throws {
        try await roundTrip(try await PostgresFixture.shared.value, "sslmode=prefer")
    }

    @Test func sslrootcertIsReadWhenTheURLIsParsedAndItsMistakesNamed() async throws {
        let server = try await tlsServer.value
        let ca = server.tls!.caCertificate
        let parsed = try StoreLocation(url: "postgres://kioskd@db:5432/k?sslrootcert=\("%2F" + ca.split(separator: "/").joined(separator: "%2F"))&sslmode=verify-full")
        #expect(parsed == .postgres(PostgresSettings(host: "db", user: "kioskd", database: "k", sslMode: .verifyFull, rootCertificate: ca)))

        func refusal(_ query: String) -> String {
            do {
                _ = try StoreLocation(url: "postgres://kioskd@db/k?\(query)")
                return "accepted"
            } catch {
                return error.description
            }
        }
        let dir = server.tls!.directory
        #expect(refusal("sslmode=verify-full&sslrootcert=\(dir)/missing.pem")
            == "sslrootcert \(dir)/missing.pem cannot be read (No such file or directory): it must be a PEM file of CA certificates that kioskd's user can read")
        #expect(refusal("sslmode=verify-full&sslrootcert=\(dir)")
            == "sslrootcert \(dir) cannot be read (Is a directory): it must be a PEM file of CA certificates")
        #expect(refusal("sslmode=verify-full&sslrootcert=\(dir)/server.ext")
            == "sslrootcert \(dir)/server.ext holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line): give the CA certificate that signed the server's, in PEM")
        #expect(refusal("sslmode=verify-full&sslrootcert=ca.pem") == "sslrootcert must be an absolute path to a PEM file of CA certificates, got \"ca.pem\"")
        #expect(refusal("sslmode=verify-full&sslrootcert=") == "sslrootcert needs a value: the absolute path of a PEM file of CA certificates")
        #expect(refusal("sslmode=require&sslrootcert=\(ca)")
            == "sslrootcert is read only with sslmode=verify-full (require does not check the server's certificate): add sslmode=verify-full")
        #expect(refusal("sslrootcert=\(ca)")
            == "sslrootcert is read only with sslmode=verify-full (prefer does not check the server's certificate): add sslmode=verify-full")
        #expect(refusal("sslcert=/x.pem") == "unknown URL parameter \"sslcert\" (only sslmode and sslrootcert are read)")

        // A file that goes away after the URL was parsed: opening the store says which file.
        let copy = dir + "/gone.pem"
        #expect(link(ca, copy) == 0)
        guard case .postgres(let settings) = try StoreLocation(url: "postgres://kioskd@db/k?sslmode=verify-full&sslrootcert=\(copy)") else { return }
        unlink(copy)
        do {
            let store = try PostgresTaskStore(settings, logger: quiet)
            await store.close()
            Issue.record("a store whose sslrootcert is gone must not open")
        } catch let error as StoreURLError {
            #expect(error.description.hasPrefix("sslrootcert \(copy) cannot be read (No such file or directory)"), "\(error)")
        }
    }
}
