import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Supervision
import Testing
@testable import KioskdDaemon

#if canImport(Glibc)
import Glibc
#endif

/// `kioskd serve` end to end: the real binary, a real notify socket, real children.
@Suite("kioskd serve")
struct ServeTests {
    let kioskd: String
    let child: String
    let dir: String
    /// Every child of this test carries it in its environment, so /proc tells what is left.
    let marker: String

    init() throws {
        kioskd = try builtProduct("kioskd")
        child = try builtProduct("kioskd-testchild")
        dir = try makeTempDir("kioskd-serve")
        marker = "KIOSKD_TEST_RUN=\(dir)"
    }

    func config(_ programs: String, extra: String = "supervisor:\n  backoff:\n    initial: 20ms") throws -> String {
        let path = dir + "/kioskd.yaml"
        try writeFile(path, testDaemonConfig(dir: dir, port: try freePort(), """
            shutdown:
              timeout: 10s
            \(extra)
            programs:
            \(programs)
            """))
        return path
    }

    func program(_ name: String, _ args: [String], ready: String? = nil, extra: String = "") -> String {
        let command = ([child] + args).map { "\"\($0)\"" }.joined(separator: ", ")
        return """
              - name: \(name)
                command: [\(command)]
                environment: {KIOSKD_TEST_RUN: "\(dir)"}
            \(ready.map { "    ready: \($0)" } ?? "")
            \(extra)
            """
    }

    func start(_ configPath: String, notify: NotifyListener? = nil, environment: [String: String] = [:]) throws -> DaemonProcess {
        var env = ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"]
        if let notify { env["NOTIFY_SOCKET"] = notify.path }
        env.merge(environment) { _, new in new }
        return try DaemonProcess(executable: kioskd, arguments: ["serve", "--config", configPath], environment: env, directory: dir)
    }

    @Test func readyRestartsAKilledChildPingsTheWatchdogAndStopsCleanlyOnSIGTERM() async throws {
        defer { removeTree(dir) }
        let notify = try NotifyListener(path: dir + "/notify.sock")
        defer { notify.close() }
        let path = try config(
            program("web", ["--print", "web up"], ready: "{log_line: \"web up\"}")
            + "\n" + program("helper", ["--grandchild", dir + "/grandchild.pid"], ready: "{file: \"\(dir)/grandchild.pid\"}"))
        let daemon = try start(path, notify: notify, environment: ["WATCHDOG_USEC": "200000"])

        try await notify.wait(for: "READY=1") { $0.hasPrefix("READY=1") && $0.contains("STATUS=2/2 programs running") }
        try await notify.wait(for: "a watchdog ping") { $0 == "WATCHDOG=1" }
        let before = processesWithEnvironment(containing: marker)
        #expect(before.count == 3, "web, helper and its setsid grandchild")
        let web = try #require(before.first { (try? readText("/proc/\($0)/cmdline"))?.contains("web up") == true })

        let mark = notify.received.count
        kill(web, SIGKILL)
        try await notify.wait(for: "web noticed down", after: mark) { $0.contains("STATUS=1/2 programs running") }
        try await notify.wait(for: "web back", after: mark) { $0.contains("STATUS=2/2 programs running") }
        let after = processesWithEnvironment(containing: marker)
        #expect(after.count == 3 && !after.contains(web))

        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0, "stderr: \(daemon.stderr)")
        try await notify.wait(for: "STOPPING=1") { $0.hasPrefix("STOPPING=1") }
        #expect(processesWithEnvironment(containing: marker).isEmpty, "no child, grandchild or orphan of the daemon is left")
        #expect(daemon.stderr.contains("kioskd/programs/web: killed by signal 9 (SIGKILL), will restart"))
    }

    @Test func orphansOfChildrenAreReapedNotLeftAsZombies() async throws {
        defer { removeTree(dir) }
        let notify = try NotifyListener(path: dir + "/notify.sock")
        defer { notify.close() }
        let path = try config(program("parent", ["--orphan", "--print", "orphan left"], ready: "{log_line: \"orphan left\"}"))
        let daemon = try start(path, notify: notify, environment: ["KIOSKD_LOG_LEVEL": "debug"])
        try await notify.wait(for: "READY=1") { $0.hasPrefix("READY=1") }
        // The grandchild outlives its parent by 50 ms, so it dies as the daemon's orphan.
        try await daemon.log.wait(for: "the orphan reaped") { $0.contains("reaped orphaned descendant") }
        #expect(zombieChildren(of: daemon.pid).isEmpty)
        #expect(processesWithEnvironment(containing: marker).count == 1, "only the parent program is left")
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0)
    }

    @Test func aBrokenConfigExitsWithEXCONFIGNamingTheKey() async throws {
        defer { removeTree(dir) }
        let path = try config(program("bad", []) + "\n    restart: sometimes", extra: "log:\n  level: chatty")
        let daemon = try start(path)
        #expect(try await daemon.waitExit() == 78)
        let stderr = daemon.stderr
        #expect(stderr.contains("programs[0].restart: must be one of permanent, transient, temporary, got \"sometimes\""), "\(stderr)")
        #expect(stderr.contains("log.level: must be one of"), "\(stderr)")
    }

    @Test func anUnknownEnvironmentVariableIsAConfigError() async throws {
        defer { removeTree(dir) }
        let daemon = try start(try config("  []"), environment: ["KIOSKD_CONTROL_SOCKT": "/x"])
        #expect(try await daemon.waitExit() == 78)
        #expect(daemon.stderr.contains("KIOSKD_CONTROL_SOCKT: unknown variable (did you mean KIOSKD_CONTROL_SOCKET?)"))
    }

    @Test func aProgramThatNeverBecomesReadyFailsTheStartWithTheReason() async throws {
        defer { removeTree(dir) }
        let path = try config(program("first", []) + "\n" + program("stuck", [], ready: "{file: \"\(dir)/never\"}", extra: "    ready_timeout: 300ms"))
        let daemon = try start(path)
        #expect(try await daemon.waitExit() == 1)
        #expect(daemon.stderr.contains("'stuck' failed to start: not ready within 300 ms (waiting for file \(dir)/never to appear)"), "\(daemon.stderr)")
        #expect(processesWithEnvironment(containing: marker).isEmpty)
    }

    @Test func aCrashLoopExhaustsTheBudgetsAndTheDaemonExitsNonZero() async throws {
        defer { removeTree(dir) }
        let path = try config(program("looping", ["--sleep-ms", "20", "--exit", "9"]), extra: "supervisor:\n  max_restarts: 2\n  backoff:\n    initial: 10ms")
        let daemon = try start(path)
        #expect(try await daemon.waitExit() == 1)
        let stderr = daemon.stderr
        #expect(stderr.contains("kioskd/programs: gave up: restart intensity exceeded: more than 2 restarts in 60 s (last: 'looping')"), "\(stderr)")
        #expect(stderr.contains("the root supervisor gave up"), "\(stderr)")
        #expect(processesWithEnvironment(containing: marker).isEmpty)
    }

    @Test func aSignificantProgramEndingStopsTheDaemonWithExitZero() async throws {
        defer { removeTree(dir) }
        let path = try config(
            program("job", ["--sleep-ms", "100", "--exit", "0"], extra: "    restart: transient\n    significant: true")
            + "\n" + program("sidecar", []))
        let daemon = try start(path)
        #expect(try await daemon.waitExit() == 0, "\(daemon.stderr)")
        #expect(processesWithEnvironment(containing: marker).isEmpty)
    }

    @Test func theDemoSessionBootsAndADaemonKilledWithItsSessionLeavesNothingAfterTheNextStart() async throws {
        defer { removeTree(dir) }
        // Displays and ports of their own: the test process's sessions allocate in parallel.
        let path = try config("  []", extra: """
            sessions:
              displays: 900-949
              ports: 11000-11499
            demo:
              enabled: true
              url: "data:text/html,<title>demo</title>"
            """)
        let sessionMarker = "KIOSKD_SESSION=\(dir)/run/sessions/"
        let first = try start(path)
        try await first.log.wait(for: "the demo task", timeout: .seconds(60)) { $0.contains("demo task running") }
        let line = try #require(first.log.items.first { $0.contains("demo task running") })
        #expect(line.contains("cdp=http://127.0.0.1:110") && !line.contains("token"), "the log names the task and CDP, never the token: \(line)")
        // The terminal gets a viewer link that opens the live kiosk, and the CDP endpoint.
        let printed = try readText(dir + "/kioskd.stdout")
        let link = try #require(printed.split(whereSeparator: \.isWhitespace).first { $0.contains("/viewer?task_id=demo-") }.map(String.init), "\(printed)")
        let listen = try #require(try readText(path).split(separator: "\n").first { $0.contains("listen:") }?.split(separator: " ").last.map(String.init))
        #expect(link.hasPrefix("http://\(listen)/viewer?task_id=demo-") && link.contains("&token="), "\(link)")
        let viewerPath = String(link.dropFirst("http://\(listen)".count))
        try await first.log.wait(for: "the public listener", timeout: .seconds(30)) { $0.contains("kioskd/public: ready") }
        let answer = try await blocking { () -> String in
            let fd = try connectLoopback(port: Int(listen.split(separator: ":").last!)!)
            defer { close(fd) }
            let request = "GET \(viewerPath) HTTP/1.1\r\nHost: \(listen)\r\nConnection: close\r\n\r\n"
            _ = send(fd, request, request.utf8.count, 0)
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : ""
        }
        #expect(answer.hasPrefix("HTTP/1.1 303") && answer.contains("/novnc/vnc.html#path="), "the link opens the viewer: \(answer.prefix(300))")
        #expect(printed.contains("drive it (CDP") && printed.contains("http://127.0.0.1:110"), "\(printed)")
        let old = processesWithEnvironment(containing: sessionMarker)
        #expect(old.count >= 4, "xvfb, openbox, x11vnc, chromium and its helpers")

        // A daemon killed outright cannot stop its session. Its direct children (running as the
        // session user) still get their parent-death signal; the next start sweeps the rest.
        let direct = old.filter { pid in
            let cmd = (try? readText("/proc/\(pid)/cmdline")) ?? ""
            return ["/usr/bin/Xvfb", "/usr/bin/openbox", "/usr/bin/x11vnc"].contains { cmd.hasPrefix($0) } || cmd.contains("chromium\u{0}--kiosk")
        }
        #expect(direct.count >= 4, "xvfb, openbox, x11vnc, chromium")
        first.signal(SIGKILL)
        _ = try await first.waitExit()
        try await waitExited(direct)
        let second = try start(path)
        try await second.log.wait(for: "the sweep", timeout: .seconds(60)) { $0.contains("removed leftovers of an earlier run") }
        try await second.log.wait(for: "the new demo task", timeout: .seconds(60)) { $0.contains("demo task running") }
        for pid in old { #expect(!isAlive(pid), "a process of the killed daemon's session survived: \(pid)") }

        second.signal(SIGTERM)
        #expect(try await second.waitExit() == 0, "\(second.stderr)")
        #expect(processesWithEnvironment(containing: sessionMarker).isEmpty, "the session stopped with the daemon")
        #expect(directoryEntries(dir + "/run/sessions").isEmpty, "no session directory left")
    }

    /// The tests' venv Python (scripts/setup.sh --tests installs httpx and playwright there) and
    /// a daemon whose sessions use `displays` and `ports`, its control socket serving.
    func pythonAndDaemon(displays: String, ports: String) async throws -> (python: String, daemon: DaemonProcess) {
        let python = repositoryRoot + "/.build/venv/bin/python3"
        guard access(python, X_OK) == 0 else { throw TestFailure("no \(python): run scripts/setup.sh --tests (it installs httpx and playwright from PyPI there)") }
        let daemon = try start(try config("  []", extra: "sessions:\n  displays: \(displays)\n  ports: \(ports)\n"))
        try await daemon.log.wait(for: "the control socket", timeout: .seconds(60)) { $0.contains("kioskd/control: ready") }
        return (python, daemon)
    }

    @Test func thePythonExampleDrivesARealTaskOverTheControlSocket() async throws {
        defer { removeTree(dir) }
        let (python, daemon) = try await pythonAndDaemon(displays: "850-899", ports: "11500-11999")
        let output = dir + "/example.out"
        let status = try await runToExit(python, [repositoryRoot + "/clients/python/examples/walkthrough.py", "--socket", dir + "/run/control.sock",
                                                  "--url", "data:text/html,<title>py</title>python"],
                                         environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"], timeout: .seconds(90), output: output)
        #expect(status == 0, "\((try? readText(output)) ?? "")")
        #expect((try? readText(output))?.contains("ok   the task is cancelled") == true)

        // The CLI reads the same socket.
        let cli = ["PATH": "/usr/bin:/bin", "KIOSKD_SOCKET": dir + "/run/control.sock"]
        #expect(try await runToExit(kioskd, ["task", "list", "--state", "cancelled"], environment: cli, output: output) == 0)
        #expect((try? readText(output))?.contains("cancelled") == true && (try? readText(output))?.contains("py-") == true, "\((try? readText(output)) ?? "")")
        #expect(try await runToExit(kioskd, ["task", "get", "nope"], environment: cli, output: output) == 1)
        #expect((try? readText(output))?.contains("no task with id 'nope' (task_not_found, HTTP 404)") == true, "\((try? readText(output)) ?? "")")
        let metrics = try await ControlClient(socketPath: dir + "/run/control.sock").request(.GET, "/metrics")
        #expect(metrics.status == 200 && metrics.text.contains("kioskd_tasks_created_total 1"), "\(metrics.text.prefix(500))")
        #expect(metrics.text.contains(#"kioskd_tasks_finished_total{state="cancelled"} 1"#))
        #expect(try await runToExit(kioskd, ["status", "--json"], environment: cli, output: output) == 0)
        #expect((try? readText(output))?.contains(#""store":"sqlite""#) == true)
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0, "\(daemon.stderr)")
    }

    /// The agent library the seed's product uses, over CDP with the default lockdown: its pages
    /// live, the page's popup is seen then closed, and it reconnects after Chromium is killed.
    @Test func playwrightDrivesATaskWithTheDefaultLockdown() async throws {
        defer { removeTree(dir) }
        let (python, daemon) = try await pythonAndDaemon(displays: "950-969", ports: "12000-12499")
        let output = dir + "/agent.out"
        let status = try await runToExit(python, [repositoryRoot + "/Tests/KioskdDaemonTests/playwright_agent.py", dir + "/run/control.sock"],
                                         environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": dir], timeout: .seconds(180), output: output)
        let printed = (try? readText(output)) ?? ""
        #expect(status == 0, "\(printed)")
        for step in ["goto, fill, click", "screenshot", "expect_popup sees the page's popup", "new_page survives",
                     "disconnect leaves the kiosk running; Chromium killed and back", "reconnect after kill -9 of Chromium"] {
            #expect(printed.contains("ok \(step)"), "\(step): \(printed)")
        }
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0, "\(daemon.stderr)")
    }

    @Test func onPostgreSQLARunningTaskIsInterruptedByARestartAndItsSessionSwept() async throws {
        defer { removeTree(dir) }
        let url = try await PostgresFixture.shared.value.createDatabase("serve_\(UInt32.random(in: 0...UInt32.max))")
        let path = try config("  []", extra: """
            store:
              url: "\(url)"
            sessions:
              displays: 800-849
              ports: 12500-12999
            """)
        let socket = dir + "/run/control.sock"
        let first = try start(path)
        try await first.log.wait(for: "the control socket", timeout: .seconds(60)) { $0.contains("kioskd/control: ready") && $0.contains("store postgres") }
        let client = ControlClient(socketPath: socket)
        let created = try await client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"pg1","url":"data:text/html,<title>pg</title>pg"}"#)
        let task = try JSONDecoder().decode(JSONValue.self, from: Data(created.body))
        #expect(created.status == 201 && task["state"]?.string == "running", "\(created.text)")
        // Session directories are named by display: this daemon's only session is the task's.
        let sessionMarker = "KIOSKD_SESSION=\(dir)/run/sessions/"
        let old = processesWithEnvironment(containing: sessionMarker)
        #expect(old.count >= 4, "the task's session runs")

        first.signal(SIGKILL)
        _ = try await first.waitExit()
        let second = try start(path)
        try await second.log.wait(for: "the control socket", timeout: .seconds(60)) { $0.contains("kioskd/control: ready") && $0.contains("1 interrupted") }
        let after = try JSONDecoder().decode(JSONValue.self, from: Data(try await client.request(.GET, "/v1/tasks/pg1").body))
        #expect(after["state"]?.string == "interrupted")
        let events = try JSONDecoder().decode(JSONValue.self, from: Data(try await client.request(.GET, "/v1/tasks/pg1/events").body)).array ?? []
        #expect(events.last?["data"]?["to"]?.string == "interrupted")
        #expect(events.map { $0["seq"]?.number ?? 0 } == (1...events.count).map(Double.init), "no gaps across the restart")
        for pid in old { #expect(!isAlive(pid), "a process of the interrupted task's session survived: \(pid)") }
        second.signal(SIGTERM)
        #expect(try await second.waitExit() == 0, "\(second.stderr)")
    }
}
