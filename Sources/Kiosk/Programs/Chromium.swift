import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Chromium in kiosk mode, with CDP on a loopback port for the agent.
public enum Chromium {
    /// The browser itself: Debian's /usr/bin/chromium is a shell wrapper that adds flags from
    /// /etc/chromium.d and would sit between us and the browser's pid.
    public static let executable = "/usr/lib/chromium/chromium"

    public struct Settings: Sendable, Equatable {
        public var display: Int
        public var authFile: String
        public var width: Int
        public var height: Int
        /// The profile (user data) directory, private to the session.
        public var profileDir: String
        public var cdpPort: Int
        public var url: String
        /// Only when the config explicitly asks: the sandbox is what contains a hostile page.
        public var sandbox: Bool
        /// Below ~1 GiB of /dev/shm Chromium's renderers crash on big pages; use /tmp instead.
        public var useDevShm: Bool
        public var executable: String

        public init(display: Int, authFile: String, width: Int, height: Int, profileDir: String, cdpPort: Int, url: String,
                    sandbox: Bool = true, useDevShm: Bool = Chromium.devShmIsLarge(), executable: String = Chromium.executable) {
            self.display = display
            self.authFile = authFile
            self.width = width
            self.height = height
            self.profileDir = profileDir
            self.cdpPort = cdpPort
            self.url = url
            self.sandbox = sandbox
            self.useDevShm = useDevShm
            self.executable = executable
        }
    }

    public static func arguments(_ s: Settings) -> [String] {
        var args = [
            "--kiosk",
            "--user-data-dir=\(s.profileDir)",
            // CDP binds loopback by default; the port is the session's own.
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=\(s.cdpPort)",
            // Chromium refuses CDP WebSockets that carry an Origin; the session's watch (NIO's
            // client) sends this one. Pages have http(s) origins and stay refused.
            "--remote-allow-origins=ws://127.0.0.1",
            "--ozone-platform=x11",
            "--window-position=0,0",
            "--window-size=\(s.width),\(s.height)",
            "--no-first-run",
            "--no-default-browser-check",
            // No keyring prompt window on a display nobody can type a password into.
            "--password-store=basic",
            // Xvfb has no GPU; software compositing without the GPU process's probing.
            "--disable-gpu",
            // Replaces the removed --disable-session-crashed-bubble after a kill -9.
            "--hide-crash-restore-bubble",
            "--noerrdialogs",
            // The WebUI omnibox popups (a kiosk has no omnibox) are hidden page targets: blocked
            // by policy they show an error page, and an agent taking `context.pages[0]` got one
            // (clicks "outside of the viewport", screenshots that never come).
            "--disable-features=Translate,MediaRouter,DialMediaRouteProvider,WebUIOmniboxPopup,WebUIOmniboxAimPopup",
            "--disable-component-update",
            "--disable-sync",
        ]
        if !s.useDevShm { args.append("--disable-dev-shm-usage") }
        if !s.sandbox { args.append("--no-sandbox") }
        args.append(s.url)
        return args
    }

    /// The locks a Chromium leaves in its profile; after a SIGKILL they block the next launch.
    static let singletonFiles = ["SingletonLock", "SingletonSocket", "SingletonCookie"]

    public static func childSpec(_ s: Settings, credentials: Credentials?, environment: [String: String], logger: Logger) -> ChildSpec {
        if !s.sandbox {
            logger.warning("Chromium runs WITHOUT its sandbox (config asked for it): a hostile page can reach the host",
                           metadata: ["display": ":\(s.display)"])
        }
        let profile = s.profileDir
        return ChildSpec(
            id: "chromium",
            kind: .process(ProcessSpec(
                executable: s.executable, arguments: arguments(s),
                environment: environment.merging(x11Environment(display: s.display, authFile: s.authFile)) { $1 },
                workingDirectory: profile, credentials: credentials,
                ringLines: 400,
                beforeLaunch: {
                    // Only this session's supervisor runs Chromium on this profile, and the
                    // previous incarnation's processes are gone by now: the locks are stale.
                    for name in singletonFiles { unlink(profile + "/" + name) }
                })),
            restart: .permanent,
            shutdown: .timeout(.seconds(5)),
            readiness: .http(host: "127.0.0.1", port: s.cdpPort, path: "/json/version"),
            readyTimeout: .seconds(30))
    }

    /// Whether /dev/shm has room for Chromium's shared memory (Docker's default is 64 MiB).
    public static func devShmIsLarge(minimum: UInt64 = 1 << 30) -> Bool {
        var fs = statvfs()
        guard statvfs("/dev/shm", &fs) == 0 else { return false }
        return UInt64(fs.f_bavail) * UInt64(fs.f_frsize) >= minimum
    }
}
