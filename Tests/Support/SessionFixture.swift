import Kiosk
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// One allocator of each kind for every test in the process, as the daemon has one for the host.
public let hostDisplays = DisplayAllocator()
public let hostPorts = PortAllocator()

/// The unprivileged user session programs run as in tests (scripts/setup.sh creates it).
public let sessionUserName = "kioskd"

/// A session manager over a private directory, with the host's shared allocators.
public struct SessionFixture: Sendable {
    public let dir: String
    public let manager: SessionManager
    public let recorder = Recorder<(session: String, event: SessionEvent)>(describe: { "\($0.session): \($0.event)" })

    public init(_ name: String = "kioskd-session") async throws {
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

    public func tearDown() async {
        await manager.stopAll(reason: "test over")
        removeTree(dir)
    }

    /// Waits for a supervision event of one session's child.
    public func waitFor(_ what: String, session: String, after: Int = 0, timeout: Duration = .seconds(30),
                 _ match: @escaping @Sendable (SupervisionEvent.Kind) -> Bool) async throws {
        try await recorder.wait(for: what, after: after, timeout: timeout) { e in
            guard e.session == session, case .supervision(let s) = e.event else { return false }
            return match(s.kind)
        }
    }

    public func waitForBrowser(_ what: String, session: String, after: Int = 0, timeout: Duration = .seconds(30),
                        _ match: @escaping @Sendable (BrowserEvent) -> Bool) async throws {
        try await recorder.wait(for: what, after: after, timeout: timeout) { e in
            guard e.session == session, case .browser(let b) = e.event else { return false }
            return match(b)
        }
    }
}

