import Kiosk
import Logging
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The programs' command lines and the session tree, as pure values.
@Suite("Program specs and the session tree")
struct SpecTests {
    let layout = SessionLayout(display: 42, cdpPort: 21001, websockifyPort: nil, directory: "/run/kioskd/sessions/s1")

    @Test func x11vncListensOnlyOnItsUnixSocketWithoutClipboardAndItsInputFollowsTheMode() {
        let control = X11VNC.arguments(.init(display: 42, authFile: "/a", socket: "/s/vnc.sock", input: .control))
        #expect(control.joined(separator: " ").contains("-unixsock /s/vnc.sock -rfbport 0 -rfbportv6 -1 -noipv6"),
                "no TCP listener of either family: \(control)")
        #expect(control.contains("-noadd_keysyms"), "a keysym missing from the keymap must not be added for a viewer")
        for flag in ["-shared", "-forever", "-nosel", "-noclipboard", "-nosetclipboard", "-noprimary", "-nosetprimary", "-safer", "-nocmds", "-norc"] {
            #expect(control.contains(flag), "\(flag)")
        }
        #expect(control.joined(separator: " ").contains("-ncache 0"))
        #expect(control.joined(separator: " ").contains("-input KMB"), "without B, clicks are dropped")
        let view = X11VNC.arguments(.init(display: 42, authFile: "/a", socket: "/s/vnc.sock", input: .view))
        #expect(view.contains("-viewonly") && !view.contains("-input"))
        guard case .process(let p) = X11VNC.childSpec(.init(display: 42, authFile: "/a", socket: "/s/vnc.sock", input: .control), credentials: nil, environment: [:]).kind else {
            Issue.record("x11vnc must be a process")
            return
        }
        #expect(p.rlimits == [ResourceLimit(.nofile, soft: 8192)], "a huge NOFILE makes each connect take minutes")
        let spec = X11VNC.childSpec(.init(display: 42, authFile: "/a", socket: "/s/vnc.sock", input: .control), credentials: nil, environment: [:])
        guard case .unixSocket(let path, let banner, let hello)? = spec.readiness else {
            Issue.record("x11vnc is ready when its socket greets")
            return
        }
        #expect(path == "/s/vnc.sock" && banner == "RFB 003.008")
        #expect(hello == "RFB 003.008\n", "a silent probe waits out libvncserver's 100 ms sniffing")
    }

    @Test func chromiumIsAKioskWithItsOwnProfileAndCDPOnLoopbackAndTheSandboxStaysOn() {
        let s = Chromium.Settings(display: 42, authFile: "/a", width: 800, height: 600, profileDir: "/p", cdpPort: 21001,
                                  url: "https://example.com", useDevShm: true)
        let args = Chromium.arguments(s)
        #expect(args.first == "--kiosk" && args.last == "https://example.com")
        for flag in ["--user-data-dir=/p", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=21001",
                     "--password-store=basic", "--disable-gpu", "--hide-crash-restore-bubble", "--window-size=800,600"] {
            #expect(args.contains(flag), "\(flag)")
        }
        #expect(!args.contains("--no-sandbox") && !args.contains("--disable-dev-shm-usage"))
        var unsafe = s
        unsafe.sandbox = false
        unsafe.useDevShm = false
        #expect(Chromium.arguments(unsafe).contains("--no-sandbox") && Chromium.arguments(unsafe).contains("--disable-dev-shm-usage"))
    }

    @Test func openboxGetsAKioskConfigWithNoBindingsAndEveryWindowFullscreen() {
        let rc = Openbox.rcXML(menuPath: "/s/menu&.xml")
        #expect(rc.contains("<keyboard></keyboard>"), "no key bindings: Openbox's default A-F4 would close the browser")
        #expect(!rc.contains("<context name=\"Root\">") && !rc.contains("<context name=\"Desktop\">"), "no menus")
        #expect(rc.contains("<application class=\"*\">") && rc.contains("<decor>no</decor>") && rc.contains("<fullscreen>yes</fullscreen>"))
        #expect(rc.contains("/s/menu&amp;.xml"), "paths are escaped in XML")
        let args = Openbox.arguments(.init(display: 42, authFile: "/a", directory: "/s"))
        #expect(args == ["--config-file", "/s/openbox-rc.xml", "--sm-disable", "--startup", "/usr/bin/touch /s/openbox.ready"])
    }

    @Test func theSessionTreeIsRestForOneWithTheClientsGroupLast() {
        let lockdown = LockdownChild(options: .init(display: 42, cookie: [], session: "s1"), logger: Logger(label: "test")) { _ in }
        let spec = SessionTree.spec(SessionSettings(id: "s1"), layout, user: nil, lockdown: lockdown, watch: nil, logger: Logger(label: "test"))
        #expect(spec.strategy == .restForOne)
        #expect(spec.children.map(\.id) == ["xvfb", "openbox", "lockdown", "clients"], "no window exists before the grabs")
        guard case .supervisor(let clients) = spec.children.last?.kind else {
            Issue.record("clients must be a supervisor")
            return
        }
        #expect(clients.strategy == .oneForOne)
        #expect(clients.children.map(\.id) == ["x11vnc", "chromium"], "no websockify in builtin mode")
        #expect(clients.children.map(\.startsWithPrevious) == [false, true], "Chromium starts with x11vnc")
        #expect(spec.children.allSatisfy { !$0.startsWithPrevious }, "everything at the top needs the X server and the grabs first")
        var ws = layout
        ws.websockifyPort = 21002
        let withRelay = SessionTree.spec(SessionSettings(id: "s1", bridge: .websockify), ws, user: nil, lockdown: nil, watch: nil,
                                         logger: Logger(label: "test"))
        guard case .supervisor(let relayed) = withRelay.children.last?.kind else { return }
        #expect(relayed.children.map(\.id) == ["x11vnc", "websockify", "chromium"])
        #expect(relayed.children.map(\.startsWithPrevious) == [false, false, true], "websockify waits for x11vnc's socket")
        #expect(Websockify.arguments(.init(port: 21002, vncSocket: ws.vncSocket, secretFile: ws.websockifySecretFile, pluginDirectory: ws.websockifyPluginDir))
                == ["--unix-target=/run/kioskd/sessions/s1/vnc.sock", "--auth-plugin=kioskd_websockify_auth.SessionSecret",
                    "--auth-source=/run/kioskd/sessions/s1/websockify.secret", "127.0.0.1:21002"])
    }

    @Test func sessionProgramsGetTheSessionsHomeAndNothingOfTheDaemon() {
        let env = layout.environment()
        #expect(env["HOME"] == layout.directory && env["TMPDIR"] == layout.directory + "/tmp")
        #expect(env["KIOSKD_SESSION"] == layout.directory, "the marker the sweeper finds leftovers by")
        #expect(env.keys.allSatisfy { !$0.hasPrefix("NOTIFY_") && !$0.hasPrefix("LISTEN_") && !$0.hasPrefix("WATCHDOG_") })
    }

    @Test(arguments: [
        (SessionSettings(id: "ok-1_2"), [String]()),
        (SessionSettings(id: ""), ["id"]),
        (SessionSettings(id: "../etc"), ["id"]),
        (SessionSettings(id: "-x"), ["id"]),
        (SessionSettings(id: String(repeating: "a", count: 65)), ["id"]),
        (SessionSettings(id: "s", width: 100, height: 100_000, depth: 8), ["width", "height", "depth"]),
        (SessionSettings(id: "s", url: ""), ["url"]),
        (SessionSettings(id: "s", browserExecutable: "chromium"), ["browser"]),
    ])
    func settingsProblemsNameTheSetting(settings: SessionSettings, keys: [String]) {
        #expect(settings.problems().map { String($0.prefix { $0 != ":" }) } == keys)
    }

    @Test func portsAreNeverHandedOutTwiceNorWhileSomethingListens() async throws {
        let ports = PortAllocator(range: 29990...29992)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        let bound = withLoopbackAddress(port: 29990) { bind(listener, $0, $1) }
        try #require(bound == 0)
        listen(listener, 1)
        #expect(try await ports.allocate() == 29991, "29990 is in use")
        #expect(try await ports.allocate() == 29992)
        await #expect(throws: PortError.exhausted(29990...29992)) { try await ports.allocate() }
        await ports.release(29991)
        #expect(try await ports.allocate() == 29991)
    }

    @Test func theBrowsersOwnUIPagesAreNotTabs() {
        #expect(BrowserWatch.isTab(["type": "page", "url": "https://example.com"]))
        #expect(BrowserWatch.isTab(["type": "page", "url": "chrome://version"]), "a blocked chrome:// tab is still a tab")
        #expect(!BrowserWatch.isTab(["type": "page", "url": "chrome://omnibox-popup.top-chrome/"]))
        #expect(!BrowserWatch.isTab(["type": "service_worker", "url": "https://example.com/sw.js"]))
    }

    @Test func browserPagesAreToldFromTheKioskAndItsErrors() {
        for url in ["chrome://newtab/", "chrome://settings", "chrome-search://local-ntp/", "about:version", "ABOUT:settings", "devtools://devtools/x",
                    "view-source:https://example.com"] {
            #expect(BrowserWatch.isBrowserPage(url), "\(url)")
        }
        for url in ["https://example.com/", "about:blank", "about:blank#x", "data:text/html,x", "chrome-error://chromewebdata/", ""] {
            #expect(!BrowserWatch.isBrowserPage(url), "\(url)")
        }
    }

    @Test func thePortGuardResetsOnlyOtherUsersConnectsToTheSessionPorts() {
        let guardSpec = PortGuard(ports: 20000...29999, allowedUIDs: [1500, 0], allowedGIDs: [2000])
        let rules = guardSpec.ruleset(daemonUID: 998)
        #expect(guardSpec.table == "kioskd_20000_29999")
        let match = "oif \"lo\" tcp dport 20000-29999 tcp flags & (syn | ack) == syn"
        #expect(rules.contains("\(match) meta skuid { 0, 998, 1500 } accept"), "root, the daemon and the allowed, once each")
        #expect(rules.contains("\(match) meta skgid { 2000 } accept"))
        #expect(rules.contains("\(match) counter reject with tcp reset"))
        // Declared, deleted and re-created in one transaction: a leftover table is replaced.
        #expect(rules.hasPrefix("table inet kioskd_20000_29999\ndelete table inet kioskd_20000_29999\ntable inet kioskd_20000_29999 {"))
        #expect(!PortGuard(ports: 1...2).ruleset(daemonUID: 0).contains("skgid"), "no group rule without groups")
    }
}
