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

