import Supervision

/// Xvfb: the session's virtual screen.
public enum Xvfb {
    public static let executable = "/usr/bin/Xvfb"
    /// The fd on which Xvfb writes its display number once it accepts connections.
    static let displayFD: Int32 = 3

    public struct Settings: Sendable, Equatable {
        public var display: Int
        public var width = 1280
        public var height = 800
        public var depth = 24
        /// The session's Xauthority file (`XAuthority.write`).
        public var authFile: String

        public init(display: Int, authFile: String, width: Int = 1280, height: Int = 800, depth: Int = 24) {
            self.display = display
            self.authFile = authFile
            self.width = width
            self.height = height
            self.depth = depth
        }
    }

    public static func arguments(_ s: Settings) -> [String] {
        [
            ":\(s.display)",
            // Ready only once it accepts connections: the socket file appears ~85 ms earlier.
            "-displayfd", "\(displayFD)",
            "-auth", s.authFile,
            "-nolisten", "tcp",
            "-screen", "0", "\(s.width)x\(s.height)x\(s.depth)",
            // The kiosk's clients come and go (VNC, the grabber): the server must not reset.
            "-noreset",
        ]
    }

    public static func childSpec(_ s: Settings, credentials: Credentials? = nil, environment: [String: String] = ProcessSpec.scrubbed()) -> ChildSpec {
        ChildSpec(
            id: "xvfb",
            kind: .process(ProcessSpec(executable: executable, arguments: arguments(s), environment: environment,
                                       credentials: credentials, notifyFD: displayFD)),
            restart: .permanent,
            shutdown: .timeout(.seconds(2)),
            readiness: .notifyFD,
            readyTimeout: .seconds(10))
    }
}
