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

    private init(dir: String, manager: SessionManager) {
        self.dir = dir
        self.manager = manager
    }

    /// A fixture for `body`: its events are recorded beside the body until it ends; then every
    /// session is stopped and the directory removed. `cgroups`: sessions get cgroups detected
    /// under these roots (tagged by the fixture's directory, as the daemon tags by its own).
    public static func with<T>(_ name: String = "kioskd-session", cgroups: CgroupRoots? = nil,
                               _ body: (SessionFixture) async throws -> T) async throws -> T {
        for (path, package) in [(Xvfb.executable, "xvfb"), (Openbox.executable, "openbox"), (X11VNC.executable, "x11vnc"),
                                (Chromium.executable, "chromium"), (Websockify.executable, "websockify")] {
            _ = try systemProgram(path, package: package)
        }
        guard access("/etc/chromium/policies/managed/kioskd.json", R_OK) == 0 else {
            throw TestFailure("Chromium's kiosk policies are not installed: run scripts/setup.sh (installs config/chromium-policies)")
        }
        let dir = try makeTempDir(name)
        defer { removeTree(dir) }
        let logger = { var l = Logger(label: "test"); l.logLevel = .debug; return l }()
        let host = SessionHost(sessionsDir: dir + "/sessions", recordsDir: dir + "/records",
                               user: try SessionHost.sessionUser(named: sessionUserName),
                               displays: hostDisplays, ports: hostPorts,
                               cgroups: cgroups.map { SessionCgroups.detect(tag: dir, logger: logger, roots: $0) }, logger: logger)
        let f = SessionFixture(dir: dir, manager: SessionManager(host: host))
        // Subscribed before the body starts anything, so no event is missed.
        let stream = f.manager.events.subscribe()
        do {
            let result = try await withBackground({ for await e in stream { f.recorder.record(e) } }) { try await body(f) }
            await f.manager.stopAll(reason: "test over")
            return result
        } catch {
            await f.manager.stopAll(reason: "test over")
            throw error
        }
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

