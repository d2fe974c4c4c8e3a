import Kiosk
import KioskdTestSupport
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// One port allocator for every test in the process, like the daemon's for the host.
let hostPorts = PortAllocator()

/// The unprivileged user session programs run as in tests (scripts/setup.sh creates it).
let sessionUserName = "kioskd"

/// A session manager over a private directory, with the host's shared allocators.
struct SessionFixture {
    let dir: String
    let manager: SessionManager
    let recorder = Recorder<(session: String, event: SessionEvent)>(describe: { "\($0.session): \($0.event)" })

    init(_ name: String = "kioskd-session") async throws {
        for (path, package) in [(Xvfb.executable, "xvfb"), (Openbox.executable, "openbox"), (X11VNC.executable, "x11vnc"),
                                (Chromium.executable, "chromium"), (Websockify.executable, "websockify")] {
            _ = try systemProgram(path, package: package)
        }
        guard access("/etc/chromium/policies/managed/kioskd.json", R_OK) == 0 else {
            throw TestFailure("Chromium's kiosk policies are not installed: run scripts/setup.sh (installs config/chromium-policies)")
        }
        dir = try makeTempDir(name)
        let host = SessionHost(sessionsDir: dir + "/sessions", recordsDir: dir + "/records",
                               user: try SessionHost.sessionUser(named: sessionUserName),
                               displays: hostDisplays, ports: hostPorts, logger: { var l = Logger(label: "test"); l.logLevel = .debug; return l }())
        manager = SessionManager(host: host)
        let stream = manager.events.subscribe()
        let recorder = self.recorder
        Task { for await e in stream { recorder.record(e) } }
    }

    func tearDown() async {
        await manager.stopAll(reason: "test over")
        removeTree(dir)
    }

    /// Waits for a supervision event of one session's child.
    func waitFor(_ what: String, session: String, after: Int = 0, timeout: Duration = .seconds(30),
                 _ match: @escaping @Sendable (SupervisionEvent.Kind) -> Bool) async throws {
        try await recorder.wait(for: what, after: after, timeout: timeout) { e in
            guard e.session == session, case .supervision(let s) = e.event else { return false }
            return match(s.kind)
        }
    }

    func waitForBrowser(_ what: String, session: String, after: Int = 0, timeout: Duration = .seconds(30),
                        _ match: @escaping @Sendable (BrowserEvent) -> Bool) async throws {
        try await recorder.wait(for: what, after: after, timeout: timeout) { e in
            guard e.session == session, case .browser(let b) = e.event else { return false }
            return match(b)
        }
    }
}

/// A CDP connection to the session's first page, for driving it the way an agent does.
func withPage<T: Sendable>(_ info: SessionInfo, _ body: @escaping @Sendable (CDPConnection, String) async throws -> T) async throws -> T {
    guard let port = Int(info.cdpURL.split(separator: ":").last ?? ""),
          let url = await browserDebuggerURL(cdpPort: port) else { throw TestFailure("no CDP endpoint at \(info.cdpURL)") }
    return try await CDPConnection.connect(url: url, logger: Logger(label: "test.cdp")) { cdp in
        let targets = try await cdp.send("Target.getTargets")["targetInfos"]?.array ?? []
        guard let page = targets.first(where: BrowserWatch.isTab)?["targetId"]?.string else {
            throw TestFailure("no page target among \(targets)")
        }
        let session = try await cdp.send("Target.attachToTarget", ["targetId": .string(page), "flatten": true])["sessionId"]?.string ?? ""
        return try await body(cdp, session)
    }
}

/// Evaluates an expression in the page, awaiting a promise; returns the value as a string.
func evaluate(_ cdp: CDPConnection, _ session: String, _ expression: String) async throws -> String {
    let result = try await cdp.send("Runtime.evaluate", ["expression": .string(expression), "awaitPromise": true, "returnByValue": true], session: session)
    if let exception = result["exceptionDetails"] { throw TestFailure("page threw: \(exception)") }
    guard let value = result["result"]?["value"] else { return "" }
    return value.string ?? "\(value)"
}

/// A page load that finished: the title once the document is complete.
let loadedTitle = "new Promise(r => document.readyState === 'complete' ? r(document.title) : addEventListener('load', () => r(document.title)))"
