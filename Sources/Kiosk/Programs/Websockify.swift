import Supervision

/// websockify: a WebSocket → x11vnc relay, run only when the bridge mode is `websockify` (the
/// built-in bridge needs no extra process).
///
/// It can only listen on TCP (its inetd mode mistakes a Unix socket's peer for an IPv4 one), so
/// the port is guarded twice: the host's port guard refuses other users' connects, and an auth
/// plugin refuses any upgrade without the session's secret, which only the bridge sends.
public enum Websockify {
    public static let executable = "/usr/bin/websockify"

    public struct Settings: Sendable, Equatable {
        /// Loopback port websockify listens on.
        public var port: Int
        /// x11vnc's Unix socket.
        public var vncSocket: String
        /// The file holding the session's secret (0600, the session user's).
        public var secretFile: String
        /// Where `pluginModule` is written, put on websockify's PYTHONPATH.
        public var pluginDirectory: String

        public init(port: Int, vncSocket: String, secretFile: String, pluginDirectory: String) {
            self.port = port
            self.vncSocket = vncSocket
            self.secretFile = secretFile
            self.pluginDirectory = pluginDirectory
        }
    }

    public static let pluginModule = "kioskd_websockify_auth"

    /// The auth plugin (websockify's `--auth-plugin` API): an upgrade must carry
    /// `Authorization: Bearer <secret>`, compared in constant time; anything else gets 403
    /// before websockify connects to x11vnc.
    public static let pluginSource = """
        import hmac
        from websockify.auth_plugins import AuthenticationError


        class SessionSecret:
            def __init__(self, src):
                with open(src, 'rb') as f:
                    self.expected = b'Bearer ' + f.read().strip()

            def authenticate(self, headers, target_host, target_port):
                got = (headers.get('Authorization') or '').encode('latin-1', 'replace')
                if not hmac.compare_digest(got, self.expected):
                    raise AuthenticationError(response_code=403, response_msg='Forbidden')

        """

    public static func arguments(_ s: Settings) -> [String] {
        ["--unix-target=\(s.vncSocket)",
         "--auth-plugin=\(pluginModule).SessionSecret", "--auth-source=\(s.secretFile)",
         "127.0.0.1:\(s.port)"]
    }

    public static func childSpec(_ s: Settings, credentials: Credentials?, environment: [String: String]) -> ChildSpec {
        ChildSpec(
            id: "websockify",
            kind: .process(ProcessSpec(executable: executable, arguments: arguments(s),
                                       environment: environment.merging(["PYTHONPATH": s.pluginDirectory]) { $1 },
                                       credentials: credentials)),
            restart: .permanent,
            shutdown: .timeout(.seconds(2)),
            readiness: .tcp(host: "127.0.0.1", port: s.port),
            readyTimeout: .seconds(10))
    }
}
