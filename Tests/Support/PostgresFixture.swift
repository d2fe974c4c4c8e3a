import Essentials
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL on loopback for the tests and the benchmark: initdb into a temporary
/// directory and `postgres` supervised as the unprivileged `kioskd` user (PostgreSQL refuses
/// root). It dies with the process that started it (the spawn's parent-death signal).
public final class PostgresFixture: Sendable {
    public let port: Int
    public let directory: String
    /// The certificates of a server started with `tls: true`.
    public let tls: PostgresTLSFiles?
    let bin: String
    let supervisor: Supervisor

    private init(port: Int, directory: String, tls: PostgresTLSFiles?, bin: String, supervisor: Supervisor) {
        self.port = port
        self.directory = directory
        self.tls = tls
        self.bin = bin
        self.supervisor = supervisor
    }

    /// One server per test process, started on first use. A `Task`, not a scope: it is shared
    /// by every test of the process and outlives them all.
    public static let shared = Task { try await PostgresFixture.start(durable: false) }

    /// `durable: false` turns fsync off (tests); the benchmark measures with PostgreSQL's defaults.
    /// `tls: true` is a managed server's setup (RDS with rds.force_ssl): certificates made by
    /// `PostgresTLSFiles.generate` for localhost and 127.0.0.1, and pg_hba.conf refuses every TCP
    /// session without TLS, so a session that works is a TLS one. That server also listens on
    /// 127.0.0.2, an address its certificate does not name.
    /// `alsoListen`: more addresses to listen on (a veth link's, for a daemon in a network
    /// namespace), and pg_hba.conf trusts the `trusting` networks (CIDR) besides loopback.
    public static func start(durable: Bool, tls: Bool = false, alsoListen: [String] = [], trusting: [String] = []) async throws -> PostgresFixture {
        let versions = directoryEntries("/usr/lib/postgresql").sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        guard let version = versions.first(where: { access("/usr/lib/postgresql/\($0)/bin/postgres", X_OK) == 0 }) else {
            throw TestFailure("PostgreSQL is not installed (Debian package postgresql): run scripts/setup.sh")
        }
        let bin = "/usr/lib/postgresql/\(version)/bin"
        let user = try Credentials.lookup(user: "kioskd")
        // Starts take turns, in this process and in the others on the host: a start's directory
        // has no postmaster.pid until its server runs, so another start's sweep of leftovers took
        // it for a dead run's and removed it under initdb or the starting server.
        let turn = try await takeStartTurn()
        defer { close(turn) }
        removeLeftovers()
        let root = try makeTempDir("kioskd-pg")
        let data = root + "/data"
        guard mkdir(data, 0o700) == 0, chown(data, user.uid, user.gid) == 0, chown(root, user.uid, user.gid) == 0 else {
            throw TestFailure("cannot prepare \(data): errno \(errno)")
        }
        let initdb = try await runToExit("/usr/bin/setpriv", ["--reuid=kioskd", "--regid=kioskd", "--init-groups", bin + "/initdb",
                                                                "-D", data, "-U", "kioskd", "-A", "trust", "-E", "UTF8", "--no-sync"],
                                         environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"], timeout: .seconds(60))
        guard initdb == 0 else { throw TestFailure("initdb failed with status \(initdb)") }
        let port = try freePort()
        var args = ["-D", data, "-p", "\(port)", "-k", root, "-c", "listen_addresses=" + (["127.0.0.1"] + alsoListen).joined(separator: ",")]
        if !tls, !trusting.isEmpty {
            let hba = try readText(data + "/pg_hba.conf")
            try writeText(data + "/pg_hba.conf", hba + trusting.map { "host all all \($0) trust\n" }.joined())
        }
        if !durable { args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] }
        var files: PostgresTLSFiles?
        if tls {
            let made = try await PostgresTLSFiles.generate(in: root + "/tls")
            // PostgreSQL refuses a key file others can read, or one owned by anyone but its own
            // user or root ("private key file … has group or world access").
            guard chown(made.serverKey, user.uid, user.gid) == 0, chmod(made.serverKey, 0o600) == 0 else {
                throw TestFailure("cannot give \(made.serverKey) to kioskd with mode 0600: errno \(errno)")
            }
            try writeText(data + "/pg_hba.conf", """
                local all all trust
                hostssl all all 127.0.0.0/8 trust
                hostssl all all ::1/128 trust

                """ + trusting.map { "hostssl all all \($0) trust\n" }.joined())
            args[args.firstIndex { $0.hasPrefix("listen_addresses=") }!] = "listen_addresses=" + (["127.0.0.1", "127.0.0.2"] + alsoListen).joined(separator: ",")
            args += ["-c", "ssl=on", "-c", "ssl_cert_file=\(made.serverCertificate)", "-c", "ssl_key_file=\(made.serverKey)"]
            files = made
        }
        let postgres = ChildSpec(
            id: "postgres",
            kind: .process(ProcessSpec(executable: bin + "/postgres", arguments: args,
                                       environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"], credentials: user)),
            shutdown: .timeout(.seconds(5)),
            // Its own line, not the port: it accepts TCP while still refusing sessions ("the
            // database system is starting up"), which failed a createdb right after the start.
            readiness: .logLine(contains: "database system is ready to accept connections"),
            readyTimeout: .seconds(30))
        var logger = Logger(label: "postgres")
        logger.logLevel = .warning
        let supervisor = try Supervisor(name: "pg", spec: SupervisorSpec(strategy: .oneForOne, intensity: Intensity(maxRestarts: 0, period: .seconds(1)),
                                                                         children: [postgres]),
                                        events: EventBus(), logger: logger)
        // Unscoped: the server outlives this call, until `stop()` or the process ends.
        Task { _ = await supervisor.run() }
        try await supervisor.waitReady()
        return PostgresFixture(port: port, directory: root, tls: files, bin: bin, supervisor: supervisor)
    }

    /// A new, empty database; returns its URL.
    public func createDatabase(_ name: String) async throws -> String {
        let rc = try await runToExit("/usr/bin/setpriv", ["--reuid=kioskd", "--regid=kioskd", "--init-groups", bin + "/createdb",
                                                          "-h", "127.0.0.1", "-p", "\(port)", "-U", "kioskd", name],
                                     environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"], output: directory + "/createdb-\(name).log")
        guard rc == 0 else {
            throw TestFailure("createdb \(name) failed with status \(rc): \((try? readText(directory + "/createdb-\(name).log")) ?? "")")
        }
        return "postgres://kioskd@127.0.0.1:\(port)/\(name)?sslmode=disable"
    }

    /// An exclusive flock on a host-wide file (released by closing the descriptor, or when the
    /// process dies), taken on a thread of its own: waiting must not hold a cooperative thread.
    static func takeStartTurn() async throws -> CInt {
        let fd = open("/tmp/kioskd-postgres-fixture.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw TestFailure("cannot open /tmp/kioskd-postgres-fixture.lock: errno \(errno)") }
        let taken = OnceValue<Int32>()
        Thread.detach {
            var rc: Int32 = 0
            repeat { rc = flock(fd, LOCK_EX) } while rc != 0 && errno == EINTR
            // A waiter that was cancelled meanwhile set its own value: the lock is nobody's.
            if !taken.set(rc == 0 ? 0 : errno) { close(fd) }
        }
        do {
            let error = try await taken.wait()
            guard error == 0 else {
                close(fd)
                throw TestFailure("cannot lock /tmp/kioskd-postgres-fixture.lock: errno \(error)")
            }
            return fd
        } catch is CancellationError {
            if !taken.set(-1) { close(fd) }  // taken just now: ours to release
            throw CancellationError()
        }
    }

    /// Data directories of earlier test runs whose server is gone (a killed run cannot clean up).
    static func removeLeftovers() {
        for name in directoryEntries("/tmp") where name.hasPrefix("kioskd-pg-") {
            let pidText = (try? readText("/tmp/\(name)/data/postmaster.pid"))?.split(separator: "\n").first
            if let pid = pidText.flatMap({ Int32($0) }), isAlive(pid) { continue }
            removeTree("/tmp/" + name)
        }
    }

    public func stop() {
        supervisor.shutdown()
    }
}

/// A CA, a server certificate it signed for `localhost` and `127.0.0.1` (subjectAltName) with
/// its key, and a second CA that signed nothing of the server's, made with openssl.
public struct PostgresTLSFiles: Sendable {
    public let directory: String
    /// The CA that signed the server's certificate (an sslrootcert that verifies).
    public let caCertificate: String
    /// A CA unrelated to the server (an sslrootcert that must not verify).
    public let otherCACertificate: String
    public let serverCertificate: String
    public let serverKey: String

    /// Into `directory` (created): EC P-256 keys, certificates valid for two days.
    public static func generate(in directory: String) async throws -> PostgresTLSFiles {
        let openssl = "/usr/bin/openssl"
        guard access(openssl, X_OK) == 0 else {
            throw TestFailure("openssl is not installed (Debian package openssl): run scripts/setup.sh")
        }
        guard mkdir(directory, 0o755) == 0 else { throw TestFailure("cannot create \(directory): errno \(errno)") }
        let files = PostgresTLSFiles(directory: directory, caCertificate: directory + "/ca.pem", otherCACertificate: directory + "/other-ca.pem",
                                     serverCertificate: directory + "/server.pem", serverKey: directory + "/server.key")
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        let ca = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        try writeText(directory + "/server.ext", """
            subjectAltName=DNS:localhost,IP:127.0.0.1
            extendedKeyUsage=serverAuth
            basicConstraints=critical,CA:FALSE
            keyUsage=critical,digitalSignature

            """)
        let steps: [[String]] = [
            ["req", "-x509", "-new"] + key + ["-keyout", directory + "/ca.key", "-out", files.caCertificate, "-days", "2",
                                              "-subj", "/CN=kioskd test CA"] + ca,
            ["req", "-x509", "-new"] + key + ["-keyout", directory + "/other-ca.key", "-out", files.otherCACertificate, "-days", "2",
                                              "-subj", "/CN=kioskd unrelated CA"] + ca,
            ["req", "-new"] + key + ["-keyout", files.serverKey, "-out", directory + "/server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", directory + "/server.csr", "-CA", files.caCertificate, "-CAkey", directory + "/ca.key",
             "-set_serial", "\(UInt32.random(in: 1...UInt32.max))", "-days", "2", "-extfile", directory + "/server.ext", "-out", files.serverCertificate],
        ]
        for step in steps {
            let log = directory + "/openssl.log"
            let rc = try await runToExit(openssl, step, environment: ["PATH": "/usr/bin:/bin"], output: log)
            guard rc == 0 else {
                throw TestFailure("openssl \(step.joined(separator: " ")) failed with status \(rc): \((try? readText(log)) ?? "")")
            }
        }
        return files
    }
}

/// Writes `text` to a new file (mode 0644) or over an old one.
private func writeText(_ path: String, _ text: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw TestFailure("cannot write \(path): errno \(errno)") }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
        throw TestFailure("cannot write \(path): errno \(errno)")
    }
}
