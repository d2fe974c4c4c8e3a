import Display
import Supervision
import ViewerInput

/// How viewers reach a session's x11vnc.
public enum BridgeMode: String, Sendable, CaseIterable, Codable {
    /// kioskd's own WebSocket bridge (public listener) connects to x11vnc directly.
    case builtin
    /// A websockify process per session relays WebSocket to x11vnc.
    case websockify
}

/// What one session is asked to be.
public struct SessionSettings: Sendable, Equatable {
    /// Names the session's directory, logs and events (`SessionRules.isValidID`).
    public var id: String
    /// The page the kiosk opens (and reopens when its last tab is gone).
    public var url: String
    public var width: Int
    public var height: Int
    public var depth: Int
    public var input: ViewerRole
    public var bridge: BridgeMode
    /// Restarts the session may spend per period before it ends (at each level of its tree:
    /// the display stack, and the browser/VNC group).
    public var budget: Intensity
    /// The browser binary (a Chromium build; Debian's by default).
    public var browserExecutable: String
    /// false only when the config explicitly asks: it is logged as a warning.
    public var sandbox: Bool
    /// What the key grabber holds on the session's display.
    public var grabs: [GrabEntry]
    /// Which tabs the browser watch closes.
    public var tabs: TabPolicy
    /// What the session's cgroup allows it (memory, processes); none by default.
    public var limits: SessionLimits

    public init(id: String, url: String = "about:blank", width: Int = 1280, height: Int = 800, depth: Int = 24,
                input: ViewerRole = .control, bridge: BridgeMode = .builtin,
                budget: Intensity = Intensity(maxRestarts: 5, period: .seconds(60)),
                browserExecutable: String = Chromium.executable, sandbox: Bool = true,
                grabs: [GrabEntry] = GrabList.defaults, tabs: TabPolicy = .agent, limits: SessionLimits = SessionLimits()) {
        self.id = id
        self.url = url
        self.width = width
        self.height = height
        self.depth = depth
        self.input = input
        self.bridge = bridge
        self.budget = budget
        self.browserExecutable = browserExecutable
        self.sandbox = sandbox
        self.grabs = grabs
        self.tabs = tabs
        self.limits = limits
    }

    /// Every problem at once, each naming the setting.
    public func problems() -> [String] {
        var out: [String] = []
        if !SessionRules.isValidID(id) { out.append("id: '\(id)' must be \(SessionRules.idRule)") }
        if !SessionRules.width.contains(width) {
            out.append("width: \(width) must be between \(SessionRules.width.lowerBound) and \(SessionRules.width.upperBound)")
        }
        if !SessionRules.height.contains(height) {
            out.append("height: \(height) must be between \(SessionRules.height.lowerBound) and \(SessionRules.height.upperBound)")
        }
        if ![16, 24].contains(depth) { out.append("depth: \(depth) must be 16 or 24") }
        if !SessionRules.isValidURL(url) { out.append("url: must be \(SessionRules.urlRule)") }
        if budget.maxRestarts < 0 || budget.period <= .zero { out.append("budget: restarts must be ≥ 0 and the period positive") }
        if !browserExecutable.hasPrefix("/") { out.append("browser: '\(browserExecutable)' must be an absolute path") }
        return out
    }
}

extension SessionSettings {
    /// Everything fixed when a session boots but its id and page: a warm session can be given
    /// to a task only if their shapes are the same (size, input, limits …).
    public var shape: String {
        var neutral = self
        neutral.id = ""
        neutral.url = ""
        return String(describing: neutral)
    }
}
