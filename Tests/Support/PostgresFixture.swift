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
    let bin: String
    let supervisor: Supervisor

    private init(port: Int, directory: String, bin: String, supervisor: Supervisor) {
        self.port = port
        self.directory = directory
        self.bin = bin
        self.supervisor = supervisor
    }

    /// One server per test process, started on first use. A `Task`, not a scope: it is shared
    /// by every test of the process and outlives them all.
    public static let shared = Task { try await PostgresFixture.start(durable: false) }

    /// `durable: false` turns fsync off (tests); the benchmark measures with PostgreSQL's defaults.
    public static func start(durable: Bool) async throws -> PostgresFixture {
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
        var args = ["-D", data, "-p", "\(port)", "-k", root, "-c", "listen_addresses=127.0.0.1"]
        if !durable { args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] }
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
        return PostgresFixture(port: port, directory: root, bin: bin, supervisor: supervisor)
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
