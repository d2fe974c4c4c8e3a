import Essentials
import Kiosk
import KioskdTestSupport
import Logging
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real sessions: Xvfb, Openbox, x11vnc, Chromium (and websockify) as the session user.
@Suite("Kiosk sessions", .serialized)
struct SessionTests {
    @Test func aSessionBootsShowsItsPageAndCDPDrivesItWhileThePoliciesBlockEscapes() async throws {
        try await SessionFixture.with { f in
            _ = try await f.manager.start()
            let session = try await f.manager.create(SessionSettings(id: "boot", url: testPage("kiosk"), width: 800, height: 600))
            let info = await session.info()
            #expect(info.state == .ready)
            #expect(Set(info.pids.keys).isSuperset(of: ["xvfb", "openbox", "x11vnc", "chromium"]))
            #expect(info.pids["websockify"] == nil, "no websockify in builtin bridge mode")

            // Every program runs as the session user, never as root.
            let user = try #require(try SessionHost.sessionUser(named: sessionUserName))
            for (child, pid) in info.pids {
                var st = stat()
                #expect(stat("/proc/\(pid)", &st) == 0 && st.st_uid == user.uid, "\(child) runs as the session user")
            }

            let (first, second, computed, blocked) = try await withPage(info) { cdp, page in
                let first = try await evaluate(cdp, page, loadedTitle)
                try await cdp.send("Page.navigate", ["url": .string(testPage("second"))], session: page)
                let second = try await evaluate(cdp, page, loadedTitle)
                let computed = try await evaluate(cdp, page, "String(6 * 7)")
                // The managed policies block what would escape the kiosk; CDP is still attached. A
                // tab left on a browser page (chrome://version's error page) is sent home by the watch.
                var blocked: [String: String] = [:]
                let mark = f.recorder.count
                for url in ["chrome://version", "file:///etc/passwd"] {
                    blocked[url] = try await cdp.send("Page.navigate", ["url": .string(url)], session: page)["errorText"]?.string ?? "not blocked"
                }
                try await f.waitForBrowser("the tab sent home from chrome://version", session: "boot", after: mark) {
                    if case .returnedHome(_, let from) = $0 { from.hasPrefix("chrome://version") } else { false }
                }
                try await cdp.send("Page.navigate", ["url": .string(testPage("third"))], session: page)
                _ = try await evaluate(cdp, page, loadedTitle)
                return (first, second, computed, blocked)
            }
            #expect(first == "kiosk" && second == "second" && computed == "42")
            for (url, error) in blocked { #expect(error == "net::ERR_BLOCKED_BY_ADMINISTRATOR", "\(url) is blocked") }

            // The display shows the page: the screen's centre has the page's colour once it is
            // painted (loaded is not yet painted: retried until a deadline).
            let shot = f.dir + "/shot.png", out = f.dir + "/pixel.txt"
            let env = ["DISPLAY": info.display, "XAUTHORITY": info.directory + "/Xauthority", "PATH": "/usr/bin:/bin"]
            let importer = try systemProgram("/usr/bin/import", package: "imagemagick")
            var pixel = ""
            let deadline = ContinuousClock.now + .seconds(10)
            while pixel != "srgb(200,30,30)" && ContinuousClock.now < deadline {
                #expect(try await runToExit(importer, ["-window", "root", shot], environment: env) == 0)
                #expect(try await runToExit("/usr/bin/convert", [shot, "-format", "%[pixel:p{400,300}]", "info:" + out], environment: env) == 0)
                pixel = try readText(out)
            }
            #expect(pixel == "srgb(200,30,30)", "the kiosk window fills the screen with the page")

            // A crashed tab ("Aw, Snap": the browser process lives on) is seen and reloaded.
            let mark = f.recorder.count
            try await withPage(info) { cdp, page in
                _ = try? await cdp.send("Page.crash", session: page)
            }
            try await f.waitForBrowser("the tab crash", session: "boot", after: mark) { if case .tabCrashed = $0 { true } else { false } }
            try await f.waitForBrowser("the reload", session: "boot", after: mark) { if case .tabReloaded = $0 { true } else { false } }
            let title = try await withPage(info) { cdp, page in try await evaluate(cdp, page, loadedTitle) }
            #expect(title == "third", "the reloaded tab shows its page again")

            let end = await session.stop(reason: "done")
            #expect(end == SessionEnd(reason: "done", failed: false))
            #expect(access(info.directory, F_OK) != 0, "the session's directory is gone")
            for (child, pid) in info.pids { #expect(!isAlive(pid), "\(child) is gone") }
            #expect(processesWithEnvironment(containing: "KIOSKD_SESSION=\(info.directory)").isEmpty, "no process of the session is left")
        }
    }

    @Test func killedProgramsComeBackAndOnlyWhatDependsOnThemRestarts() async throws {
        try await SessionFixture.with { f in
            _ = try await f.manager.start()
            let session = try await f.manager.create(SessionSettings(id: "kills", url: testPage("kills"), width: 800, height: 600))
            let before = await session.info()

            // Chromium: only Chromium restarts; CDP answers again at the same URL; the watch reattaches.
            var mark = f.recorder.count
            kill(try #require(before.pids["chromium"]), SIGKILL)
            try await f.waitFor("chromium back", session: "kills", after: mark) { $0 == .ready(child: "chromium", detail: "HTTP/1.1 200 OK") }
            try await f.waitForBrowser("the watch reattached", session: "kills", after: mark) { if case .attached = $0 { true } else { false } }
            let afterBrowser = await session.info()
            #expect(afterBrowser.pids["chromium"] != before.pids["chromium"])
            for child in ["xvfb", "openbox", "x11vnc"] { #expect(afterBrowser.pids[child] == before.pids[child], "\(child) untouched") }
            #expect(afterBrowser.cdpURL == before.cdpURL)
            #expect(try await withPage(afterBrowser) { cdp, page in try await evaluate(cdp, page, loadedTitle) } == "kills")

            // x11vnc: only x11vnc restarts.
            mark = f.recorder.count
            kill(try #require(before.pids["x11vnc"]), SIGKILL)
            try await f.waitFor("x11vnc back", session: "kills", after: mark) { $0 == .ready(child: "x11vnc", detail: "RFB 003.008") }
            let afterVNC = await session.info()
            #expect(afterVNC.pids["x11vnc"] != before.pids["x11vnc"])
            for child in ["xvfb", "openbox", "chromium"] { #expect(afterVNC.pids[child] == afterBrowser.pids[child], "\(child) untouched") }

            // Xvfb: every X client died with it; the whole session is rebuilt in order.
            mark = f.recorder.count
            kill(try #require(before.pids["xvfb"]), SIGKILL)
            try await f.waitFor("the session rebuilt", session: "kills", after: mark) { $0 == .ready(child: "clients", detail: "") }
            let order = f.recorder.items.dropFirst(mark).compactMap { e -> String? in
                guard e.session == "kills", case .supervision(let s) = e.event, case .ready(let child, _) = s.kind,
                      ["xvfb", "openbox", "clients"].contains(child) else { return nil }
                return child
            }
            #expect(order == ["xvfb", "openbox", "clients"])
            let rebuilt = await session.info()
            for child in ["xvfb", "openbox", "x11vnc", "chromium"] { #expect(rebuilt.pids[child] != afterVNC.pids[child], "\(child) restarted") }
            #expect(rebuilt.display == before.display, "the session keeps its display")
            #expect(try await withPage(rebuilt) { cdp, page in try await evaluate(cdp, page, loadedTitle) } == "kills")
            for pid in before.pids.values { #expect(!isAlive(pid)) }

            let end = await session.stop(reason: "done")
            #expect(end == SessionEnd(reason: "done", failed: false))
            #expect(processesWithEnvironment(containing: "KIOSKD_SESSION=\(rebuilt.directory)").isEmpty, "no process of the session is left")
            #expect(access(rebuilt.directory, F_OK) != 0)
        }
    }

    @Test func threeSessionsRunSideBySideAndACrashLoopEndsOnlyItsOwn() async throws {
        let infos = try await SessionFixture.with { f in
            _ = try await f.manager.start()
            // A browser that works until the marker exists, then fails at once: a crash loop.
            let marker = f.dir + "/broken", wrapper = f.dir + "/browser"
            let script = "#!/bin/sh\n[ -e \(marker) ] && { echo 'cannot start: marker present' >&2; exit 3; }\nexec \(Chromium.executable) \"$@\"\n"
            #expect(writeText(wrapper, script, mode: 0o755))

            async let a = f.manager.create(SessionSettings(id: "a", url: testPage("a"), width: 800, height: 600))
            async let b = f.manager.create(SessionSettings(id: "b", url: testPage("b"), width: 800, height: 600, bridge: .websockify))
            async let c = f.manager.create(SessionSettings(id: "c", url: testPage("c"), width: 800, height: 600,
                                                           budget: Intensity(maxRestarts: 1, period: .seconds(60)), browserExecutable: wrapper))
            let sessions = try await [a, b, c]
            let infos = await f.manager.list()
            #expect(infos.map(\.id) == ["a", "b", "c"])
            #expect(Set(infos.map(\.display)).count == 3, "distinct displays")
            let ports = infos.flatMap { [Int($0.cdpURL.split(separator: ":").last!)!] + ($0.websockifyPort.map { [$0] } ?? []) }
            #expect(Set(ports).count == ports.count, "distinct ports")
            #expect(Set(infos.map(\.vncSocket)).count == 3, "distinct VNC sockets")
            #expect(infos[1].websockifyPort != nil && infos[1].pids["websockify"] != nil, "websockify runs in its bridge mode")
            await #expect(throws: SessionError.duplicate("a")) { try await f.manager.create(SessionSettings(id: "a")) }
            await #expect(throws: SessionError.self) { try await f.manager.create(SessionSettings(id: "../etc", width: 10)) }

            // websockify relays x11vnc: an HTTP upgrade with the session's secret answers 101 and
            // then RFB; without it, or with another session's, 403 before x11vnc is reached.
            let wsPort = try #require(infos[1].websockifyPort), secret = try #require(sessions[1].websockifySecret)
            let greeting = try await websocketGreeting(port: wsPort, authorization: "Bearer \(secret)")
            #expect(greeting.hasPrefix("HTTP/1.1 101"), "websockify upgraded: \(greeting)")
            for authorization in [nil, "Bearer \(String(secret.reversed()))", "Basic \(secret)"] {
                let refused = try await websocketGreeting(port: wsPort, authorization: authorization)
                #expect(refused.hasPrefix("HTTP/1.1 403") && !refused.contains("RFB"), "no secret, no upgrade: \(refused)")
            }

            // Session c's browser starts failing: its budget runs out and only c ends.
            #expect(writeText(marker, "", mode: 0o644))
            kill(try #require(infos[2].pids["chromium"]), SIGKILL)
            let end = await sessions[2].ended()
            #expect(end.failed)
            #expect(end.reason.contains("restart budget spent") && end.reason.contains("chromium"), "\(end.reason)")
            #expect(access(infos[2].directory, F_OK) != 0, "the failed session's directory is gone")
            for pid in infos[2].pids.values { #expect(!isAlive(pid)) }
            #expect(await f.manager.session("c") == nil)

            for (session, info) in zip(sessions.prefix(2), infos.prefix(2)) {
                #expect(await session.info().state == .ready)
                for (child, pid) in info.pids { #expect(isAlive(pid), "\(info.id)/\(child) untouched") }
                #expect(try await withPage(info) { cdp, page in try await evaluate(cdp, page, loadedTitle) } == info.id)
            }
            return infos
        }
        // Checked once the fixture has stopped every session.
        for info in infos { #expect(processesWithEnvironment(containing: "KIOSKD_SESSION=\(info.directory)").isEmpty) }
    }

    /// kioskd stopping while a session boots: the caller's cancellation stops the tree in order
    /// and the session gives back everything before `create` returns (it once waited forever).
    @Test(.timeLimit(.minutes(1))) func aStartGivenUpStopsItsTreeAndLeavesNothing() async throws {
        try await SessionFixture.with { f in
            _ = try await f.manager.start()
            let mark = f.recorder.count
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    await #expect(throws: CancellationError.self) {
                        try await f.manager.create(SessionSettings(id: "given-up", url: testPage("given-up"), width: 800, height: 600))
                    }
                }
                // Given up once its X server is up, while the programs after it still start.
                try await f.waitFor("xvfb ready", session: "given-up", after: mark) { if case .ready("xvfb", _) = $0 { true } else { false } }
                group.cancelAll()
                try await group.waitForAll()
            }
            #expect(await f.manager.session("given-up") == nil)
            #expect(await f.manager.list().isEmpty)
            #expect(processesWithEnvironment(containing: "KIOSKD_SESSION=\(f.dir)/sessions/").isEmpty, "no program of it is left")
            #expect(directoryEntries(f.dir + "/sessions").isEmpty, "its directory is gone")
        }
    }

    @Test func theSweeperRemovesWhatADeadRunLeft() async throws {
        let dir = try makeTempDir("kioskd-sweep")
        defer { removeTree(dir) }
        let sockets = dir + "/x11"
        mkdir(sockets, 0o755)
        let displays = DisplayAllocator(range: 70...71, lockDir: dir, socketDir: sockets)
        let host = SessionHost(sessionsDir: dir + "/sessions", recordsDir: dir + "/records", user: nil,
                               displays: displays, ports: hostPorts, logger: Logger(label: "test"))
        // What a SIGKILLed daemon leaves: a session directory, its record, its X socket and a
        // process still marked as the session's.
        for d in [host.sessionsDir, host.recordsDir, host.sessionsDir + "/old", host.sessionsDir + "/old/profile"] { mkdir(d, 0o700) }
        #expect(writeText(host.sessionsDir + "/old/profile/SingletonLock", "x", mode: 0o600))
        #expect(writeText(host.recordsDir + "/old.json", #"{"id":"old","display":70,"directory":"\#(host.sessionsDir)/old"}"#, mode: 0o600))
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        _ = withUnixSocketAddress(sockets + "/X70") { bind(fd, $0, $1) }
        close(fd)
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("600"), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("KIOSKD_SESSION=\(host.sessionsDir)/old"), nil]
        defer { (argv + envp).forEach { free($0) } }
        #expect(spawnWithDefaultSignals(&pid, "/bin/sleep", nil, argv, envp) == 0)

        // A shared-memory segment of the session user (here: ours) whose creator is gone, as a
        // killed x11vnc leaves.
        let made = dir + "/ipcmk.out"
        #expect(try await runToExit("/usr/bin/ipcmk", ["-M", "4096"], environment: ["PATH": "/usr/bin:/bin"], output: made) == 0)
        let segment = try #require(try readText(made).split(separator: ":").last.map { String($0.filter(\.isNumber)) })
        let report = try await SessionManager(host: host).start()
        #expect(report.sharedMemory >= 1)
        #expect(try !readText("/proc/sysvipc/shm").split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first.map(String.init) == segment },
                "the orphaned segment \(segment) is gone")
        #expect(report.processes == 1)
        #expect(report.directories == [host.sessionsDir + "/old"])
        #expect(report.displays == [70])
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(status & 0x7f == SIGKILL, "the leftover process was killed")
        #expect(access(host.sessionsDir + "/old", F_OK) != 0 && access(host.recordsDir + "/old.json", F_OK) != 0)
        #expect(access(sockets + "/X70", F_OK) != 0, "the dead server's socket is gone")
    }
}

/// Writes a file; false if it could not.
func writeText(_ path: String, _ text: String, mode: mode_t) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    fchmod(fd, mode)
    return write(fd, text, text.utf8.count) == text.utf8.count
}

/// Opens a WebSocket on a loopback port by hand and returns what the server answered first.
func websocketGreeting(port: Int, authorization: String?) async throws -> String {
    try await blocking {
        let fd = try connectLoopback(port: port, timeout: 5)
        defer { close(fd) }
        let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n"
            + (authorization.map { "Authorization: \($0)\r\n" } ?? "") + "\r\n"
        _ = send(fd, request, request.utf8.count, 0)
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
    }
}
