import Display
import Essentials
import Kiosk
import KioskdTestSupport
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Faults in real sessions: what one kill costs the budget, and what it restarts.
@Suite("Session faults", .serialized)
struct SessionFaultTests {
    @Test func eachKillOfXvfbIsOneRestartUntilTheBudgetIsSpent() async throws {
        try await SessionFixture.with("kioskd-fault") { f in
            _ = try await f.manager.start()
            let session = try await f.manager.create(SessionSettings(id: "xkill", url: testPage("xkill"), width: 800, height: 600,
                                                                     budget: Intensity(maxRestarts: 2, period: .seconds(60))))
            try await f.waitFor("the start's events recorded", session: "xkill") { $0 == .ready(child: "clients", detail: "") }
            // Openbox, the lockdown and every client die with Xvfb, often reported before it.
            // Within a budget of two, two kills are two restarts and the session carries on.
            for kill in 1...2 {
                let before = await session.info()
                let mark = f.recorder.count
                Glibc.kill(try #require(before.pids["xvfb"]), SIGKILL)
                try await f.waitFor("the session rebuilt after kill \(kill)", session: "xkill", after: mark) { $0 == .ready(child: "clients", detail: "") }
                let rebuilt = await session.info()
                #expect(rebuilt.state == .ready)
                for child in ["xvfb", "openbox", "chromium"] { #expect(rebuilt.pids[child] != before.pids[child], "\(child) restarted") }
            }
            #expect(try await withPage(await session.info()) { cdp, page in try await evaluate(cdp, page, loadedTitle) } == "xkill")

            // The third spends it, and the end names Xvfb.
            let last = await session.info()
            kill(try #require(last.pids["xvfb"]), SIGKILL)
            let end = try await withTimeout(.seconds(30), "the session's end") { await session.ended() }
            #expect(end.failed)
            #expect(end.reason.contains("restart budget spent") && end.reason.contains("(last: 'xvfb')"), "\(end.reason)")
            for pid in last.pids.values { #expect(!isAlive(pid)) }
        }
    }

    @Test func killingOpenboxRestartsOnlyOpenboxAndTheKioskCarriesOn() async throws {
        try await SessionFixture.with("kioskd-fault") { f in
            _ = try await f.manager.start()
            let session = try await f.manager.create(SessionSettings(id: "wmkill", url: testPage("wmkill"), width: 800, height: 600))
            try await f.waitFor("the start's events recorded", session: "wmkill") { $0 == .ready(child: "clients", detail: "") }
            let before = await session.info()
            let window = "0x" + String(try #require(try await session.windows().first), radix: 16)
            let env = ["DISPLAY": before.display, "XAUTHORITY": before.directory + "/Xauthority", "PATH": "/usr/bin:/bin"]
            let root = try await rootWindow(env, dir: f.dir)

            // Follow the kiosk window: Openbox's death hands it to the root window, a new Openbox
            // takes it into a frame of its own.
            let xev = try systemProgram("/usr/bin/xev", package: "x11-utils")
            // stdbuf: xev's output to a pipe would sit in its buffer.
            let spy = try LineSpy("/usr/bin/stdbuf", ["-oL", xev, "-id", window, "-event", "structure", "-event", "property"], environment: env)
            defer { spy.stop() }
            // xev says nothing once it listens; a property we change is what it reports first then.
            // Changes made before that go unseen, so each unanswered one is made again.
            let xprop = try systemProgram("/usr/bin/xprop", package: "x11-utils")
            try await withTimeout(.seconds(20), "xev listening") {
                while true {
                    let seen = spy.count
                    guard try await runToExit(xprop, ["-id", window, "-f", "_KIOSKD_TEST", "8s", "-set", "_KIOSKD_TEST", "\(seen)"], environment: env) == 0 else {
                        throw TestFailure("xprop could not set a property on the kiosk window")
                    }
                    if (try? await spy.wait(for: "the property change", after: seen, timeout: .milliseconds(500)) { $0.contains("_KIOSKD_TEST") }) != nil {
                        return
                    }
                }
            }

            let mark = f.recorder.count
            let spied = spy.count
            kill(try #require(before.pids["openbox"]), SIGKILL)
            try await f.waitFor("openbox back", session: "wmkill", after: mark) { if case .ready("openbox", _) = $0 { true } else { false } }
            let managed = try await spy.wait(for: "the new Openbox framing the kiosk window", after: spied) { line in
                reparentedTo(line).map { $0 != root } ?? false
            }
            #expect(reparentedTo(managed) != nil)

            // Nothing else restarted: same programs, same page.
            let after = await session.info()
            #expect(after.pids["openbox"] != before.pids["openbox"])
            for child in ["xvfb", "x11vnc", "chromium"] { #expect(after.pids[child] == before.pids[child], "\(child) untouched") }
            let started = f.recorder.items.dropFirst(mark).compactMap { e -> String? in
                guard e.session == "wmkill", case .supervision(let s) = e.event, case .starting(let child, _) = s.kind else { return nil }
                return child
            }
            #expect(started == ["openbox"], "only Openbox restarted: \(started)")
            #expect(try await withPage(after) { cdp, page in try await evaluate(cdp, page, loadedTitle) } == "wmkill")

            // Fullscreen again: the rc.xml's rule applied to the window the new Openbox found.
            let geometry = f.dir + "/xwininfo.txt"
            #expect(try await runToExit("/usr/bin/xwininfo", ["-id", window], environment: env, output: geometry) == 0)
            let info = try readText(geometry)
            for line in ["Absolute upper-left X:  0", "Absolute upper-left Y:  0", "Width: 800", "Height: 600"] {
                #expect(info.contains(line), "\(line) in \(info)")
            }
            let state = f.dir + "/state.txt"
            #expect(try await runToExit(xprop, ["-id", window, "_NET_WM_STATE"], environment: env, output: state) == 0)
            #expect(try readText(state).contains("_NET_WM_STATE_FULLSCREEN"))
            #expect(try await session.windows() == [UInt(window.dropFirst(2), radix: 16)!], "the new Openbox lists the kiosk window alone")

            // The lockdown kept its grabs: Ctrl+W from a viewer is blocked, the tab stays.
            let viewer = try RFBClient(socket: after.vncSocket)
            defer { viewer.close() }
            let typed = f.recorder.count
            typeCombo(try KeyCombo(parsing: "Ctrl+W"), viewer, at: (400, 300))
            try await f.recorder.wait(for: "Ctrl+W blocked", after: typed) { blockedCombo($0, "wmkill") == "Ctrl+W" }
            let tabs = try await pageTargets(after)
            #expect(tabs.count == 1 && tabs.first?.url.hasPrefix("data:text/html,<title>wmkill") == true, "\(tabs)")
            #expect(await session.info().pids["chromium"] == before.pids["chromium"])
        }
    }
}

/// The parent in one of xev's ReparentNotify lines ("    window 0x…, parent 0x…,").
func reparentedTo(_ line: String) -> UInt? { hexAfter("parent 0x", in: line) }

func hexAfter(_ label: String, in line: some StringProtocol) -> UInt? {
    guard let at = line.firstRange(of: label) else { return nil }
    return UInt(line[at.upperBound...].prefix { $0.isHexDigit }, radix: 16)
}

/// The display's root window.
func rootWindow(_ env: [String: String], dir: String) async throws -> UInt {
    let out = dir + "/root.txt"
    guard try await runToExit("/usr/bin/xwininfo", ["-root"], environment: env, output: out) == 0,
          let id = try readText(out).split(separator: "\n").lazy.compactMap({ hexAfter("Window id: 0x", in: $0) }).first else {
        throw TestFailure("no root window from xwininfo")
    }
    return id
}

/// A program that reports what it sees as lines (xev), read while it runs; its errors too.
final class LineSpy: Sendable {
    private let pid: pid_t
    private let lines = Recorder<String>()

    init(_ path: String, _ arguments: [String], environment: [String: String]) throws {
        let (pid, reader) = try spawnReadingOutput(path, arguments, environment: environment, errors: true)
        self.pid = pid
        let lines = self.lines
        Thread.detach {
            guard let file = fdopen(reader, "r") else { return }
            defer { fclose(file) }
            var line: UnsafeMutablePointer<CChar>?
            var capacity = 0
            defer { free(line) }
            while getline(&line, &capacity, file) > 0, let line { lines.record(String(cString: line)) }
        }
    }

    var count: Int { lines.count }

    @discardableResult
    func wait(for what: String, after: Int = 0, timeout: Duration = .seconds(20), _ match: @escaping @Sendable (String) -> Bool) async throws -> String {
        try await lines.wait(for: what, after: after, timeout: timeout, match)
    }

    func stop() {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
}
