/// The public listener's rules (config `public.*`).
public struct BridgeSettings: Sendable, Equatable {
    /// Origins (`https://app.example.com`) allowed to open the bridge from a browser, besides the
    /// listener's own (same Host), which its /viewer page uses. Clients sending no Origin are
    /// judged by their token alone.
    public var origins: [String] = []
    /// A server ping this often; a viewer that has not answered by the next ping is closed.
    public var pingInterval = Duration.seconds(20)
    /// A connection with no bytes either way for this long is closed.
    public var idleTimeout = Duration.seconds(3600)
    /// No connection lives longer than this.
    public var maxLifetime = Duration.seconds(12 * 3600)
    /// Viewers at once per session; more get 503 before the upgrade.
    public var maxViewers = 10
    /// Whether a control viewer's clipboard reaches the session (never for view).
    public var clipboard = false
    /// Largest WebSocket frame and message accepted from a viewer.
    public var maxFrameSize = 1 << 20
    /// Largest message relayed on a task's CDP endpoint, either way: CDP answers carry whole
    /// screenshots and documents, which Chromium never fragments.
    public var maxAgentMessage = 64 << 20
    /// Where Debian's noVNC lives.
    public var noVNCDirectory = "/usr/share/novnc"
    /// Connections open at once on the listener; beyond it the listener stops accepting until one
    /// closes (new ones wait in the kernel's backlog). nil: derived from the open-file limit.
    public var maxConnections: Int? = nil
    /// Connections open at once from one address; more are answered 429 and closed. nil: a
    /// quarter of `maxConnections` (a load balancer connects from a few addresses).
    public var maxConnectionsPerPeer: Int? = nil
    /// A request head must arrive within this of the connection's start or the previous answer;
    /// a connection idle that long between requests is closed.
    public var headerTimeout = Duration.seconds(10)
    /// A connection that has not become an authenticated viewer within this is closed (after the
    /// answer it is sending, if any).
    public var authTimeout = Duration.seconds(60)
    /// Longest request line (method, path with its query and token, version): longer is 414.
    public var maxRequestLine = 16 * 1024
    /// Most bytes of header fields in one request (and in any one field): more is 431.
    public var maxHeaderBytes = 80 * 1024

    public init() {}
}

/// Where a task's viewers are relayed to: x11vnc directly, or the session's websockify.
public struct BridgeTarget: Sendable {
    /// x11vnc's Unix socket.
    public var vncSocket: String
    /// websockify mode: its loopback port and the secret its auth plugin wants.
    public var websockify: (port: Int, secret: String)?
    /// Releases keys and buttons a departing controlling viewer held.
    public var releaseInput: @Sendable () async -> Void
    /// The browser's own CDP WebSocket URL (`webSocketDebuggerUrl`, loopback; it changes with
    /// every launch), nil while the browser does not answer; nil: no CDP endpoint.
    public var browser: (@Sendable () async -> String?)?

    public init(vncSocket: String, websockify: (port: Int, secret: String)?, browser: (@Sendable () async -> String?)? = nil,
                releaseInput: @escaping @Sendable () async -> Void) {
        self.vncSocket = vncSocket
        self.websockify = websockify
        self.browser = browser
        self.releaseInput = releaseInput
    }
}
