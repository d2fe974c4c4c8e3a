import Display
import Logging
import Supervision

/// Everything a session was given: its display, ports and paths. Fixed for the session's life,
/// so every restart of a child reuses them.
public struct SessionLayout: Sendable, Equatable {
    public var display: Int
    public var cdpPort: Int
    /// Only in websockify bridge mode.
    public var websockifyPort: Int?
    /// The session's private root: cookie, profile, TMPDIR, window manager config.
    public var directory: String

    public init(display: Int, cdpPort: Int, websockifyPort: Int?, directory: String) {
        self.display = display
        self.cdpPort = cdpPort
        self.websockifyPort = websockifyPort
        self.directory = directory
    }

    public var authFile: String { directory + "/Xauthority" }
    public var profileDir: String { directory + "/profile" }
    public var tmpDir: String { directory + "/tmp" }
    /// Chromium's singleton socket, the longest socket path a session creates: TMPDIR, then a
    /// directory with a 6-character random suffix (measured: /proc/net/unix).
    static let chromiumSocket = "/tmp/org.chromium.Chromium.XXXXXX/SingletonSocket"
    /// A Unix socket path holds at most 107 bytes (sun_path's 108 with the NUL); Chromium aborts
    /// at start with "Socket path too long" beyond it.
    public static let maxSocketPath = 107

    /// The longest socket path a session directory of this length leads to.
    public static func longestSocketPath(directoryLength: Int) -> Int {
        directoryLength + max(chromiumSocket.utf8.count, "/vnc.sock".utf8.count)
    }

    /// A session's directory under `sessionsDir`: named by its display, which is unique on the
    /// host and short, never by the task id (up to 64 characters) that would push its sockets
    /// past the limit. The task id is in the session's record.
    public static func directory(sessionsDir: String, display: Int) -> String {
        sessionsDir + "/d\(display)"
    }

    /// x11vnc's socket: reachable only through this 0700 directory.
    public var vncSocket: String { directory + "/vnc.sock" }
    /// websockify mode: the secret the bridge sends, and the auth plugin's module directory.
    public var websockifySecretFile: String { directory + "/websockify.secret" }
    public var websockifyPluginDir: String { directory + "/python" }

    /// The variable that marks every process of the session, so a later run's sweeper can find
    /// leftovers by /proc even if the daemon was SIGKILLed.
    public static let markerVariable = "KIOSKD_SESSION"

    /// The environment of every session program: nothing of the daemon's, HOME and TMPDIR in
    /// the session's directory.
    public func environment() -> [String: String] {
        [
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": directory,
            "TMPDIR": tmpDir,
            "XDG_CONFIG_HOME": directory + "/.config",
            "XDG_CACHE_HOME": directory + "/.cache",
            Self.markerVariable: directory,
        ]
    }
}

/// The session's supervision tree:
///
///     <id> (rest_for_one)            budget N in P; spent → the session ends
///     ├─ xvfb
///     ├─ openbox                     (restarts alone)
///     ├─ lockdown                    (in-process key grabber + window watchdog; ready: XTEST self-test)
///     └─ clients (one_for_one)       budget N in P
///        ├─ x11vnc                   (a viewer leaving releases held keys through the lockdown)
///        ├─ websockify               (bridge mode websockify only; after x11vnc, whose socket it serves)
///        ├─ chromium                 (starts with the previous one: it needs neither)
///        └─ cdp-watch                (in-process: tab crashes, extra tabs; ready: self-test again
///                                     with the browser up, windows and tabs unchanged)
///
/// rest_for_one at the top: when Xvfb dies every X client dies with it, so everything after it
/// restarts in order; a client's crash restarts only that client. The lockdown comes before
/// any client, so no window exists before its grabs do. Nothing depends on Openbox (see
/// docs/ARCHITECTURE.md): X clients outlive a window manager, and a new one manages the
/// windows it finds. Chromium is spawned beside x11vnc (or websockify) rather than after it: it
/// is the long start (~1.2 s to CDP), and starting them together costs it nothing measurable
/// (docs/notes/cgroups-and-cold-start.md, 4.1). The watch starts once Chromium answers: it could
/// start with it, but its retry backs off to 500 ms, which would only add to the start.
public enum SessionTree {
    /// The group of X clients (x11vnc, websockify, Chromium, the watch).
    public static let clientsID = "clients"

    public static func spec(_ s: SessionSettings, _ layout: SessionLayout, user: Credentials?,
                            lockdown: LockdownChild?, watch: BrowserWatch?, logger: Logger) -> SupervisorSpec {
        let env = layout.environment()
        // A view-only x11vnc injects nothing, so nothing can be left held.
        let viewerGone = s.input == .control ? lockdown?.viewerGone : nil
        var clients = [
            X11VNC.childSpec(X11VNC.Settings(display: layout.display, authFile: layout.authFile, socket: layout.vncSocket, input: s.input),
                             credentials: user, environment: env, viewerGone: viewerGone),
        ]
        if let port = layout.websockifyPort {
            clients.append(Websockify.childSpec(Websockify.Settings(port: port, vncSocket: layout.vncSocket, secretFile: layout.websockifySecretFile,
                                                                    pluginDirectory: layout.websockifyPluginDir),
                                                credentials: user, environment: env))
        }
        var chromium = Chromium.childSpec(
            Chromium.Settings(display: layout.display, authFile: layout.authFile, width: s.width, height: s.height,
                              profileDir: layout.profileDir, cdpPort: layout.cdpPort, url: s.url, sandbox: s.sandbox,
                              executable: s.browserExecutable),
            credentials: user, environment: env, logger: logger)
        chromium.startsWithPrevious = true
        clients.append(chromium)
        if let watch { clients.append(watch.childSpec()) }

        return SupervisorSpec(strategy: .restForOne, intensity: s.budget, children: [
            Xvfb.childSpec(Xvfb.Settings(display: layout.display, authFile: layout.authFile, width: s.width, height: s.height, depth: s.depth),
                           credentials: user, environment: env),
            restartingAlone(Openbox.childSpec(Openbox.Settings(display: layout.display, authFile: layout.authFile, directory: layout.directory),
                                              credentials: user, environment: env)),
        ] + (lockdown.map { [$0.childSpec()] } ?? []) + [
            // Ready when all its children are: Chromium's own 30 s bound is the longest.
            ChildSpec(id: clientsID, kind: .supervisor(SupervisorSpec(strategy: .oneForOne, intensity: s.budget, children: clients)),
                      readyTimeout: .seconds(60)),
        ])
    }

    /// `spec` with every process in it, at any depth, joining `cgroups` at spawn.
    static func placing(_ spec: SupervisorSpec, in cgroups: [String]) -> SupervisorSpec {
        var spec = spec
        for i in spec.children.indices {
            switch spec.children[i].kind {
            case .process(var process):
                process.cgroups = cgroups
                spec.children[i].kind = .process(process)
            case .supervisor(let nested):
                spec.children[i].kind = .supervisor(placing(nested, in: cgroups))
            case .task:
                break
            }
        }
        return spec
    }

    private static func restartingAlone(_ spec: ChildSpec) -> ChildSpec {
        var spec = spec
        spec.restartsAlone = true
        return spec
    }
}
