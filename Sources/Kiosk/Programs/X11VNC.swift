import Supervision
import ViewerInput

/// x11vnc: serves the session's display over RFB on a Unix socket in the session's 0700
/// directory, for the bridge. No TCP port: any local user (or a page, through x11vnc's own
/// WebSocket support) could connect to one and get the session with no token and no filter.
public enum X11VNC {
    public static let executable = "/usr/bin/x11vnc"
    /// What RFB 3.8 servers greet with; the readiness probe waits for it.
    public static let banner = "RFB 003.008"

    public struct Settings: Sendable, Equatable {
        public var display: Int
        public var authFile: String
        /// The Unix socket it listens on; only the session's user and root can reach it.
        public var socket: String
        public var input: ViewerRole

        public init(display: Int, authFile: String, socket: String, input: ViewerRole) {
            self.display = display
            self.authFile = authFile
            self.socket = socket
            self.input = input
        }
    }

    /// With a huge RLIMIT_NOFILE x11vnc spends minutes per connect closing fds
    /// (docker-selenium #2045).
    static let openFiles: UInt64 = 8192

    /// Screen polling every 5 ms, and an update sent as soon as it is asked for. The defaults
    /// (20/20) made a viewer wait ~120 ms for a 1×1 update, and `-defer 5` still ~11 ms: the
    /// defer only delays the answer to a request, since libvncserver sends one update per
    /// request anyway. `-wait 2` doubles the idle cost for nothing a viewer asks for (measured,
    /// docs/notes/input-and-local-access.md).
    public static let pacing = ["-wait", "5", "-defer", "0"]

    public static func arguments(_ s: Settings) -> [String] {
        var args = [
            "-display", ":\(s.display)",
            "-auth", s.authFile,
            // Only the Unix socket (x11vnc removes a stale one): port 0 turns IPv4 TCP off, and
            // IPv6 listens on [::]:5900 unless turned off on its own.
            "-unixsock", s.socket, "-rfbport", "0", "-rfbportv6", "-1", "-noipv6",
            "-shared", "-forever",
            // No clipboard in either direction, no selections.
            "-nosel", "-noclipboard", "-nosetclipboard", "-noprimary", "-nosetprimary",
            // ncache keeps old screen contents below the visible area, where a viewer can see them.
            "-ncache", "0",
            "-safer", "-nocmds", "-norc", "-nopw",
            // A keysym missing from the keymap is not added to a spare keycode: the lockdown
            // takes action keysyms off the keymap, and this keeps them off (ViewerKeysyms).
            "-noadd_keysyms",
        ] + pacing
        switch s.input {
        case .view: args += ["-viewonly"]
        case .control: args += ["-input", "KMB"]  // without B, x11vnc drops clicks
        }
        return args
    }

    /// Whether an output line is x11vnc's report that a viewer disconnected ("Client <host>
    /// gone"): it is the only report of it, and `-quiet` would hide it.
    public static func isViewerGone(_ line: String) -> Bool {
        let words = line.split(separator: " ")
        return words.count >= 3 && words[words.count - 1] == "gone" && words[words.count - 3] == "Client"
    }

    /// `viewerGone` runs when a viewer disconnects (on the reactor thread: it must be quick).
    /// x11vnc narrates each client and poll: its lines are logged at debug and kept in the ring.
    public static func childSpec(_ s: Settings, credentials: Credentials?, environment: [String: String],
                                 viewerGone: (@Sendable () -> Void)? = nil) -> ChildSpec {
        var onLine: (@Sendable (String) -> Void)?
        if let viewerGone {
            onLine = { line in if isViewerGone(line) { viewerGone() } }
        }
        return ChildSpec(
            id: "x11vnc",
            kind: .process(ProcessSpec(executable: executable, arguments: arguments(s),
                                       environment: environment.merging(["XAUTHORITY": s.authFile]) { $1 },
                                       credentials: credentials,
                                       rlimits: [ResourceLimit(.nofile, soft: openFiles)],
                                       outputLevel: .debug,
                                       onLine: onLine)),
            restart: .permanent,
            shutdown: .timeout(.seconds(2)),
            // The probe speaks RFB first, as a viewer does, so libvncserver greets it at once
            // instead of sniffing a silent client for 100 ms (docs/notes/cgroups-and-cold-start.md).
            readiness: .unixSocket(path: s.socket, banner: banner, hello: banner + "\n"),
            readyTimeout: .seconds(10))
    }
}
