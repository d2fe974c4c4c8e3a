import Essentials
import KioskdTestSupport
import Logging
import Testing
@testable import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Real processes under real supervisors: kioskd-testchild misbehaves on command.
@Suite("Supervising processes")
struct ProcessSupervisionTests {
    let child: String
    let bus = EventBus()
    let recorder: EventRecorder
    let logger = Logger(label: "test")

    init() throws {
        child = try builtProduct("kioskd-testchild")
        recorder = EventRecorder(bus)
    }

    func spec(_ id: String, _ args: [String] = [], restart: RestartType = .permanent, shutdown: Shutdown? = nil,
              readiness: ReadinessProbe? = nil, readyTimeout: Duration = .seconds(10), notifyFD: Int32? = nil,
              environment: [String: String] = ProcessSpec.scrubbed(), credentials: Credentials? = nil,
              rlimits: [ResourceLimit] = [], significant: Bool = false) -> ChildSpec {
        ChildSpec(id: id, kind: .process(ProcessSpec(executable: child, arguments: args, environment: environment,
                                                     credentials: credentials, rlimits: rlimits, notifyFD: notifyFD)),
                  restart: restart, shutdown: shutdown, significant: significant, readiness: readiness, readyTimeout: readyTimeout)
    }

    func supervisor(_ strategy: Strategy, _ children: [ChildSpec], intensity: Intensity = .init(maxRestarts: 5, period: .seconds(60)),
                    backoff: Backoff = Backoff(initial: .milliseconds(50), multiplier: 2, maximum: .seconds(1)),
                    autoShutdown: AutoShutdown = .never, name: String = "test") throws -> Supervisor {
        try Supervisor(name: name, spec: SupervisorSpec(strategy: strategy, intensity: intensity, backoff: backoff,
                                                       autoShutdown: autoShutdown, children: children),
                       events: bus, logger: logger)
    }

    /// Runs `sup` in the background; returns the task that yields its outcome.
    func launch(_ sup: Supervisor) -> Task<SupervisorStateMachine.Outcome, Never> {
        // A handle, not a scope: each test checks the outcome, awaited by `stopAndWait` or `run.value`.
        Task { await sup.run() }
    }

    func pid(of id: String, after: Int = 0) async throws -> Int32 {
        let event = try await recorder.wait(for: "\(id) spawned", after: after) {
            if case .spawned(id, _) = $0.kind { true } else { false }
        }
        guard case .spawned(_, let pid) = event.kind else { throw TestFailure("unreachable") }
        return pid
    }

    func ready(_ id: String, after: Int = 0) async throws -> String {
        let event = try await recorder.wait(for: "\(id) ready", after: after) {
            if case .ready(id, _) = $0.kind { true } else { false }
        }
        guard case .ready(_, let detail) = event.kind else { throw TestFailure("unreachable") }
        return detail
    }

    func stopAndWait(_ sup: Supervisor, _ run: Task<SupervisorStateMachine.Outcome, Never>) async -> SupervisorStateMachine.Outcome {
        sup.shutdown()
        return await run.value
    }

    // MARK: - Restarts

    @Test func aKilledChildIsRestartedAtOnceThenWithBackoff() async throws {
        let sup = try supervisor(.oneForOne, [spec("a")])
        let run = launch(sup)
        try await sup.waitReady()
        let first = try await pid(of: "a")

        var mark = recorder.count
        kill(first, SIGKILL)
        try await recorder.wait(for: "exit seen", after: mark) { $0.kind == .exited(child: "a", reason: .signaled(SIGKILL), willRestart: true) }
        try await recorder.wait(for: "immediate restart", after: mark) { $0.kind == .restarting(children: ["a"], after: .zero) }
        let second = try await pid(of: "a", after: mark)
        _ = try await ready("a", after: mark)
        #expect(second != first)
        #expect(!isAlive(first))

        mark = recorder.count
        kill(second, SIGKILL)
        let restarting = try await recorder.wait(for: "backed-off restart", after: mark) {
            if case .restarting = $0.kind { true } else { false }
        }
        guard case .restarting(_, let delay) = restarting.kind else { return }
        #expect(delay >= .milliseconds(37) && delay <= .milliseconds(63), "second consecutive failure waits 50 ms ± 25 %, got \(delay)")
        let third = try await pid(of: "a", after: mark)
        #expect(third != second)
        #expect(await stopAndWait(sup, run) == .normal("stop requested"))
        #expect(!isAlive(third))
    }

    @Test func exceedingTheIntensityEscalatesThroughTheTree() async throws {
        // The inner supervisor allows 1 restart; its child exits right after starting.
        let inner = SupervisorSpec(strategy: .oneForOne, intensity: .init(maxRestarts: 1, period: .seconds(60)), backoff: .none,
                                   children: [spec("flaky", ["--sleep-ms", "20", "--exit", "7"])])
        let root = try supervisor(.oneForOne, [ChildSpec(id: "inner", kind: .supervisor(inner))],
                                  intensity: .init(maxRestarts: 0, period: .seconds(60)), name: "root")
        let outcome = await root.run()
        guard case .gaveUp(let why) = outcome else {
            Issue.record("root should give up, got \(outcome)")
            return
        }
        #expect(why.contains("'inner'"))
        let innerGaveUp = recorder.events.contains { $0.path == ["root", "inner"] && { if case .gaveUp = $0.kind { true } else { false } }($0) }
        #expect(innerGaveUp, "the inner supervisor gave up first")
        let exits = recorder.events.filter { $0.kind == .exited(child: "flaky", reason: .exited(7), willRestart: true) }
        #expect(exits.count == 1, "one restart allowed, the second exit gives up")
    }

    @Test func restForOneRestartsExactlyTheLaterSiblingsInOrder() async throws {
        let sup = try supervisor(.restForOne, [spec("x"), spec("wm"), spec("vnc"), spec("browser")])
        let run = launch(sup)
        try await sup.waitReady()
        // The bus delivers to the recorder after waitReady returns: the start's last ready is seen before the mark.
        _ = try await ready("browser")
        let before = try await withThrowingTaskGroup(of: (String, Int32).self) { g in
            for id in ["x", "wm", "vnc", "browser"] { g.addTask { (id, try await pid(of: id)) } }
            return try await g.reduce(into: [String: Int32]()) { $0[$1.0] = $1.1 }
        }
        let mark = recorder.count
        kill(before["wm"]!, SIGKILL)
        _ = try await ready("browser", after: mark)
        let order = recorder.events.dropFirst(mark).compactMap { e -> String? in
            switch e.kind {
            case .stopping(let c): "stop \(c)"
            case .starting(let c, _): "start \(c)"
            default: nil
            }
        }
        #expect(order == ["stop browser", "stop vnc", "start wm", "start vnc", "start browser"])
        #expect(isAlive(before["x"]!), "x is before the failed child and keeps running")
        for id in ["vnc", "browser"] { #expect(!isAlive(before[id]!), "\(id) was restarted") }
        _ = await stopAndWait(sup, run)
    }

    @Test func oneForAllRestartsEverySibling() async throws {
        let sup = try supervisor(.oneForAll, [spec("a"), spec("b"), spec("c")])
        let run = launch(sup)
        try await sup.waitReady()
        // The bus delivers to the recorder after waitReady returns: the start's last ready is seen before the mark.
        _ = try await ready("c")
        let a = try await pid(of: "a"), b = try await pid(of: "b"), c = try await pid(of: "c")
        let mark = recorder.count
        kill(b, SIGKILL)
        _ = try await ready("c", after: mark)
        let snapshot = await sup.snapshot()
        let pids = Set(snapshot.children!.compactMap(\.pid))
        #expect(pids.count == 3 && pids.isDisjoint(with: [a, b, c]))
        #expect(!isAlive(a) && !isAlive(c))
        _ = await stopAndWait(sup, run)
    }

    @Test func aServersClientsDyingWithItAreItsOneRestartUntilTheBudgetIsSpent() async throws {
        // x is a server and a, b its clients, which exit as soon as it dies, as X clients do when
        // Xvfb is killed. x's escaped grandchild ignores SIGTERM, so x's exit is reported only
        // once that leftover is killed, a second later: the clients' exits always come first.
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let port = try freePort()
        let x = spec("x", ["--grandchild", dir + "/grandchild.pid", "--hold", "\(port)"], readiness: .tcp(host: "127.0.0.1", port: port))
        let client = { (id: String) in spec(id, ["--follow", "\(port)"], readiness: .logLine(contains: "following")) }
        let sup = try supervisor(.restForOne, [x, client("a"), client("b")], intensity: .init(maxRestarts: 2, period: .seconds(60)))
        let run = launch(sup)
        try await sup.waitReady()
        // The bus delivers to the recorder after waitReady returns: the start's last ready is seen before the mark.
        _ = try await ready("b")
        var server = try await pid(of: "x")

        // Two kills in a budget of two: each is one restart, however many exits it causes.
        for _ in 1...2 {
            let mark = recorder.count
            kill(server, SIGKILL)
            _ = try await ready("b", after: mark)
            let exits = recorder.events.dropFirst(mark).compactMap { e -> String? in
                if case .exited(let child, _, _) = e.kind { child } else { nil }
            }
            #expect(exits.first != "x" && exits.last == "x", "a client's exit came first, the server's last: \(exits)")
            server = try await pid(of: "x", after: mark)
        }
        let gaveUp = recorder.events.contains { if case .gaveUp = $0.kind { true } else { false } }
        #expect(!gaveUp)

        // The third spends it, and the reason names the server.
        kill(server, SIGKILL)
        guard case .gaveUp(let why) = await run.value else {
            Issue.record("expected to give up")
            return
        }
        #expect(why.hasSuffix("(last: 'x')"), "\(why)")
    }

    @Test func restartTypesDecideWhatComesBack() async throws {
        let sup = try supervisor(.oneForOne, [
            spec("perm", ["--sleep-ms", "30", "--exit", "0"]),
            spec("trans-ok", ["--sleep-ms", "30", "--exit", "0"], restart: .transient),
            spec("trans-bad", ["--exit-if-exists", "/", "3"], restart: .transient),
            spec("temp", ["--sleep-ms", "30", "--exit", "1"], restart: .temporary),
        ], intensity: .init(maxRestarts: 100, period: .seconds(60)))
        let run = launch(sup)
        try await recorder.wait(for: "perm restarted") { $0.kind == .exited(child: "perm", reason: .exited(0), willRestart: true) }
        try await recorder.wait(for: "trans-ok not restarted") { $0.kind == .exited(child: "trans-ok", reason: .exited(0), willRestart: false) }
        try await recorder.wait(for: "trans-bad restarted") { $0.kind == .exited(child: "trans-bad", reason: .exited(3), willRestart: true) }
        try await recorder.wait(for: "temp not restarted") { $0.kind == .exited(child: "temp", reason: .exited(1), willRestart: false) }
        let snapshot = await sup.snapshot()
        let ids = snapshot.children!.map(\.id)
        #expect(!ids.contains("temp"), "temporary children are forgotten")
        #expect(snapshot.children!.first { $0.id == "trans-ok" }?.status == "terminated")
        _ = await stopAndWait(sup, run)
    }

    @Test func aSignificantChildEndsItsSupervisor() async throws {
        let sup = try supervisor(.oneForOne, [spec("helper"), spec("main", ["--sleep-ms", "50", "--exit", "0"], restart: .transient, significant: true)],
                                 autoShutdown: .anySignificant)
        let outcome = await sup.run()
        #expect(outcome == .normal("significant child 'main' ended"))
        let helper = try await pid(of: "helper")
        #expect(!isAlive(helper))
    }

    // MARK: - Readiness

    @Test func aChildThatNeverBecomesReadyFailsTheStartAndItsSiblingsStop() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let sup = try supervisor(.oneForOne, [
            spec("first"),
            spec("never", readiness: .file(path: dir + "/never"), readyTimeout: .milliseconds(300)),
            spec("third"),
        ])
        let outcome = await sup.run()
        guard case .failedToStart(let child, let reason) = outcome else {
            Issue.record("expected failedToStart, got \(outcome)")
            return
        }
        #expect(child == "never")
        #expect(reason.contains("not ready within 300 ms (waiting for file \(dir)/never to appear)"))
        let first = try await pid(of: "first"), never = try await pid(of: "never")
        #expect(!isAlive(first) && !isAlive(never))
        #expect(!recorder.events.contains { if case .starting("third", _) = $0.kind { true } else { false } })
        await #expect(throws: SupervisionError.failedToStart(child: "never", reason: reason)) { try await sup.waitReady() }
    }

    @Test func aChildThatExitsBeforeReadyFailsWithItsStatusAndLastOutput() async throws {
        let sup = try supervisor(.oneForOne, [spec("dies", ["--stderr", "cannot open display :99", "--exit", "3"], readiness: .file(path: "/nonexistent/x"))])
        let outcome = await sup.run()
        guard case .failedToStart(_, let reason) = outcome else {
            Issue.record("expected failedToStart, got \(outcome)")
            return
        }
        #expect(reason.contains("exited before it was ready: exited with status 3"))
        #expect(reason.contains("cannot open display :99"))
    }

    @Test func aMissingExecutableFailsWithTheOSError() async throws {
        let sup = try supervisor(.oneForOne, [ChildSpec(id: "ghost", kind: .process(ProcessSpec(executable: "/nonexistent/bin/ghost")))])
        let outcome = await sup.run()
        #expect(outcome == .failedToStart(child: "ghost", reason: "cannot exec for /nonexistent/bin/ghost: No such file or directory"))
    }

    @Test func probesPassOnTheRealSignal() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let port = try freePort()
        let httpPort = try freePort()
        let python = try systemProgram("/usr/bin/python3", package: "python3")
        let sup = try supervisor(.oneForOne, [
            spec("fd", ["--sleep-ms", "20", "--notify", "3", "99"], readiness: .notifyFD, notifyFD: 3),
            spec("file", ["--sleep-ms", "20", "--touch", dir + "/up"], readiness: .file(path: dir + "/up")),
            spec("log", ["--sleep-ms", "20", "--print", "server listening on :5900"], readiness: .logLine(contains: "listening on")),
            spec("banner", ["--sleep-ms", "20", "--listen", "\(port)", "RFB 003.008\n"], readiness: .tcp(host: "127.0.0.1", port: port, banner: "RFB 003.008")),
            ChildSpec(id: "http", kind: .process(ProcessSpec(executable: python, arguments: ["-m", "http.server", "\(httpPort)", "--bind", "127.0.0.1", "--directory", dir])),
                      readiness: .http(host: "127.0.0.1", port: httpPort, path: "/")),
        ])
        let run = launch(sup)
        try await sup.waitReady()
        #expect(try await ready("fd") == "99")
        #expect(try await ready("log") == "server listening on :5900")
        #expect(try await ready("banner") == "RFB 003.008")
        #expect(try await ready("http").hasPrefix("HTTP/1.0 200"))
        _ = await stopAndWait(sup, run)
    }

    /// A server that greets only once its client has spoken (libvncserver makes a silent client
    /// wait 100 ms), and sends what follows the greeting (RFB's security types) at once: the
    /// probe's `hello` gets the greeting's line; without it the probe never gets anything.
    @Test func aUnixSocketProbeSpeaksFirstWhenToldTo() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let python = try systemProgram("/usr/bin/python3", package: "python3")
        let server = """
            import socket, sys
            s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)
            while True:
                c, _ = s.accept()
                if c.recv(64).startswith(b"RFB 003.008"): c.sendall(b"RFB 003.008\\n\\x01\\x01")
                c.close()
            """
        func greeter(_ id: String, hello: String?) -> ChildSpec {
            ChildSpec(id: id, kind: .process(ProcessSpec(executable: python, arguments: ["-c", server, dir + "/\(id).sock"])),
                      readiness: .unixSocket(path: dir + "/\(id).sock", banner: "RFB 003.008", hello: hello), readyTimeout: .seconds(3))
        }
        let spoken = try supervisor(.oneForOne, [greeter("spoken", hello: "RFB 003.008\n")])
        let run = launch(spoken)
        try await spoken.waitReady()
        #expect(try await ready("spoken") == "RFB 003.008")
        _ = await stopAndWait(spoken, run)

        let silent = try supervisor(.oneForOne, [greeter("silent", hello: nil)], name: "silent")
        guard case .failedToStart(_, let reason) = await silent.run() else {
            Issue.record("a silent probe must not get this server's greeting")
            return
        }
        #expect(reason.contains("not ready within 3 s"), "\(reason)")
    }

    @Test func aFileLeftByThePreviousIncarnationDoesNotMakeTheNextOneReady() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let (mark, file) = (dir + "/second-run", dir + "/ready")
        let sup = try supervisor(.oneForOne, [spec("once", ["--touch-unless", mark, file], readiness: .file(path: file), readyTimeout: .milliseconds(300))],
                                 intensity: .init(maxRestarts: 1, period: .seconds(60)))
        let run = launch(sup)
        try await sup.waitReady()
        let first = try await pid(of: "once")
        let mark0 = recorder.count
        creat(mark, 0o644)  // from now on the child does not touch the file
        kill(first, SIGKILL)
        try await recorder.wait(for: "the restart to fail its readiness", after: mark0) {
            if case .startFailed("once", _) = $0.kind { true } else { false }
        }
        let outcome = await run.value
        guard case .gaveUp = outcome else { Issue.record("expected the restart to fail, got \(outcome)"); return }
        #expect(recorder.events.dropFirst(mark0).contains { e in
            if case .startFailed("once", let why) = e.kind { return why.contains("not ready within 300 ms") }
            return false
        }, "the stale file must not count as ready")
    }

    @Test func aWrongBannerIsADefiniteFailure() async throws {
        let port = try freePort()
        let sup = try supervisor(.oneForOne, [spec("imposter", ["--listen", "\(port)", "SSH-2.0-OpenSSH\n"], readiness: .tcp(host: "127.0.0.1", port: port, banner: "RFB 003.008"))])
        let outcome = await sup.run()
        guard case .failedToStart(_, let reason) = outcome else {
            Issue.record("expected failedToStart, got \(outcome)")
            return
        }
        #expect(reason.contains("expected a greeting starting with \"RFB 003.008\", got \"SSH-2.0-OpenSSH"))
    }

    // MARK: - Stopping without leftovers

    @Test func aChildIgnoringSIGTERMIsKilledAfterItsGrace() async throws {
        let sup = try supervisor(.oneForOne, [spec("stubborn", ["--ignore-term", "--print", "armed"], shutdown: .timeout(.milliseconds(200)), readiness: .logLine(contains: "armed"))])
        let run = launch(sup)
        try await sup.waitReady()
        let pid = try await pid(of: "stubborn")
        _ = await stopAndWait(sup, run)
        try await recorder.wait(for: "stopped by SIGKILL") { $0.kind == .stopped(child: "stubborn", reason: .signaled(SIGKILL)) }
        #expect(!isAlive(pid))
    }

    @Test func noProcessOfTheTreeSurvivesEvenASetsidGrandchild() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let marker = "KIOSKD_TEST_MARK=\(dir)"
        var env = ProcessSpec.scrubbed()
        env["KIOSKD_TEST_MARK"] = dir
        let pidfile = dir + "/grandchild.pid"
        let sup = try supervisor(.oneForOne, [spec("parent", ["--grandchild", pidfile], readiness: .file(path: pidfile), environment: env)])
        let run = launch(sup)
        try await sup.waitReady()
        // The bus delivers to the recorder after waitReady returns: the start's last ready is seen before the mark.
        _ = try await ready("parent")
        let first = Int32(try readText(pidfile).trimmingCharacters(in: "\n"))!
        #expect(isAlive(first))
        #expect(ProcessTree.readStat(first)!.session == first, "the grandchild left the child's session")

        // The leader dies by itself: its escaped grandchild goes before the restart.
        let mark = recorder.count
        unlink(pidfile)
        kill(try await pid(of: "parent"), SIGKILL)
        _ = try await ready("parent", after: mark)
        #expect(!isAlive(first), "leftovers of the crashed incarnation are gone before it is restarted")

        // An orderly stop takes the new grandchild (which ignores SIGTERM) with it.
        let second = Int32(try readText(pidfile).trimmingCharacters(in: "\n"))!
        _ = await stopAndWait(sup, run)
        #expect(!isAlive(second))
        #expect(processesWithEnvironment(containing: marker).isEmpty, "/proc shows nothing of the tree")
    }

    @Test func aChildFlooding100MBNeverBlocksAndTheRingKeepsTheLastLines() async throws {
        var s = spec("flood", ["--flood", "100000000"], readiness: .logLine(contains: "flood done"), readyTimeout: .seconds(120))
        if case .process(var p) = s.kind {
            p.ringLines = 50
            p.logRate = 10
            s.kind = .process(p)
        }
        let sup = try supervisor(.oneForOne, [s])
        let run = launch(sup)
        try await sup.waitReady()
        let lines = await sup.recentOutput(of: "flood") ?? []
        #expect(lines.count == 50)
        #expect(lines.last?.text == "flood done")
        #expect(lines.dropLast().allSatisfy { $0.text.count == 99 && $0.stream == .stdout })
        _ = await stopAndWait(sup, run)
    }

    @Test func aFloodingChildDoesNotHoldUpAnotherChildsOutput() async throws {
        // yes(1) writes short lines in big chunks, faster than they can be handled: its pipe is
        // never empty while the other child starts.
        let flood = ChildSpec(id: "flood", kind: .process(ProcessSpec(executable: "/usr/bin/yes", environment: ProcessSpec.scrubbed())),
                              restart: .temporary)
        let sup = try supervisor(.oneForOne, [flood, spec("quiet", ["--print", "up"], readiness: .logLine(contains: "up"))])
        let run = launch(sup)
        let yes = try await pid(of: "flood")
        do {
            try await withTimeout(.seconds(5), "the other child ready beside the flood") { try await sup.waitReady() }
        } catch {
            // A starved reactor cannot stop it either, nor start anything: the test must still end.
            kill(yes, SIGKILL)
            throw error
        }
        #expect(await sup.recentOutput(of: "flood")?.last?.text == "y")
        _ = await stopAndWait(sup, run)
    }

    // MARK: - What the child gets

    @Test func theChildGetsAScrubbedEnvironmentNoInheritedFdsAndItsLimits() async throws {
        let env = ProcessSpec.scrubbed(["EXTRA": "1"], from: ["PATH": "/usr/bin", "NOTIFY_SOCKET": "/run/systemd/notify", "LISTEN_FDS": "2", "WATCHDOG_USEC": "1000"])
        #expect(env == ["PATH": "/usr/bin", "EXTRA": "1"])
        let sup = try supervisor(.oneForOne, [
            spec("probe", ["--print-env", "NOTIFY_SOCKET", "--print-env", "EXTRA", "--print-fds", "--print-ids", "--print", "done"],
                 readiness: .logLine(contains: "done"), notifyFD: 3, environment: env,
                 credentials: Credentials(uid: 65534, gid: 65534), rlimits: [ResourceLimit(.nofile, soft: 1024)]),
        ])
        let run = launch(sup)
        try await sup.waitReady()
        let lines = (await sup.recentOutput(of: "probe") ?? []).map(\.text)
        #expect(lines.contains("NOTIFY_SOCKET unset"))
        #expect(lines.contains("EXTRA=1"))
        #expect(lines.contains("fds=0,1,2,3"), "only stdio and the notify fd, got \(lines)")
        #expect(lines.contains("uid=65534 gid=65534 nofile=1024"))
        _ = await stopAndWait(sup, run)
    }

    // MARK: - In-process and dynamic children

    @Test func taskChildrenRestartOnThrowAndAreCancelledOnStop() async throws {
        let runs = Mutex(0)
        let sup = try supervisor(.oneForOne, [ChildSpec(id: "worker", kind: .task { ctx in
            let n = runs.withLock { $0 += 1; return $0 }
            ctx.markReady("run \(n)")
            if n == 1 { throw TestFailure("first run fails") }
            try await OnceValue<Void>().wait()  // runs until cancelled
        }, readiness: .signaled)])
        let run = launch(sup)
        try await recorder.wait(for: "second run ready") { $0.kind == .ready(child: "worker", detail: "run 2") }
        #expect(recorder.events.contains { $0.kind == .exited(child: "worker", reason: .failed("task threw: first run fails"), willRestart: true) })
        #expect(await stopAndWait(sup, run) == .normal("stop requested"))
        // Events reach the recorder through its stream: wait, do not peek.
        try await recorder.wait(for: "the worker stopped") { $0.kind == .stopped(child: "worker", reason: .normal) }
    }

    @Test func aTaskIgnoringCancellationIsAbandonedAfterItsTimeout() async throws {
        let sup = try supervisor(.oneForOne, [ChildSpec(id: "deaf", kind: .task { _ in
            // Blocks forever without looking at cancellation (an uncooperative task).
            await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
        }, shutdown: .timeout(.milliseconds(100)))])
        let run = launch(sup)
        try await sup.waitReady()
        _ = await stopAndWait(sup, run)
        try await recorder.wait(for: "the task abandoned") { $0.kind == .stopped(child: "deaf", reason: .failed("abandoned: did not stop within 100 ms")) }
    }

    @Test func aDynamicSupervisorAddsAndRemovesChildrenAtRuntime() async throws {
        let sup = try supervisor(.oneForOne, [])
        let run = launch(sup)
        try await sup.waitReady()
        try await sup.startChild(spec("s1", restart: .temporary))
        try await sup.startChild(spec("s2", restart: .temporary))
        await #expect(throws: SupervisionError.duplicateChild("s1")) { try await sup.startChild(spec("s1")) }
        await #expect(throws: SupervisionError.self) { try await sup.startChild(spec("bad", ["--exit", "1"], readiness: .file(path: "/nonexistent"))) }
        var snapshot = await sup.snapshot()
        #expect(snapshot.children!.map(\.id) == ["s1", "s2"])
        let s1 = snapshot.children![0].pid!
        try await sup.terminateChild("s1")
        #expect(!isAlive(s1))
        snapshot = await sup.snapshot()
        #expect(snapshot.children!.map(\.id) == ["s2"])
        await #expect(throws: SupervisionError.noSuchChild("s1")) { try await sup.terminateChild("s1") }
        _ = await stopAndWait(sup, run)
    }

    @Test func aNestedSupervisorIsReadyOnlyWhenAllItsChildrenAre() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let inner = SupervisorSpec(strategy: .oneForOne, children: [spec("slow", ["--sleep-ms", "150", "--touch", dir + "/up"], readiness: .file(path: dir + "/up"))])
        let sup = try supervisor(.oneForOne, [ChildSpec(id: "inner", kind: .supervisor(inner))], name: "root")
        let run = launch(sup)
        try await sup.waitReady()
        // The events reach the recorder on their own task: wait for the last one to be recorded.
        _ = try await ready("inner")
        let order = recorder.events.compactMap { e -> String? in
            if case .ready(let c, _) = e.kind { return c }
            return nil
        }
        #expect(order == ["slow", "inner"])
        _ = await stopAndWait(sup, run)
    }

    @Test func siblingsStartedTogetherAreSpawnedBeforeEitherIsReadyAndStopInReverse() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        func slow(_ id: String) -> ChildSpec {
            spec(id, ["--sleep-ms", "300", "--touch", dir + "/" + id], readiness: .file(path: dir + "/" + id))
        }
        var second = slow("second")
        second.startsWithPrevious = true
        let sup = try supervisor(.oneForOne, [slow("first"), second, slow("after")])
        let run = launch(sup)
        try await sup.waitReady()
        try await recorder.wait(for: "supervisor ready") { $0.kind == .supervisorReady }
        let events = recorder.events.map(\.kind)
        let secondSpawned = try #require(events.firstIndex { if case .spawned("second", _) = $0 { true } else { false } })
        let firstReady = try #require(events.firstIndex { if case .ready("first", _) = $0 { true } else { false } })
        let secondReady = try #require(events.firstIndex { if case .ready("second", _) = $0 { true } else { false } })
        let afterStarting = try #require(events.firstIndex { if case .starting("after", _) = $0 { true } else { false } })
        #expect(secondSpawned < firstReady, "second is spawned without waiting for first")
        #expect(max(firstReady, secondReady) < afterStarting, "the next sibling waits for both")

        let mark = recorder.count
        #expect(await stopAndWait(sup, run) == .normal("stop requested"))
        try await recorder.wait(for: "supervisor stopped", after: mark) { if case .supervisorStopped = $0.kind { true } else { false } }
        let stopping = recorder.events.dropFirst(mark).compactMap { e -> String? in
            if case .stopping(let id) = e.kind { return id }
            return nil
        }
        #expect(stopping == ["after", "second", "first"])
    }

    @Test func theSnapshotShowsTheWholeTree() async throws {
        let inner = SupervisorSpec(strategy: .restForOne, children: [spec("leaf")])
        let sup = try supervisor(.oneForOne, [ChildSpec(id: "session", kind: .supervisor(inner)), spec("solo")], name: "root")
        let run = launch(sup)
        try await sup.waitReady()
        let tree = await sup.snapshot()
        #expect(tree.id == "root" && tree.strategy == "one_for_one")
        let session = tree.children!.first { $0.id == "session" }!
        #expect(session.kind == "supervisor" && session.strategy == "rest_for_one")
        #expect(session.children?.first?.id == "leaf")
        #expect(session.children?.first?.pid.map(isAlive) == true)
        #expect(tree.descendants.filter { $0.kind == "process" }.allSatisfy { $0.status == "running" })
        _ = await stopAndWait(sup, run)
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

import Synchronization
