import Supervision

/// x11vnc: serves the session's display over RFB on a loopback port, for the bridge.
public enum X11VNC {
    public static let executable = "/usr/bin/x11vnc"
    /// What RFB 3.8 servers greet with; the readiness probe waits for it.
    public static let banner = "RFB 003.008"

    /// What viewers may do. The bridge enforces roles too; this is the second layer.
    public enum Input: String, Sendable, CaseIterable {
        /// Nothing from viewers reaches the display.
        case viewOnly = "view"
        /// Keys, mouse motion and buttons (x11vnc's `KMB`: without B clicks are dropped).
        case control
    }

    public struct Settings: Sendable, Equatable {
        public var display: Int
        public var authFile: String
        public var port: Int
        public var input: Input

        public init(display: Int, authFile: String, port: Int, input: Input) {
            self.display = display
            self.authFile = authFile
            self.port = port
            self.input = input
        }
    }

    /// With a huge RLIMIT_NOFILE x11vnc spends minutes per connect closing fds
    /// (docker-selenium #2045).
    static let openFiles: UInt64 = 8192

    public static func arguments(_ s: Settings) -> [String] {
        var args = [
            "-display", ":\(s.display)",
            "-auth", s.authFile,
            "-localhost", "-rfbport", "\(s.port)",
            "-shared", "-forever",
            // No clipboard in either direction, no selections.
            "-nosel", "-noclipboard", "-nosetclipboard", "-noprimary", "-nosetprimary",
            // ncache keeps old screen contents below the visible area, where a viewer can see them.
            "-ncache", "0",
            "-safer", "-nocmds", "-norc", "-nopw",
            // Screen polling pace: the default (~20 ms) dominates what a viewer feels; 2 ms
            // polls cost CPU per idle session. 5 ms is the middle (notes/kiosk.md).
            "-wait", "5", "-defer", "5",
        ]
        switch s.input {
        case .viewOnly: args += ["-viewonly"]
        case .control: args += ["-input", "KMB"]
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
            readiness: .tcp(host: "127.0.0.1", port: s.port, banner: banner),
            readyTimeout: .seconds(10))
    }
}
