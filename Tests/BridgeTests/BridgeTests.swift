@testable import Bridge
import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Logging
import NIOCore
import NIOSSL
import Store
import Supervision
import JWTKit
import Testing
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// The public listener against real sessions: auth before the upgrade, roles through the real
/// x11vnc, liveness, limits, noVNC in a real browser, websockify mode.
@Suite("VNC bridge", .serialized)
struct BridgeTests {
    static let red = "data:text/html,<title>kiosk</title><body style='margin:0;background:rgb(200,30,30)'></body>"
    let quiet: Logger = { var l = Logger(label: "test.ws"); l.logLevel = .critical; return l }()
    /// A framebuffer update arrives as one large frame.
    let viewerConfiguration = WebSocketClientConfiguration(maxFrameSize: 1 << 24)

    @Test func everyRefusalIsAStatusWithAJSONBodyBeforeTheUpgrade() async throws {
        try await BridgeHarness.with("auth") { h in
            let (_, token) = try await h.task("a1", url: Self.red)
            let other = try await h.service.tokens.mint(task: "elsewhere", role: .view, ttl: 60).token
            let expired = try await h.service.tokens.mint(task: "a1", role: .view, ttl: 10, now: Date().addingTimeInterval(-3600)).token
            _ = try await h.service.store.create(TaskRecord(id: "waiting", state: .queued, request: "{}", createdAt: 1, updatedAt: 1),
                                                 event: NewEvent(type: "state_changed", time: 1))
            let waiting = try await h.service.tokens.mint(task: "waiting", role: .view, ttl: 60).token
            let nobody = try await h.service.tokens.mint(task: "nobody", role: .view, ttl: 60).token
            let cases: [(String, String?, Int, String)] = [
                ("task_id=a1", nil, 401, "token_missing"),
                ("task_id=a1&token=forged.token.here", nil, 401, "token_invalid"),
                ("task_id=a1&token=\(expired)", nil, 401, "token_invalid"),
                ("task_id=a1&token=\(other)", nil, 403, "token_other_task"),
                ("task_id=a1&token=\(token)&role=control", nil, 403, "token_other_role"),
                ("task_id=a1&token=\(token)", "https://evil.example", 403, "origin_not_allowed"),
                ("task_id=nobody&token=\(nobody)", nil, 404, "task_not_found"),
                ("task_id=waiting&token=\(waiting)", nil, 503, "session_not_ready"),
                ("token=\(token)", nil, 400, "invalid_request"),
            ]
            for (query, origin, status, code) in cases {
                let answer = try h.upgrade(query, origin: origin)
                close(answer.fd)
                #expect(answer.status == status, "\(query.prefix(40)): \(answer.text.prefix(200))")
                #expect(answer.text.contains(#""code":"\#(code)""#) && answer.text.contains("application/json"), "\(answer.text)")
                let tokenText = query.split(separator: "token=").dropFirst().first.map(String.init) ?? ""
                #expect(tokenText.count < 20 || !answer.text.contains(tokenText), "the token is never echoed")
            }
            // Accepted: same origin, and the session_id spelling; `binary` is echoed only when offered.
            let ok = try h.upgrade("session_id=a1&token=\(token)", origin: "http://127.0.0.1:\(h.port)", protocols: "binary")
            close(ok.fd)
            #expect(ok.status == 101 && ok.text.lowercased().contains("sec-websocket-protocol: binary"), "\(ok.text)")
            let plain = try h.upgrade("task_id=a1&token=\(token)")
            close(plain.fd)
            #expect(plain.status == 101 && !plain.text.lowercased().contains("sec-websocket-protocol"))
            // Ended tasks are gone.
            _ = try await h.service.command("a1", .cancel, reason: "done")
            let ended = try h.upgrade("task_id=a1&token=\(token)")
            close(ended.fd)
            #expect(ended.status == 404 && ended.text.contains("task_ended"))
        }
    }

    @Test func theViewRoleCannotTypeOrClickWhileTheControlRoleCan() async throws {
        try await BridgeHarness.with("roles") { h in
            // Modifier-only keys are ignored: the lockdown's self-test presses them at boot.
            let page = "data:text/html,<title>untouched</title><body style='margin:0;height:100vh' "
                + "onkeydown=\"if(event.key.length==1)document.title='typed:'+event.key\" onmousedown=\"document.title='clicked'\"></body>"
            let (info, viewToken) = try await h.task("r1", url: page)
            // Ready means the browser answers; the kiosk page may still be replacing about:blank.
            #expect(try await waitForPage(info, url: "data:text/html") == "untouched")
            let controlToken = try await h.service.tokens.mint(task: "r1", role: .control, ttl: 60).token

            try await WebSocketClient.connect(url: h.url + "?task_id=r1&token=\(viewToken)", configuration: viewerConfiguration, logger: quiet) { inbound, outbound, _ in
                var viewer = WSViewer(inbound, outbound)
                let size = try await viewer.handshake()
                try await viewer.send([4, 1, 0, 0, 0, 0, 0, 0x61, 4, 0, 0, 0, 0, 0, 0, 0x61])   // 'a' down, up
                try await viewer.send([5, 1, 1, 0x90, 1, 0x2C, 5, 0, 1, 0x90, 1, 0x2C])           // click at 400,300
                try await viewer.send([6, 0, 0, 0, 0, 0, 0, 6] + Array("secret".utf8))           // clipboard
                try await viewer.roundTrip(size)
                try await outbound.close(.normalClosure, reason: nil)
            }
            #expect(try await withPage(info) { cdp, s in try await evaluate(cdp, s, "document.title") } == "untouched", "the view role changed the page")

            // The page itself reports the next typed character: a promise set up before the key is
            // sent, awaited after (not polled).
            #expect(try await withPage(info) { cdp, s in
                try await evaluate(cdp, s, "window.typed = new Promise(r => addEventListener('keydown', e => { if (e.key.length == 1) r(e.key) })); 'armed'")
            } == "armed")
            try await WebSocketClient.connect(url: h.url + "?task_id=r1&token=\(controlToken)", configuration: viewerConfiguration, logger: quiet) { inbound, outbound, _ in
                var viewer = WSViewer(inbound, outbound)
                let size = try await viewer.handshake()
                try await viewer.send([4, 1, 0, 0, 0, 0, 0, 0x62, 4, 0, 0, 0, 0, 0, 0, 0x62])   // 'b'
                try await viewer.roundTrip(size)
                try await outbound.close(.normalClosure, reason: nil)
            }
            #expect(try await withTimeout(.seconds(10), "the control role's key to reach the page") {
                try await withPage(info) { cdp, s in try await evaluate(cdp, s, "window.typed") }
            } == "b")
            #expect(try await withPage(info) { cdp, s in try await evaluate(cdp, s, "document.title") } == "typed:b")
            let events = try await h.service.store.events("r1", after: 0, limit: 500)
            #expect(events.filter { $0.type == "viewer_connected" }.count == 2 && events.filter { $0.type == "viewer_disconnected" }.count == 2)
            #expect(events.contains { $0.type == "viewer_disconnected" && $0.data.contains(#""role":"control""#) })
        }
    }

    @Test func deadPeersAreClosedAndTextOrOversizedMessagesRefused() async throws {
        var settings = BridgeSettings()
        settings.pingInterval = .seconds(1)
        settings.maxFrameSize = 64 * 1024
        settings.maxViewers = 2
        try await BridgeHarness.with("liveness", settings: settings) { h in
            let (_, token) = try await h.task("l1", url: Self.red)

            // Upgraded, then silent: it never answers a ping, so the bridge closes it after two.
            let silent = try h.upgrade("task_id=l1&token=\(token)")
            #expect(silent.status == 101)
            let started = ContinuousClock.now
            let frames = serverFrames(silent.fd)
            close(silent.fd)
            #expect(frames.filter { $0.opcode == 9 }.count == 2, "two pings, then the close: \(frames.map(\.opcode))")
            #expect(closeOf(frames).map { $0 == (1001, "ping timeout") } == true, "\(String(describing: closeOf(frames)))")
            #expect(ContinuousClock.now - started < .seconds(8), "a dead peer is dropped within a few ping intervals")

            // The viewer limit (2): two open, the third refused before the upgrade.
            let first = try h.upgrade("task_id=l1&token=\(token)"), second = try h.upgrade("task_id=l1&token=\(token)")
            try await waitUntil("two viewers counted", on: h.service.appended) {
                try await h.service.store.events("l1", after: 0, limit: 500).filter { $0.type == "viewer_connected" }.count >= 3
            }
            let third = try h.upgrade("task_id=l1&token=\(token)")
            #expect(third.status == 503 && third.text.contains("viewer_limit"), "\(third.text)")
            for fd in [first.fd, second.fd, third.fd] { close(fd) }
            try await waitUntil("the two viewers to leave", on: h.service.appended) {
                try await h.service.store.events("l1", after: 0, limit: 500).filter { $0.type == "viewer_disconnected" }.count >= 3
            }

            let text = try await WebSocketClient.connect(url: h.url + "?task_id=l1&token=\(token)", logger: quiet) { inbound, outbound, _ in
                try await outbound.write(.text("hello"))
                for try await _ in inbound {}
            }
            #expect(text?.closeCode == .unacceptableData, "a text frame is refused with 1003: \(String(describing: text))")
            let big = try await WebSocketClient.connect(url: h.url + "?task_id=l1&token=\(token)", configuration: .init(maxFrameSize: 1 << 20),
                                                        logger: quiet) { inbound, outbound, _ in
                try await outbound.write(.binary(ByteBuffer(repeating: 3, count: 200 * 1024)))
                for try await _ in inbound {}
            }
            #expect(big?.closeCode == .messageTooLarge, "an oversized message is refused with 1009: \(String(describing: big))")
        }
    }

    /// x11vnc stopped (SIGSTOP: busy in the extreme, it accepts nothing and greets no one): a
    /// viewer is still greeted, by the bridge, and viewers that come and go one after another,
    /// three times `public.max_viewers` over, each find a place once they have seen their
    /// connection close. Then x11vnc resumes: the viewer greeted meanwhile completes its
    /// handshake through it (x11vnc's own greeting swallowed, the viewer's version forwarded).
    @Test(arguments: [BridgeMode.builtin, .websockify])
    func quickReconnectsFindAPlaceWhateverX11vncIsDoing(mode: BridgeMode) async throws {
        var settings = BridgeSettings()
        settings.maxViewers = 3
        try await BridgeHarness.with(mode == .builtin ? "rc" : "rcw", settings: settings, bridge: mode) { h in
            let (info, token) = try await h.task("q1", url: Self.red)
            guard let x11vnc = info.pids["x11vnc"] else { throw TestFailure("no x11vnc pid: \(info.pids)") }
            let staying = try h.upgrade("task_id=q1&token=\(token)")
            defer { close(staying.fd) }
            #expect(staying.status == 101)
            #expect(kill(x11vnc, SIGSTOP) == 0)
            defer { kill(x11vnc, SIGCONT) }
            for attempt in 1...(3 * settings.maxViewers) {
                let viewer = try h.upgrade("task_id=q1&token=\(token)")
                #expect(viewer.status == 101, "connect \(attempt): \(viewer.text.prefix(200))")
                guard viewer.status == 101 else { close(viewer.fd); break }
                // x11vnc is stopped: this greeting is the bridge's.
                #expect(serverFrame(viewer.fd).map { $0.opcode == 2 && $0.payload == Array("RFB 003.008\n".utf8) } == true, "connect \(attempt): no greeting")
                // A masked close frame (1000), then the bridge's close until it hangs up.
                let closing: [UInt8] = [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2]
                _ = send(viewer.fd, closing, closing.count, Int32(MSG_NOSIGNAL))
                _ = serverFrames(viewer.fd)
                close(viewer.fd)
            }
            #expect(kill(x11vnc, SIGCONT) == 0)
            try await WebSocketClient.connect(url: h.url + "?task_id=q1&token=\(token)", configuration: viewerConfiguration, logger: quiet) { inbound, outbound, _ in
                var viewer = WSViewer(inbound, outbound)
                let size = try await viewer.handshake()
                #expect(size.width == 800 && size.height == 600)
                try await viewer.roundTrip(size)
                try await outbound.close(.normalClosure, reason: nil)
            }
        }
    }

    @Test(arguments: [("idle", Duration.seconds(1), Duration.seconds(3600), "idle"),
                      ("lifetime", Duration.seconds(3600), Duration.seconds(1), "maximum lifetime reached")])
    func theIdleAndLifetimeLimitsCloseTheViewerSaying(name: String, idle: Duration, lifetime: Duration, reason: String) async throws {
        var settings = BridgeSettings()
        settings.idleTimeout = idle
        settings.maxLifetime = lifetime
        try await BridgeHarness.with(name, settings: settings) { h in
            let (_, token) = try await h.task("t-\(name)", url: Self.red)
            let viewer = try h.upgrade("task_id=t-\(name)&token=\(token)")
            #expect(viewer.status == 101)
            let frames = serverFrames(viewer.fd)
            close(viewer.fd)
            #expect(frames.first.map { $0.opcode == 2 && $0.payload == Array("RFB 003.008\n".utf8) } == true, "the greeting came first")
            #expect(closeOf(frames).map { $0 == (1001, reason) } == true, "\(String(describing: closeOf(frames)))")
            try await waitUntil("the disconnect event", on: h.service.appended) {
                try await h.service.store.events("t-\(name)", after: 0, limit: 100).contains { $0.type == "viewer_disconnected" }
            }
        }
    }

    @Test func noVNCInARealBrowserShowsTheKioskThroughTheBridge() async throws {
        try await BridgeHarness.with("novnc") { h in
            let (_, token) = try await h.task("shown", url: Self.red)
            // The viewer's browser is another kiosk session, pointed at the viewer page.
            let viewer = try await h.manager.create(SessionSettings(id: "viewer", url: "http://127.0.0.1:\(h.port)/viewer?task_id=shown&token=\(token)",
                                                                    width: 800, height: 600))
            let info = await viewer.info()
            // noVNC draws into a canvas: a promise in the page checks it on every animation frame
            // (the browser's own paint signal), then lets two more frames reach the screen.
            _ = try await waitForPage(info, url: "http://127.0.0.1:\(h.port)/novnc/")
            #expect(try await withTimeout(.seconds(30), "noVNC's canvas to show the kiosk's colour") {
                try await withPage(info) { cdp, s in try await evaluate(cdp, s, noVNCPaintedTestColour) }
            } == "painted")
            let shot = h.dir + "/viewer.ppm"
            let rc = try await runToExit("/usr/bin/import", ["-display", info.display, "-window", "root", "-depth", "8", shot],
                                         environment: ["PATH": "/usr/bin:/bin", "XAUTHORITY": info.directory + "/Xauthority"])
            #expect(rc == 0)
            let pixels = readSmallFileBytes(shot, limit: 8 << 20) ?? []
            #expect(Self.share(of: (200, 30, 30), in: pixels) > 0.25, "the viewer's screen shows the kiosk's colour")
            let events = try await h.service.store.events("shown", after: 0, limit: 500)
            #expect(events.contains { $0.type == "viewer_connected" && $0.data.contains(#""role":"view""#) })
        }
    }

    @Test func theIdentityProvidersJWTsAreAcceptedWithTheirClaimsChecked() async throws {
        let secret = Array("an-idp-shared-secret-of-32-bytes".utf8)
        let external = try await ExternalTokens(ExternalTokenSettings(hs256Secret: secret, issuer: "https://idp.example", audience: "kioskd-app"))
        try await BridgeHarness.with("jwt", external: external) { h in
            _ = try await h.task("j1", url: Self.red)
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            let later = JSONValue.number(Date().timeIntervalSince1970 + 600)
            let good: [String: JSONValue] = ["iss": "https://idp.example", "aud": "kioskd-app", "exp": later, "kioskd_task": "j1", "kioskd_role": "control"]
            func token(_ claims: [String: JSONValue]) async throws -> String { try await keys.sign(ExternalClaims(claims)) }
            var cognito = good
            cognito["aud"] = nil
            cognito["client_id"] = "kioskd-app"
            cognito["token_use"] = "access"
            let cases: [([String: JSONValue], Int)] = [
                (good, 101), (cognito, 101),
                (good.merging(["iss": "https://other.example"]) { $1 }, 401),
                (good.merging(["exp": .number(Date().timeIntervalSince1970 - 60)]) { $1 }, 401),
                (good.merging(["aud": "someone-else"]) { $1 }, 401),
                (good.merging(["kioskd_task": "j2"]) { $1 }, 403),
                (good.filter { $0.key != "kioskd_task" }, 401),
                (cognito.merging(["token_use": "refresh"]) { $1 }, 401),
            ]
            for (claims, status) in cases {
                let answer = try h.upgrade("task_id=j1&token=\(try await token(claims))")
                close(answer.fd)
                #expect(answer.status == status, "\(claims): \(answer.text.prefix(160))")
            }
            // Signed with another key: refused.
            let stranger = JWTKeyCollection()
            await stranger.add(hmac: HMACKey(from: Array("not-the-shared-secret-0123456789".utf8)), digestAlgorithm: .sha256)
            let forged = try h.upgrade("task_id=j1&token=\(try await stranger.sign(ExternalClaims(good)))")
            close(forged.fd)
            #expect(forged.status == 401)
        }
    }

    @Test func anES256KeyFromAJWKSDocumentIsAccepted() async throws {
        let signing = ES256PrivateKey()
        guard let point = signing.publicKey.parameters else { throw TestFailure("no public key parameters") }
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"idp-1","x":"\#(point.x)","y":"\#(point.y)"}]}"#
        let external = try await ExternalTokens(ExternalTokenSettings(jwks: jwks, issuer: "https://idp.example", audience: "kioskd-app"))
        try await BridgeHarness.with("jwks", external: external) { h in
            _ = try await h.task("e1", url: Self.red)
            let keys = JWTKeyCollection()
            await keys.add(ecdsa: signing, kid: "idp-1")
            let claims: [String: JSONValue] = ["iss": "https://idp.example", "aud": "kioskd-app", "exp": .number(Date().timeIntervalSince1970 + 600),
                                               "kioskd_task": "e1"]
            let accepted = try h.upgrade("task_id=e1&token=\(try await keys.sign(ExternalClaims(claims), kid: "idp-1"))")
            close(accepted.fd)
            #expect(accepted.status == 101, "\(accepted.text.prefix(200))")
            let otherKey = JWTKeyCollection()
            await otherKey.add(ecdsa: ES256PrivateKey(), kid: "idp-1")
            let refused = try h.upgrade("task_id=e1&token=\(try await otherKey.sign(ExternalClaims(claims), kid: "idp-1"))")
            close(refused.fd)
            #expect(refused.status == 401)
        }
    }

    @Test func withACertificateTheListenerServesHTTPSAndWSS() async throws {
        let dir = try makeTempDir("kioskd-tls")
        defer { removeTree(dir) }
        let openssl = try systemProgram("/usr/bin/openssl", package: "openssl")
        #expect(try await runToExit(openssl, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                                              "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem"],
                                    environment: ["PATH": "/usr/bin:/bin"]) == 0)
        let chain = try NIOSSLCertificate.fromPEMFile(dir + "/cert.pem").map { NIOSSLCertificateSource.certificate($0) }
        let context = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain,
                                                                                 privateKey: .privateKey(try NIOSSLPrivateKey(file: dir + "/key.pem", format: .pem))))
        try await BridgeHarness.with("tls", tls: context) { h in
            let (_, token) = try await h.task("t1", url: Self.red)
            let curl = try systemProgram("/usr/bin/curl", package: "curl")
            #expect(try await runToExit(curl, ["-sf", "--cacert", dir + "/cert.pem", "-o", dir + "/health", "https://127.0.0.1:\(h.port)/health"],
                                        environment: ["PATH": "/usr/bin:/bin"]) == 0)
            #expect(try readText(dir + "/health") == #"{"status":"healthy"}"#)
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(dir + "/cert.pem")
            // By name: TLS's SNI carries no IP address.
            try await WebSocketClient.connect(url: "wss://localhost:\(h.port)/api/v1/vnc/ws?task_id=t1&token=\(token)", configuration: viewerConfiguration,
                                              tlsConfiguration: tls, logger: quiet) { inbound, outbound, _ in
                var viewer = WSViewer(inbound, outbound)
                #expect(try await viewer.handshake().width == 800)
                try await outbound.close(.normalClosure, reason: nil)
            }
            let plain = try h.upgrade("task_id=t1&token=\(token)")
            close(plain.fd)
            #expect(plain.status != 101, "plain HTTP is not served on a TLS listener")
        }
    }

    @Test func websockifyModeRelaysThroughTheSessionsWebsockify() async throws {
        try await BridgeHarness.with("websockify", bridge: .websockify) { h in
            let (info, token) = try await h.task("w1", url: Self.red)
            #expect(info.websockifyPort != nil)
            try await WebSocketClient.connect(url: h.url + "?task_id=w1&token=\(token)", configuration: viewerConfiguration, logger: quiet) { inbound, outbound, _ in
                var viewer = WSViewer(inbound, outbound)
                let size = try await viewer.handshake()
                #expect(size.width == 800 && size.height == 600)
                try await viewer.roundTrip(size)
                try await outbound.close(.normalClosure, reason: nil)
            }
            let bad = try h.upgrade("task_id=w1&token=nope")
            close(bad.fd)
            #expect(bad.status == 401, "the same auth in websockify mode")
        }
    }

    /// The share of pixels of a binary PPM (P6, 8-bit) within ±12 of `rgb`.
    static func share(of rgb: (Int, Int, Int), in ppm: [UInt8]) -> Double {
        var fields: [Int] = [], i = 2
        while fields.count < 3, i < ppm.count {
            while i < ppm.count, ppm[i] == 0x20 || ppm[i] == 0x0A { i += 1 }
            var n = 0
            while i < ppm.count, (0x30...0x39).contains(ppm[i]) { n = n * 10 + Int(ppm[i] - 0x30); i += 1 }
            fields.append(n)
        }
        i += 1
        let total = fields.count == 3 ? fields[0] * fields[1] : 0
        guard total > 0, ppm.count >= i + total * 3 else { return 0 }
        var hits = 0
        for p in 0..<total where abs(Int(ppm[i + 3 * p]) - rgb.0) <= 12 && abs(Int(ppm[i + 3 * p + 1]) - rgb.1) <= 12 && abs(Int(ppm[i + 3 * p + 2]) - rgb.2) <= 12 {
            hits += 1
        }
        return Double(hits) / Double(total)
    }
}
