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

        public init(port: Int, vncPort: Int) {
            self.port = port
            self.vncPort = vncPort
        }
    }

    public static func arguments(_ s: Settings) -> [String] {
        ["127.0.0.1:\(s.port)", "127.0.0.1:\(s.vncPort)"]
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
