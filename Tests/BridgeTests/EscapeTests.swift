@testable import Bridge
import CX11
import Control
import Essentials
import ViewerInput
import Kiosk
import KioskdTestSupport
import Logging
import Supervision
import Testing
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// The ways out of a session that an attacker tried: keysyms no keyboard has (through the
/// bridge, and straight into x11vnc), and other local users or other sessions' pages reaching
/// a session's ports and sockets.
@Suite("Kiosk escapes", .serialized)
struct EscapeTests {
    let quiet: Logger = { var l = Logger(label: "test.ws"); l.logLevel = .critical; return l }()

    /// Every keysym of the refused ranges that Xlib has a name for (keysymdef.h, XF86keysym.h
    /// and the vendor headers, as XKeysymToString knows them), generated, not listed by hand.
    static let refusedNamedKeysyms: [UInt32] = {
        let ranges: [ClosedRange<UInt32>] = [0xFD00...0xFFFF, 0x1000_0000...0x1000_FFFF, 0x1005_FF00...0x1005_FFFF, 0x1008_FE00...0x1008_FFFF]
        return ranges.joined().filter { !ViewerKeysyms.allows($0) && XKeysymToString(KeySym($0)) != nil }
    }()

    /// A page that marks itself (a navigation or reload loses the mark) and resolves a promise
    /// when the sentinel key 'k' arrives: every key sent before it has been handled by then.
    static let page = "data:text/html,<title>kiosk</title><body style='margin:0;height:100vh'></body>"
    static let arm = "window.mark = 'still-here'; window.sentinel = new Promise(r => addEventListener('keydown', e => { if (e.key == 'k') r('k') })); 'armed'"

    struct Witness: Equatable {
        var pids: [String: Int32]
        var tabs: [String]
        var keymap: Int
    }

    /// What must not change: the session's program pids, the tabs and their URLs, and the
    /// number of keysyms on the keymap (an added keysym would be the x11vnc layer failing).
    func witness(_ h: BridgeHarness, _ id: String) async throws -> Witness {
        let session = try #require(await h.manager.session(id))
        let info = await session.info()
        let tabs = try await withPage(info) { cdp, _ in
            (try await cdp.send("Target.getTargets")["targetInfos"]?.array ?? []).filter(BrowserWatch.isTab).map { $0["url"]?.string ?? "" }
        }
        return Witness(pids: info.pids, tabs: tabs.sorted(), keymap: try await keysymsOnKeymap(info))
    }

    func keysymsOnKeymap(_ info: SessionInfo) async throws -> Int {
        let out = try await runTool("/usr/bin/xmodmap", ["-display", info.display, "-pke"], environment: ["XAUTHORITY": info.directory + "/Xauthority"])
        return out.split(whereSeparator: \.isWhitespace).filter { $0 != "=" && $0 != "keycode" && Int($0) == nil }.count
    }

    /// The sentinel proves every earlier key was handled; then nothing may have changed.
    func expectUntouched(_ h: BridgeHarness, _ id: String, since before: Witness, _ what: String) async throws {
        let session = try #require(await h.manager.session(id))
        #expect(try await withTimeout(.seconds(20), "the sentinel key") {
            try await withPage(await session.info()) { cdp, s in try await evaluate(cdp, s, "window.sentinel") }
        } == "k", "\(what): the sentinel key did not arrive")
        #expect(try await withPage(await session.info()) { cdp, s in try await evaluate(cdp, s, "window.mark") } == "still-here",
                "\(what): the page navigated or reloaded")
        let after = try await witness(h, id)
        #expect(after == before, "\(what): \(before) → \(after)")
        #expect(await session.info().state == .ready)
    }

    /// Presses and releases each keysym, with NumLock off and then on; then the sentinel.
    static func keyEvents(_ keysyms: [UInt32]) -> [[UInt8]] {
        func key(_ k: UInt32, _ down: Bool) -> [UInt8] { [4, down ? 1 : 0, 0, 0, UInt8(k >> 24), UInt8(k >> 16 & 0xFF), UInt8(k >> 8 & 0xFF), UInt8(k & 0xFF)] }
        let numLock: UInt32 = 0xFF7F
        let round = keysyms.flatMap { key($0, true) + key($0, false) }
        return [round, key(numLock, true) + key(numLock, false), round, key(numLock, true) + key(numLock, false),
                key(0x6B, true) + key(0x6B, false)]
    }

    @Test func noKeysymAViewerCanSendLeavesThePageOrReachesTheXServer() async throws {
        let keysyms = Self.refusedNamedKeysyms
        #expect(keysyms.count > 300, "XF86, XKB, 3270 and vendor keysyms with names: \(keysyms.count)")
        for must in [0x1008_FF18, 0xFED5, 0x1008_FE01, 0x1008_FE21, 0xFEE0, 0xFD1D] as [UInt32] {
            #expect(keysyms.contains(must), "0x\(String(must, radix: 16)) is generated")
        }
        try await BridgeHarness.with("keysyms") { h in
            let (info, _) = try await h.task("k1", url: Self.page)
            #expect(try await waitForPage(info, url: "data:text/html") == "kiosk")
            let control = try await h.service.tokens.mint(task: "k1", role: .control, ttl: 60).token

            // First layer: the bridge drops them, counts them and tells the task.
            #expect(try await withPage(info) { cdp, s in try await evaluate(cdp, s, Self.arm) } == "armed")
            var before = try await witness(h, "k1")
            try await WebSocketClient.connect(url: h.url + "?task_id=k1&token=\(control)", configuration: .init(maxFrameSize: 1 << 24), logger: quiet) { inbound, outbound, _ in
                var viewer = WSViewer(inbound, outbound)
                let size = try await viewer.handshake()
                for batch in Self.keyEvents(keysyms) { try await viewer.send(batch) }
                try await viewer.roundTrip(size)
                try await outbound.close(.normalClosure, reason: nil)
            }
            try await expectUntouched(h, "k1", since: before, "through the bridge")
            let events = try await h.service.store.events("k1", after: 0, limit: 1000)
            let blocked = events.filter { $0.type == "keysym_blocked" }
            #expect(!blocked.isEmpty && blocked.count <= 10, "rate-limited keysym_blocked events: \(blocked.count)")
            #expect(blocked.contains { $0.data.contains("0x1008ff18 (xf86_vendor)") } && blocked.contains { $0.data.contains("0xfed5 (xkb_action)") })

            // Second layer: the same keysyms straight into x11vnc (as kioskd reaches it) find no
            // key on the keymap, and x11vnc adds none.
            #expect(try await withPage(info) { cdp, s in try await evaluate(cdp, s, Self.arm) } == "armed")
            before = try await witness(h, "k1")
            try await blocking {
                let direct = try RFBClient(socket: info.vncSocket)
                defer { direct.close() }
                for batch in Self.keyEvents(keysyms) { for i in stride(from: 0, to: batch.count, by: 8) { direct.key(batch[i..<(i + 8)]) } }
                try direct.firstFramebufferUpdate()
            }
            try await expectUntouched(h, "k1", since: before, "straight into x11vnc")
        }
    }

    @Test func aTabThatReachesABrowserPageIsSentBackToTheKioskPage() async throws {
        try await BridgeHarness.with("home") { h in
            let (info, _) = try await h.task("h1", url: Self.page)
            #expect(try await waitForPage(info, url: "data:text/html") == "kiosk")
            let session = try #require(await h.manager.session("h1"))
            let events = session.events.subscribe()
            // What XF86HomePage or Alt+Home would do if a key got through: the new-tab page.
            _ = try await withPage(info) { cdp, s in try await cdp.send("Page.navigate", ["url": "chrome://newtab/"], session: s) }
            // Chromium resolves chrome://newtab to the new-tab page it serves (a chrome:// URL).
            let from = try await withTimeout(.seconds(20), "the tab sent back") {
                for await event in events { if case .browser(.returnedHome(_, let from)) = event { return from } }
                throw TestFailure("the session's events ended")
            }
            #expect(from.hasPrefix("chrome://"), "\(from)")
            #expect(try await waitForPage(info, url: "data:text/html") == "kiosk")
        }
    }

    @Test func anotherLocalUserOrAnotherSessionsPageReachesNothingASessionOwns() async throws {
        try await BridgeHarness.with("ports", bridge: .websockify, portGuard: true) { h in
            let (a, _) = try await h.task("pa", url: Self.page)
            let (b, _) = try await h.task("pb", url: Self.page)
            let cdpA = try #require(Int(a.cdpURL.split(separator: ":").last ?? ""))
            let wsA = try #require(a.websockifyPort)
            let x11vncA = try #require(a.pids["x11vnc"])
            #expect(tcpListeningPorts(of: x11vncA).isEmpty, "x11vnc listens on no TCP port of either family")

            // As nobody: the socket's directory is closed, the ports refuse at connect.
            let script = """
                import socket, sys
                def tcp(port):
                    s = socket.socket(); s.settimeout(3)
                    try: s.connect(('127.0.0.1', port)); s.sendall(b'GET /json/version HTTP/1.0\\r\\n\\r\\n'); return 'answered:' + s.recv(64).decode('latin-1')
                    except OSError as e: return 'refused:' + type(e).__name__
                def unix(path):
                    s = socket.socket(socket.AF_UNIX); s.settimeout(3)
                    try: s.connect(path); return 'answered:' + s.recv(12).decode('latin-1')
                    except OSError as e: return 'refused:' + type(e).__name__
                print('cdp', tcp(int(sys.argv[1]))); print('websockify', tcp(int(sys.argv[2]))); print('vnc', unix(sys.argv[3]))
                """
            let out = try await runTool("/usr/bin/python3", ["-c", script, "\(cdpA)", "\(wsA)", a.vncSocket], user: Credentials(uid: 65534, gid: 65534))
            for line in out.split(separator: "\n") {
                #expect(line.split(separator: " ").last?.hasPrefix("refused:") == true, "as nobody: \(line)")
            }
            #expect(out.split(separator: "\n").count == 3, "\(out)")

            // From session b's page, served from loopback like the probe's: nothing of a answers.
            let origin = "http://127.0.0.1:\(h.port)/health"
            _ = try await withPage(b) { cdp, s in try await cdp.send("Page.navigate", ["url": .string(origin)], session: s) }
            _ = try await waitForPage(b, url: origin)
            let probe = """
                Promise.all([\(cdpA), \(wsA)].map(p => fetch('http://127.0.0.1:' + p + '/json/version', {mode: 'no-cors'})
                  .then(() => 'reached ' + p, () => 'refused ' + p))).then(r => r.join(','))
                """
            let reached = try await withPage(b) { cdp, s in try await evaluate(cdp, s, probe) }
            #expect(reached == "refused \(cdpA),refused \(wsA)", "from another session's page: \(reached)")

            // The daemon's own paths still work: the bridge (through websockify) and CDP.
            let viewToken = try await h.service.tokens.mint(task: "pa", role: .view, ttl: 60).token
            try await WebSocketClient.connect(url: h.url + "?task_id=pa&token=\(viewToken)", configuration: .init(maxFrameSize: 1 << 24), logger: quiet) { inbound, outbound, _ in
                var viewer = WSViewer(inbound, outbound)
                let size = try await viewer.handshake()
                try await viewer.roundTrip(size)
                try await outbound.close(.normalClosure, reason: nil)
            }
            #expect(try await withPage(a) { cdp, s in try await evaluate(cdp, s, "document.title") } == "kiosk")
        }
    }
}

extension RFBClient {
    /// One KeyEvent message as the test built it.
    func key(_ message: ArraySlice<UInt8>) {
        let keysym = message.dropFirst(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        key(keysym, down: message[message.startIndex + 1] == 1)
    }
}

/// Loopback TCP ports `pid` listens on (IPv4 and IPv6), from /proc: its socket inodes matched
/// against the listening sockets of /proc/net/tcp{,6}.
func tcpListeningPorts(of pid: Int32) -> [Int] {
    let inodes = Set(directoryEntries("/proc/\(pid)/fd").compactMap { fd -> String? in
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/\(pid)/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let target = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.hasPrefix("socket:[") ? String(target.dropFirst(8).dropLast()) : nil
    })
    var ports: [Int] = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in ((try? readText(table)) ?? "").split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            guard f.count > 9, f[3] == "0A", inodes.contains(String(f[9])),
                  let port = Int(f[1].split(separator: ":").last ?? "", radix: 16) else { continue }
            ports.append(port)
        }
    }
    return ports
}
