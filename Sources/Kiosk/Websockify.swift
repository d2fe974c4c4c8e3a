import Supervision

/// websockify: a WebSocket → TCP relay in front of x11vnc, run only when the bridge mode is
/// `websockify` (the built-in bridge needs no extra process).
public enum Websockify {
    public static let executable = "/usr/bin/websockify"

    public struct Settings: Sendable, Equatable {
        /// Loopback port websockify listens on.
        public var port: Int
        /// x11vnc's loopback port.
        public var vncPort: Int
        /// Static files (noVNC) served on the same port; nil serves none.
        public var webRoot: String?

        public init(port: Int, vncPort: Int, webRoot: String? = nil) {
            self.port = port
            self.vncPort = vncPort
            self.webRoot = webRoot
        }
    }

    public static func arguments(_ s: Settings) -> [String] {
        (s.webRoot.map { ["--web", $0] } ?? []) + ["127.0.0.1:\(s.port)", "127.0.0.1:\(s.vncPort)"]
    }

    public static func childSpec(_ s: Settings, credentials: Credentials?, environment: [String: String]) -> ChildSpec {
        ChildSpec(
            id: "websockify",
            kind: .process(ProcessSpec(executable: executable, arguments: arguments(s), environment: environment, credentials: credentials)),
            restart: .permanent,
            shutdown: .timeout(.seconds(2)),
            readiness: .tcp(host: "127.0.0.1", port: s.port),
            readyTimeout: .seconds(10))
    }
}
