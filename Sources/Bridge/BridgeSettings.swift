/// The public listener's rules (config `public.*`).
public struct BridgeSettings: Sendable, Equatable {
    /// Origins (`https://app.example.com`) allowed to open the bridge from a browser. Empty: only
    /// the listener's own origin (same Host), and clients that send no Origin.
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
    /// Where Debian's noVNC lives.
    public var noVNCDirectory = "/usr/share/novnc"

    public init() {}
}

/// Where a task's viewers are relayed to: x11vnc directly, or the session's websockify.
public struct BridgeTarget: Sendable {
    public var vncPort: Int
    public var websockifyPort: Int?
    /// Releases keys and buttons a departing controlling viewer held.
    public var releaseInput: @Sendable () async -> Void

    public init(vncPort: Int, websockifyPort: Int?, releaseInput: @escaping @Sendable () async -> Void) {
        self.vncPort = vncPort
        self.websockifyPort = websockifyPort
        self.releaseInput = releaseInput
    }
}
