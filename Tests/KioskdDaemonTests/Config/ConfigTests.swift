import KioskdTestSupport
import Kiosk
import Supervision
import Testing
import Yams
@testable import KioskdDaemon

@Suite("Configuration")
struct ConfigTests {
    func load(_ yaml: String, env: [String: String] = [:]) throws -> Config {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/kioskd.yaml"
        try writeFile(path, yaml)
        return try ConfigLoader.load(path: path, environment: env)
    }

    func issues(_ yaml: String, env: [String: String] = [:]) throws -> [ConfigIssue] {
        do {
            _ = try load(yaml, env: env)
            return []
        } catch let error as ConfigErrors {
            return error.issues
        }
    }

    @Test func noFileMeansEveryDefault() throws {
        let config = try ConfigLoader.load(path: nil, environment: ["PATH": "/usr/bin"])
        #expect(config == Config())
        #expect(config.storeLocation == "sqlite:///var/lib/kioskd/kioskd.sqlite")
    }

    @Test func theShippedFileDocumentsEveryKeyWithItsDefault() throws {
        let text = try readText(repositoryRoot + "/config/kioskd.yaml")
        #expect(try ConfigLoader.load(path: repositoryRoot + "/config/kioskd.yaml", environment: [:]) == Config())
        var leaves: Set<String> = []
        func walk(_ node: Node, _ prefix: String) {
            guard let mapping = node.mapping else {
                leaves.insert(prefix)
                return
            }
            for (k, v) in mapping { walk(v, prefix.isEmpty ? k.scalar!.string : prefix + "." + k.scalar!.string) }
        }
        walk(try Yams.compose(yaml: text)!, "")
        let documented = Set(ConfigSchema.keys.map(\.path) + [ConfigSchema.programsKey])
        #expect(leaves == documented, "config/kioskd.yaml and the schema disagree: missing \(documented.subtracting(leaves)), extra \(leaves.subtracting(documented))")
        for field in ProgramsParser.fields.keys {
            #expect(text.contains("#     \(field):") || text.contains("#   - \(field):"), "the programs example documents \(field)")
        }
    }

    /// A valid, non-default value for every key: each must be settable from the environment.
    static let samples: [String: String] = [
        "control.socket": "/tmp/x/control.sock",
        "control.group": "root",
        "control.allow_uids": "0,1000",
        "control.allow_gids": "0",
        "tasks.max_sessions": "4",
        "tasks.start_timeout": "90s",
        "tasks.max_lifetime": "2h",
        "tasks.retention": "3d",
        "public.listen": "127.0.0.1:9090",
        "public.origins": "https://app.example.com,http://localhost:3000",
        "public.ping_interval": "30s",
        "public.idle_timeout": "10m",
        "public.max_lifetime": "2h",
        "public.max_viewers": "3",
        "public.clipboard": "true",
        "public.max_connections": "500",
        "public.max_connections_per_ip": "50",
        "public.header_timeout": "5s",
        "public.auth_timeout": "2m",
        "public.max_request_line": "8192",
        "public.max_header_bytes": "32768",
        "public.tls.cert_file": "/etc/kioskd/tls.pem",
        "public.tls.key_file": "/etc/kioskd/tls.key",
        "public.jwt.hs256_secret_file": "/etc/kioskd/idp.secret",
        "public.jwt.jwks_file": "/etc/kioskd/jwks.json",
        "public.jwt.issuer": "https://cognito-idp.eu-west-1.amazonaws.com/pool",
        "public.jwt.audience": "app-client",
        "public.jwt.task_claim": "custom:task",
        "public.jwt.role_claim": "custom:role",
        "public.jwt.any_task": "true",
        "state.dir": "/srv/kioskd",
        "runtime.dir": "/run/k2",
        "store.url": "postgres://kioskd@db.internal:5432/kioskd?sslmode=verify-full",
        "log.level": "debug",
        "log.format": "journal",
        "supervisor.strategy": "rest_for_one",
        "supervisor.max_restarts": "9",
        "supervisor.period": "2m",
        "supervisor.backoff.initial": "50ms",
        "supervisor.backoff.multiplier": "2",
        "supervisor.backoff.max": "1h",
        "supervisor.backoff.jitter": "0.1",
        "supervisor.backoff.reset_after": "45s",
        "shutdown.timeout": "12s",
        "sessions.user": "kiosk-user",
        "sessions.displays": "100-199",
        "sessions.ports": "30000-30999",
        "sessions.warm": "2",
        "sessions.memory_max": "1536MiB",
        "sessions.memory_high": "1GiB",
        "sessions.pids_max": "2048",
        "tasks.max_queued": "16",
        "capacity.memory": "3GiB",
        "capacity.reserve": "256MiB",
        "capacity.session_estimate": "400MiB",
        "capacity.pressure_high": "30",
        "capacity.pressure_low": "12.5",
        "capacity.max_starting": "3",
        "sessions.width": "1920",
        "sessions.height": "1080",
        "sessions.input": "view",
        "sessions.bridge": "websockify",
        "sessions.max_restarts": "3",
        "sessions.period": "30s",
        "sessions.browser": "/opt/chromium/chrome",
        "sessions.sandbox": "false",
        "sessions.port_guard": "false",
        "sessions.cdp.allow_uids": "1500,1501",
        "sessions.cdp.allow_gids": "2000",
        "sessions.lockdown.add": "Ctrl+Shift+X, F9",
        "sessions.lockdown.remove": "F5, Ctrl+R",
        "sessions.lockdown.tabs": "kiosk_only",
        "demo.enabled": "true",
        "demo.url": "https://example.com/",
        "cluster.enabled": "true",
        "cluster.host_id": "browser-7",
        "cluster.advertise": "10.0.1.7:8081",
        "cluster.listen": "10.0.1.7:8081",
        "cluster.secret_file": "/etc/kioskd/cluster.key",
        "cluster.heartbeat": "1s",
        "cluster.lease_ttl": "10s",
        "cluster.claim_grace": "250ms",
    ]

    @Test func everyKeyCanBeSetFromItsEnvironmentVariable() throws {
        #expect(Set(Self.samples.keys) == Set(ConfigSchema.keys.map(\.path)), "every key needs a sample here")
        var env: [String: String] = [:]
        for key in ConfigSchema.keys { env[key.environmentVariable] = Self.samples[key.path] }
        #expect(env["KIOSKD_CONTROL_SOCKET"] == "/tmp/x/control.sock")
        #expect(env["KIOSKD_SUPERVISOR_BACKOFF_RESET_AFTER"] == "45s")
        let config = try ConfigLoader.load(path: nil, environment: env)
        for key in ConfigSchema.keys {
            #expect(key.current(config) == Self.samples[key.path], "\(key.environmentVariable)")
        }
    }

    @Test func theEnvironmentOverridesTheFile() throws {
        let config = try load("log:\n  level: error\n", env: ["KIOSKD_LOG_LEVEL": "trace"])
        #expect(config.log.level == .trace)
    }

    @Test func programsCanComeFromTheEnvironmentAsYAML() throws {
        let config = try ConfigLoader.load(path: nil, environment: ["KIOSKD_PROGRAMS": #"[{name: a, command: ["/bin/true"], restart: transient}]"#])
        #expect(config.programs.map(\.name) == ["a"])
        #expect(config.programs[0].restart == .transient)
    }

    @Test(arguments: [
        ("control:\n  socket: relative.sock\n", "control.socket", "must be an absolute path, got \"relative.sock\""),
        ("public:\n  listen: localhost\n", "public.listen", "must be host:port"),
        ("public:\n  listen: \"0.0.0.0:0\"\n", "public.listen", "port must be 1–65535"),
        ("store:\n  url: mysql://x/y\n", "store.url", "must be empty, sqlite:///path or postgres://"),
        ("store:\n  url: sqlite://relative.db\n", "store.url", "needs an absolute path"),
        ("store:\n  url: postgres://u@h/db?sslmode=maybe\n", "store.url", "sslmode must be disable, prefer, require or verify-full"),
        ("log:\n  level: loud\n", "log.level", "must be one of trace, debug, info, notice, warning, error, critical"),
        ("supervisor:\n  strategy: simple_one_for_one\n", "supervisor.strategy", "must be one of one_for_one, one_for_all, rest_for_one"),
        ("supervisor:\n  max_restarts: -1\n", "supervisor.max_restarts", "whole number from 0 to 10000"),
        ("supervisor:\n  period: 60\n", "supervisor.period", "must be a duration such as 500ms"),
        ("supervisor:\n  backoff:\n    jitter: 2\n", "supervisor.backoff.jitter", "from 0 to 1"),
        ("shutdown:\n  timeout: 1ms\n", "shutdown.timeout", "must be at least 100ms"),
        ("control:\n  sockt: /x\n", "control.sockt", "unknown key (did you mean control.socket?)"),
        ("contrl:\n  socket: /x\n", "contrl", "unknown key (did you mean control?)"),
        ("control: [1, 2]\n", "control", "unknown key"),
        ("log:\n  level: [info]\n", "log.level", "must be a single value"),
        // Found by the bench's fuzzer: an empty key was named by nothing ("kioskd.yaml:1: : unknown key").
        ("'': x\n", "\"\"", "unknown key"),
        ("control:\n  \"\": x\n", "control.\"\"", "unknown key"),
        ("control:\n  group: no-such-group-here\n", "control.group", "no group named \"no-such-group-here\""),
        ("control:\n  allow_uids: \"0, bob\"\n", "control.allow_uids", "must be numeric ids separated by commas"),
        ("tasks:\n  retention: 7 days\n", "tasks.retention", "must be a duration such as 500ms, 5s, 2m, 1h or 7d"),
        ("public:\n  origins: \"https://a.example/path\"\n", "public.origins", "each origin must be scheme://host[:port] with no path"),
        ("tasks:\n  max_sessions: 0\n", "tasks.max_sessions", "whole number from 1 to 256"),
        ("sessions:\n  lockdown:\n    add: \"Ctrl+Bogus\"\n", "sessions.lockdown.add", "'Ctrl+Bogus': 'Bogus' is not an X keysym name"),
        ("sessions:\n  lockdown:\n    add: \"Hyper+W\"\n", "sessions.lockdown.add", "unknown modifier 'Hyper'"),
        ("sessions:\n  lockdown:\n    remove: \"F5, Ctrl+G\"\n", "sessions.lockdown.remove", "'Ctrl+G' is not in the grab list"),
        ("cluster:\n  host_id: \"web 7\"\n", "cluster.host_id", "letters, digits"),
        ("cluster:\n  advertise: 0.0.0.0:8081\n", "cluster.advertise", "not the wildcard 0.0.0.0"),
    ])
    func aBadValueNamesItsKeyAndWhatIsAllowed(yaml: String, key: String, message: String) throws {
        let found = try issues(yaml)
        #expect(found.count == 1, "\(found)")
        #expect(found.first?.key == key)
        #expect(found.first?.message.contains(message) == true, "\(found.first?.message ?? "no issue")")
        #expect(found.first?.source.contains("kioskd.yaml:") == true, "the file and line are named")
    }

    @Test(arguments: [
        ("public:\n  tls:\n    cert_file: /etc/kioskd/tls.pem\n", ["public.tls.key_file"]),
        ("public:\n  tls:\n    key_file: /etc/kioskd/tls.key\n", ["public.tls.cert_file"]),
        ("public:\n  jwt:\n    jwks_file: /etc/kioskd/jwks.json\n", ["public.jwt.audience", "public.jwt.issuer"]),
        ("public:\n  jwt:\n    hs256_secret_file: /etc/kioskd/idp.secret\n    issuer: https://idp.example\n", ["public.jwt.audience"]),
    ])
    func keysThatOnlyWorkTogetherAreCheckedBeforeStart(yaml: String, keys: [String]) throws {
        let found = try issues(yaml)
        #expect(found.map(\.key).sorted() == keys, "\(found)")
        #expect(found.allSatisfy { $0.message.hasPrefix("required ") }, "\(found)")
    }

    @Test func clusterModeNeedsTheSharedStoreTheSecretAnAddressAndALongEnoughLease() throws {
        let found = try issues("cluster:\n  enabled: true\n  heartbeat: 2s\n  lease_ttl: 5s\n")
        #expect(found.map(\.key).sorted() == ["cluster.advertise", "cluster.lease_ttl", "cluster.secret_file", "store.url"], "\(found)")
        #expect(found.first { $0.key == "store.url" }?.message.contains("postgres://") == true)
        #expect(found.first { $0.key == "cluster.lease_ttl" }?.message == "must be at least 3 × cluster.heartbeat (2s), got 5s")
        let fine = "store:\n  url: postgres://k@db/k\ncluster:\n  enabled: true\n  advertise: 10.0.0.5:8081\n  secret_file: /etc/kioskd/cluster.key\n"
        #expect(try issues(fine).isEmpty)
    }

    @Test func everyMistakeIsReportedNotJustTheFirst() throws {
        let found = try issues("control:\n  socket: x\nlog:\n  level: loud\n", env: ["KIOSKD_SHUTDOWN_TIMEOUT": "soon", "KIOSKD_CONTROL_SOKET": "/x"])
        #expect(found.map(\.key).sorted() == ["KIOSKD_CONTROL_SOKET", "control.socket", "log.level", "shutdown.timeout"])
        #expect(found.first { $0.key == "shutdown.timeout" }?.source == "environment KIOSKD_SHUTDOWN_TIMEOUT")
        #expect(found.first { $0.key == "KIOSKD_CONTROL_SOKET" }?.message == "unknown variable (did you mean KIOSKD_CONTROL_SOCKET?)")
        #expect(found.first { $0.key == "control.socket" }?.source.hasSuffix("kioskd.yaml:2") == true)
    }

    @Test func syntaxErrorsAndMissingFilesAreReported() throws {
        #expect(try issues("control: [unclosed\n").first?.key == "(syntax)")
        #expect(throws: ConfigErrors.self) { try ConfigLoader.load(path: "/nonexistent/kioskd.yaml", environment: [:]) }
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/kioskd.yaml", environment: [:])
        } catch {
            #expect(error.description.contains("cannot read the config file: No such file or directory"))
        }
    }

    @Test func aFullProgramEntryIsParsed() throws {
        let config = try load("""
            programs:
              - name: web-1
                command: ["/bin/sleep", "infinity"]
                restart: transient
                shutdown: brutal_kill
                significant: true
                ready: {tcp: "127.0.0.1:5900", banner: "RFB 003.008"}
                ready_timeout: 3s
                user: nobody
                group: nogroup
                environment: {LANG: C.UTF-8}
                working_directory: /tmp
                nofile: 8192
              - name: x
                command: ["/bin/true"]
                ready: {notify_fd: 3}
            """)
        var expected = Config.Program(name: "web-1", command: ["/bin/sleep", "infinity"])
        expected.restart = .transient
        expected.shutdown = .brutalKill
        expected.significant = true
        expected.ready = .tcp(HostPort(host: "127.0.0.1", port: 5900), banner: "RFB 003.008")
        expected.readyTimeout = .seconds(3)
        expected.user = "nobody"
        expected.group = "nogroup"
        expected.environment = ["LANG": "C.UTF-8"]
        expected.workingDirectory = "/tmp"
        expected.nofile = 8192
        #expect(config.programs.first == expected)
        #expect(config.programs.last?.ready == .notifyFD(3))
        let spec = try ProgramSpecs.supervisor(config)
        #expect(spec.autoShutdown == .anySignificant)
        guard case .process(let process) = spec.children[0].kind else { Issue.record("not a process"); return }
        #expect(process.rlimits == [ResourceLimit(.nofile, soft: 8192)])
        #expect(process.credentials?.uid == 65534)
        #expect(process.environment["LANG"] == "C.UTF-8")
        #expect(process.environment["NOTIFY_SOCKET"] == nil)
    }

    @Test(arguments: [
        ("- name: a\n  command: [sleep]\n", "programs[0].command", "absolute path"),
        ("- name: a\n  command: [\"/nonexistent/x\"]\n", "programs[0].command", "is not an executable file"),
        ("- name: a\n", "programs[0].command", "is required"),
        ("- command: [\"/bin/true\"]\n", "programs[0].name", "is required"),
        ("- name: \"a b\"\n  command: [\"/bin/true\"]\n", "programs[0].name", "letters, digits"),
        ("- name: a\n  command: [\"/bin/true\"]\n  restrat: transient\n", "programs[0].restrat", "did you mean restart?"),
        ("- name: a\n  command: [\"/bin/true\"]\n  significant: true\n", "programs[0].significant", "transient or temporary"),
        ("- name: a\n  command: [\"/bin/true\"]\n  user: no-such-user-kioskd\n", "programs[0].user", "no such user"),
        ("- name: a\n  command: [\"/bin/true\"]\n  shutdown: later\n", "programs[0].shutdown", "or brutal_kill"),
        ("- name: a\n  command: [\"/bin/true\"]\n  ready: {file: /x, tcp: \"h:1\"}\n", "programs[0].ready", "exactly one of"),
        ("- name: a\n  command: [\"/bin/true\"]\n  ready: {file: /x, banner: hi}\n", "programs[0].ready", "banner: goes only with tcp"),
        ("- name: a\n  command: [\"/bin/true\"]\n  ready: {http: \"127.0.0.1:80\"}\n", "programs[0].ready", "http://host:port/path"),
        ("- name: a\n  command: [\"/bin/true\"]\n  ready: {notify_fd: 1}\n", "programs[0].ready", "3–255"),
        ("- name: a\n  command: [\"/bin/true\"]\n- name: a\n  command: [\"/bin/true\"]\n", "programs[1].name", "used by an earlier program"),
        ("{name: a}\n", "programs", "must be a list"),
    ])
    func aBadProgramNamesTheEntryAndField(yaml: String, key: String, message: String) throws {
        let indented = yaml.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n")
        let found = try issues("programs:\n" + indented)
        #expect(found.contains { $0.key == key && $0.message.contains(message) }, "\(found)")
    }

    @Test func theDeprecatedTabKeyStillWorksAndIsWarnedAbout() throws {
        #expect(Config().sessions.tabs == .agent, "the agent's own tabs live by default")
        for (value, tabs) in [("true", TabPolicy.kioskOnly), ("false", .agent)] {
            let config = try load("sessions:\n  lockdown:\n    close_extra_tabs: \(value)\n")
            #expect(config.sessions.tabs == tabs)
            #expect(ConfigWarning.check(config).map(\.key) == ["sessions.lockdown.close_extra_tabs"])
            #expect(ConfigWarning.check(config).first?.message.contains("sessions.lockdown.tabs") == true)
        }
        let fromEnvironment = try load("", env: ["KIOSKD_SESSIONS_LOCKDOWN_CLOSE_EXTRA_TABS": "true"])
        #expect(fromEnvironment.sessions.tabs == .kioskOnly)
        #expect(try issues("sessions:\n  lockdown:\n    tabs: everything\n").first?.message.contains("agent, kiosk_only") == true)
    }

    @Test func socketPathsMustFitTheirLimitWhateverTheTaskIds() throws {
        // displays up to 999: "/sessions/d999" and Chromium's TMPDIR socket follow runtime.dir.
        let longest = 107 - "/sessions/d999/tmp/org.chromium.Chromium.XXXXXX/SingletonSocket".utf8.count
        let fits = "/" + String(repeating: "r", count: longest - 1)
        #expect(try issues("runtime:\n  dir: \(fits)\nsessions:\n  displays: 10-999\n").isEmpty)
        let found = try issues("runtime:\n  dir: \(fits)r\nsessions:\n  displays: 10-999\n")
        #expect(found.map(\.key) == ["runtime.dir"], "\(found)")
        #expect(found.first?.message.contains("use at most \(longest) bytes") == true, "\(found)")
        // Five-digit displays take two bytes more.
        #expect(try issues("runtime:\n  dir: \(fits)\nsessions:\n  displays: 10-10999\n").map(\.key) == ["runtime.dir"])
        let socket = "/" + String(repeating: "s", count: 107)
        #expect(try issues("control:\n  socket: \(socket)\n").map(\.key) == ["control.socket"])
    }

    @Test func durationsNeedAUnit() throws {
        #expect(try ConfigSchema.parseDuration("500ms") == .milliseconds(500))
        #expect(try ConfigSchema.parseDuration("5ms") == .milliseconds(5))
        #expect(try ConfigSchema.parseDuration("1.5s") == .milliseconds(1500))
        #expect(try ConfigSchema.parseDuration("2m") == .seconds(120))
        #expect(try ConfigSchema.parseDuration("1h") == .seconds(3600))
        #expect(throws: ValueError.self) { try ConfigSchema.parseDuration("5") }
        #expect(throws: ValueError.self) { try ConfigSchema.parseDuration("-1s") }
        #expect(Duration.milliseconds(1500).rendered == "1500ms")
        #expect(Duration.seconds(120).rendered == "2m")
    }

    /// Found by the bench's fuzzer (Tests/Fuzz/corpus/config/crash-duration-overflow.yaml): a
    /// finite duration past Int64 microseconds trapped the loader, from the file or a variable.
    @Test func aDurationTooLongIsAnIssueNotATrap() throws {
        #expect(try ConfigSchema.parseDuration("36500d") == .seconds(36500 * 86400))
        for text in ["9.3e12s", "1e300ms", "99999999999999999999d", "36501d"] {
            #expect(try issues("tasks:\n  retention: \(text)\n").map(\.message) == ["must be at most 36500d, got \"\(text)\""])
            #expect(try issues("", env: ["KIOSKD_TASKS_RETENTION": text]).map(\.key) == ["tasks.retention"])
        }
    }

    @Test func sessionPortsAnOutgoingConnectionCanTakeAreWarnedAbout() throws {
        var config = Config()
        let linux = try #require(EphemeralPorts(range: "32768 60999"))
        #expect(ConfigWarning.check(config, ephemeral: linux).isEmpty, "the default 20000-29999 is outside Linux's range")
        config.sessions.ports = 46000...46999
        let warning = try #require(ConfigWarning.check(config, ephemeral: linux).first)
        #expect(warning.key == "sessions.ports" && warning.message.hasPrefix("1000 of these ports are ephemeral"), "\(warning)")
        let reserved = try #require(EphemeralPorts(range: "32768 60999", reserved: "46000-46999"))
        #expect(ConfigWarning.check(config, ephemeral: reserved).isEmpty)
    }

    @Test func aSharedSecretOthersCanReadOrWriteIsWarnedAbout() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let secret = dir + "/idp.secret"
        try writeFile(secret, String(repeating: "s", count: 40))
        chmod(secret, 0o644)
        var config = Config()
        config.publicListener.jwt.hs256SecretFile = secret
        #expect(ConfigWarning.check(config).map(\.key) == ["public.jwt.hs256_secret_file"])
        // The real command says so, and still succeeds: it is a warning, as ssh's.
        let yaml = dir + "/kioskd.yaml"
        try writeFile(yaml, "public:\n  jwt:\n    hs256_secret_file: \(secret)\n    issuer: https://idp.example\n    audience: app\n")
        let output = dir + "/check.out"
        #expect(try await runToExit(try builtProduct("kioskd"), ["config", "check", "--config", yaml], environment: ["PATH": "/usr/bin:/bin"],
                                    output: output) == 0)
        let said = try readText(output)
        #expect(said.contains("warning: public.jwt.hs256_secret_file: \(secret) is readable by every user (mode 0644)") && said.contains("configuration OK"),
                "\(said)")
        chmod(secret, 0o620)
        #expect(ConfigWarning.check(config).first?.message.contains("writable by others") == true)
        chmod(secret, 0o600)
        #expect(ConfigWarning.check(config).isEmpty)
        chmod(secret, 0o640)
        #expect(ConfigWarning.check(config).isEmpty, "a group that may read it is the owner's choice")
    }

    @Test func passwordsInTheStoreURLAreRedacted() {
        #expect(redactedStore("postgres://kioskd:s3cret@db:5432/kioskd") == "postgres://kioskd:***@db:5432/kioskd")
        #expect(redactedStore("postgres://kioskd@db/kioskd") == "postgres://kioskd@db/kioskd")
        #expect(redactedStore("sqlite:///var/lib/kioskd/kioskd.sqlite") == "sqlite:///var/lib/kioskd/kioskd.sqlite")
    }
}

func writeFile(_ path: String, _ text: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw TestFailure("cannot write \(path): errno \(errno)") }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count else { throw TestFailure("short write to \(path)") }
}

#if canImport(Glibc)
import Glibc
#endif
