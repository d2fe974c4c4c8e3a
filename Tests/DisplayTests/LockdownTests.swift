import Display
import Essentials
import Kiosk
import KioskdTestSupport
import Logging
import Metrics
import MetricsTestKit
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The lockdown against real input: viewers' keys and clicks arrive through the real x11vnc
/// (a small RFB client), exactly as noVNC's would.
@Suite("Kiosk lockdown", .serialized)
struct LockdownTests {
    static let numLock: UInt32 = 0xFF7F

    /// A session manager whose sweep is done, for `body`.
    static func withFixture(_ body: (SessionFixture) async throws -> Void) async throws {
        try await SessionFixture.with("kioskd-lock") { f in
            _ = try await f.manager.start()
            try await body(f)
        }
    }

    static func settings(_ id: String, _ url: String) -> SessionSettings {
        SessionSettings(id: id, url: url, width: 800, height: 600)
    }

    /// x11vnc types a keysym on the level it sits on: for Shift+Tab or Shift+F5 it lifts Shift
    /// (the keysym is unshifted), so the X server sees Ctrl+Tab or F5. Those are grabbed too.
    static func shiftDropped(_ combo: KeyCombo) -> String {
        var plain = combo
        plain.modifiers.remove(.shift)
        return plain.description
    }

    /// The process's metrics backend (bootstrapping is once per process).
    static let metrics: TestMetrics = {
        let metrics = TestMetrics()
        MetricsSystem.bootstrap(metrics)
        return metrics
    }()

    @Test func everyDefaultCombinationFromAViewerIsBlockedWithNumLockOffAndOn() async throws {
        let metrics = Self.metrics
        try await Self.withFixture { f in
            let url = testPage("locked")
            // A combination of our own marks the end of each pass: x11vnc delivers in order.
            let sentinel = try KeyCombo(parsing: "Super+F12")
            var settings = Self.settings("keys", url)
            settings.grabs = try GrabList.configured(add: [sentinel], remove: [])
            let session = try await f.manager.create(settings)
            let before = await session.info()
            let viewer = try RFBClient(socket: before.vncSocket)
            defer { viewer.close() }
            // x11vnc injects buttons 1–5 only (RFB's mask has 8 bits): the side buttons are grabbed
            // for other input paths, and cannot come from a viewer.
            let sendable = GrabList.defaults.filter { ![.button(8), .button(9)].contains($0.combo.trigger) }

            for pass in ["NumLock off", "NumLock on"] {
                if pass == "NumLock on" {
                    viewer.key(Self.numLock, down: true)
                    viewer.key(Self.numLock, down: false)
                }
                let mark = f.recorder.count
                try await blocking {
                    for entry in sendable { typeCombo(entry.combo, viewer, at: (400, 300)) }
                    typeCombo(sentinel, viewer, at: (400, 300))
                }
                // Once the sentinel is blocked, every combination before it has reached the server.
                try await f.recorder.wait(for: "the sentinel blocked (\(pass))", after: mark) { blockedCombo($0, "keys") == "Super+F12" }
                let seen = Set(f.recorder.items.dropFirst(mark).compactMap { blockedCombo($0, "keys") })
                let missing = sendable.map(\.combo).filter { !seen.contains($0.description) && !seen.contains(Self.shiftDropped($0)) }
                #expect(missing.isEmpty, "\(pass): not blocked: \(missing)")
            }

            // Every blocked attempt is counted, by purpose (other sessions may add to it).
            let closes = sendable.filter { $0.purpose == .close }.count * 2
            let counted = try metrics.expectCounter("kioskd_lockdown_blocked_total", [("purpose", "close")]).totalValue
            #expect(counted >= closes, "counted \(counted) blocked close combinations, sent \(closes)")

            let after = await session.info()
            #expect(after.pids["chromium"] == before.pids["chromium"], "the browser never restarted")
            #expect(after.pids["xvfb"] == before.pids["xvfb"], "the X server survived every combination")
            #expect(try await session.windows().count == 1, "one window")
            let tabs = try await pageTargets(after)
            #expect(tabs.count == 1, "one page target: \(tabs)")
            #expect(tabs.first?.url.hasPrefix("data:text/html,<title>locked") == true, "same URL: \(tabs)")
            #expect(try await withPage(after) { cdp, s in try await evaluate(cdp, s, "document.title") } == "locked")
        }
    }

    @Test func aSecondGrabberFailsClearlyAndAKeymapChangeIsGrabbedAgain() async throws {
        try await Self.withFixture { f in
            let session = try await f.manager.create(Self.settings("regrab", testPage("regrab")))
            let info = await session.info()
            let display = Int(info.display.dropFirst())!
            let cookie = Array(try #require(readSmallFileBytes(info.directory + "/Xauthority", limit: 4096)).suffix(16))

            await #expect(throws: LockdownError.grabConflict(display: display, combo: "Ctrl+W")) {
                _ = try await Lockdown.start(.init(display: display, cookie: cookie, session: "intruder")) { _ in }
            }

            // Move w to another keycode: x11vnc now types it there, which only a re-grab covers.
            let mark = f.recorder.count
            let xmodmap = try systemProgram("/usr/bin/xmodmap", package: "x11-xserver-utils")
            // w is added to keycode 200 before it leaves 25, so no moment has it on an ungrabbed key
            // only: each change is a MappingNotify, and between a change and its re-grab a key on a
            // new keycode would pass (see the notes).
            let rc = try await runToExit(xmodmap, ["-e", "keycode 200 = w W", "-e", "keycode 25 = F13"],
                                         environment: ["DISPLAY": info.display, "XAUTHORITY": info.directory + "/Xauthority"])
            #expect(rc == 0)
            try await f.recorder.wait(for: "the re-grab", after: mark) { e in
                if e.session == "regrab", case .lockdown(.regrabbed(let n)) = e.event { n > 0 } else { false }
            }
            let viewer = try RFBClient(socket: info.vncSocket)
            defer { viewer.close() }
            let typed = f.recorder.count
            typeCombo(try KeyCombo(parsing: "Ctrl+W"), viewer, at: (10, 10))
            try await f.recorder.wait(for: "Ctrl+W on its new keycode blocked", after: typed) { blockedCombo($0, "regrab") == "Ctrl+W" }
            #expect(try await pageTargets(info).count == 1, "the tab is still open")
        }
    }

    @Test func vtSwitchCombinationsReachTheGrabberOnceTheirActionsAreOffTheKeymap() async throws {
        try await Self.withFixture { f in
            // XKB turned Ctrl+Alt+F12 into a VT switch (XF86Switch_VT_12 on F12's fifth level), so no
            // client ever received it and a session grabbing it failed its self-test. The lockdown
            // takes that action keysym off the keymap: the combination is an ordinary key again,
            // verified by the self-test and blocked from a viewer like any other.
            var settings = Self.settings("vt", testPage("vt"))
            settings.grabs = try GrabList.configured(add: [KeyCombo(parsing: "Ctrl+Alt+F12")], remove: [])
            let session = try await f.manager.create(settings)
            let info = await session.info()
            let viewer = try RFBClient(socket: info.vncSocket)
            defer { viewer.close() }
            let typed = f.recorder.count
            typeCombo(try KeyCombo(parsing: "Ctrl+Alt+F12"), viewer, at: (10, 10))
            try await f.recorder.wait(for: "Ctrl+Alt+F12 blocked", after: typed) { blockedCombo($0, "vt") == "Ctrl+Alt+F12" }
            #expect(await session.info().pids["xvfb"] == info.pids["xvfb"])
        }
    }

    @Test func theWatchdogClosesWindowsAndTabsThatAreNotTheKiosk() async throws {
        try await Self.withFixture { f in
            // One button over the whole page: any click opens a popup window.
            let page = "data:text/html,<title>opener</title><body style='margin:0'><button style='width:100vw;height:100vh' "
                + "onclick=\"window.open('about:blank','_blank','popup,width=300,height=200')\">open</button></body>"
            let session = try await f.manager.create(Self.settings("watchdog", page))
            let info = await session.info()
            #expect(try await withPage(info) { cdp, s in try await evaluate(cdp, s, loadedTitle) } == "opener")

            let mark = f.recorder.count
            let viewer = try RFBClient(socket: info.vncSocket)
            defer { viewer.close() }
            viewer.pointer(buttons: 1, x: 400, y: 300)
            viewer.pointer(buttons: 0, x: 400, y: 300)
            try await f.recorder.wait(for: "the popup closed by the watchdog", after: mark, timeout: .seconds(15)) { e in
                guard e.session == "watchdog" else { return false }
                if case .browser(.targetClosed(_, _, byPage: true)) = e.event { return true }
                if case .lockdown(.windowClosed) = e.event { return true }
                return false
            }
            // The popup's X window goes after its tab: once the window list is down to one, so are the tabs.
            try await waitForKioskWindowAlone(info)
            #expect(try await session.windows().count == 1)
            #expect(try await pageTargets(info).count == 1)

            // A window of another X client: only the X watchdog can see it.
            let xmessage = try systemProgram("/usr/bin/xmessage", package: "x11-utils")
            let windowMark = f.recorder.count
            // xmessage only ends when its window goes: returning (not timing out) is the closing.
            _ = try await runToExit(xmessage, ["-name", "intruder", "intruder"],
                                    environment: ["DISPLAY": info.display, "XAUTHORITY": info.directory + "/Xauthority"], timeout: .seconds(15))
            // The report travels through the session's event stream: wait for it, do not race it.
            try await f.recorder.wait(for: "the watchdog's report of closing the intruder's window", after: windowMark) { e in
                if e.session == "watchdog", case .lockdown(.windowClosed(_, let name)) = e.event { return name == "intruder" } else { return false }
            }
            try await waitForKioskWindowAlone(info)
            #expect(try await session.windows().count == 1)
        }
    }

    @Test func keysAndButtonsHeldByADepartingViewerAreReleased() async throws {
        try await Self.withFixture { f in
            let session = try await f.manager.create(Self.settings("held", testPage("held")))
            let info = await session.info()
            let viewer = try RFBClient(socket: info.vncSocket)
            viewer.pointer(buttons: 1, x: 200, y: 200)
            viewer.key(0xFFE3, down: true)   // Control_L
            viewer.key(0x61, down: true)     // a
            // A round trip proves x11vnc has processed the input before the viewer leaves.
            try await blocking { try viewer.firstFramebufferUpdate() }
            let mark = f.recorder.count
            viewer.close()
            let released = try await f.recorder.wait(for: "held input released", after: mark) { e in
                if e.session == "held", case .lockdown(.inputReleased) = e.event { true } else { false }
            }
            guard case .lockdown(.inputReleased(let keys, let buttons)) = released.event else { return }
            #expect(keys.contains("Control_L") && keys.contains("a"), "released: \(keys)")
            #expect(buttons == [1])
            #expect(try await session.releaseHeldInput() == .inputReleased(keys: [], buttons: []), "nothing is down any more")
        }
    }
}
