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
    /// A page with this title, painted in one colour the screenshot can find.
    static func page(_ title: String) -> String {
        "data:text/html,<title>\(title)</title><body style='margin:0;background:rgb(200,30,30)'><h1>\(title)</h1></body>"
    }

    @Test func aSessionBootsShowsItsPageAndCDPDrivesItWhileThePoliciesBlockEscapes() async throws {
        let f = try await SessionFixture()
        _ = try await f.manager.start()
        let session = try await f.manager.create(SessionSettings(id: "boot", url: Self.page("kiosk"), width: 800, height: 600))
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
            try await cdp.send("Page.navigate", ["url": .string(Self.page("second"))], session: page)
            let second = try await evaluate(cdp, page, loadedTitle)
            let computed = try await evaluate(cdp, page, "String(6 * 7)")
            // The managed policies block what would escape the kiosk; CDP is still attached.
            var blocked: [String: String] = [:]
            for url in ["chrome://version", "file:///etc/passwd"] {
                blocked[url] = try await cdp.send("Page.navigate", ["url": .string(url)], session: page)["errorText"]?.string ?? "not blocked"
            }
            try await cdp.send("Page.navigate", ["url": .string(Self.page("third"))], session: page)
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
        await f.tearDown()
    }
}
