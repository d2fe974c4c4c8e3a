import Logging
import Supervision

/// What the watch sees in the browser that no process watcher can: a crashed tab ("Aw, Snap"
/// leaves the browser process alive), a tab gone, a page target nobody expected.
public enum BrowserEvent: Sendable, Equatable, CustomStringConvertible {
    case attached(pages: Int)
    case tabCrashed(targetID: String, status: String)
    case tabReloaded(targetID: String)
    case tabClosed(targetID: String)
    case tabOpened(targetID: String, url: String)
    case unexpectedTarget(targetID: String, type: String, url: String)

    public var description: String {
        switch self {
        case .attached(let n): "CDP attached (\(n) page\(n == 1 ? "" : "s"))"
        case .tabCrashed(let id, let status): "tab \(id) crashed (\(status))"
        case .tabReloaded(let id): "tab \(id) reloaded after its crash"
        case .tabClosed(let id): "the last tab \(id) was closed"
        case .tabOpened(let id, let url): "opened tab \(id) on \(url)"
        case .unexpectedTarget(let id, let type, let url): "unexpected \(type) target \(id) (\(url))"
        }
    }
}

/// An in-process child next to Chromium: attaches to the browser's CDP endpoint, watches the
/// targets, reloads a crashed tab and reopens the home page when the last tab is gone. A
/// browser restart only drops the connection: the watch reattaches to the new browser itself,
/// so a Chromium restart does not count twice against the session's budget.
public struct BrowserWatch: Sendable {
    public let cdpPort: Int
    public let homeURL: String
    public let report: @Sendable (BrowserEvent) -> Void
    public let logger: Logger

    public init(cdpPort: Int, homeURL: String, logger: Logger, report: @escaping @Sendable (BrowserEvent) -> Void) {
        self.cdpPort = cdpPort
        self.homeURL = homeURL
        self.logger = logger
        self.report = report
    }

    public func childSpec() -> ChildSpec {
        ChildSpec(id: "cdp-watch", kind: .task { context in try await run(context) },
                  restart: .permanent, shutdown: .timeout(.seconds(1)), readiness: .signaled, readyTimeout: .seconds(30))
    }

    func run(_ context: TaskChildContext) async throws {
        var delay = Duration.milliseconds(20)
        while true {
            try Task.checkCancellation()
            if let url = await browserDebuggerURL(cdpPort: cdpPort) {
                do {
                    try await CDPConnection.connect(url: url, logger: logger) { cdp in try await watch(cdp, context) }
                    delay = .milliseconds(20)
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    logger.debug("CDP watch reconnecting", metadata: ["reason": "\(error)"])
                }
            }
            // The browser is (re)starting: its endpoint is not up yet, or the old id is gone.
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .milliseconds(500))
        }
    }

    private func watch(_ cdp: CDPConnection, _ context: TaskChildContext) async throws {
        try await cdp.send("Target.setDiscoverTargets", ["discover": true])
        var pages: Set<String> = []
        for info in try await cdp.send("Target.getTargets")["targetInfos"]?.array ?? [] where Self.isTab(info) {
            if let id = info["targetId"]?.string { pages.insert(id) }
        }
        report(.attached(pages: pages.count))
        context.markReady("\(pages.count) page\(pages.count == 1 ? "" : "s")")
        if pages.isEmpty { try await openHome(cdp) }

        for await event in cdp.events {
            let info = event.params["targetInfo"]
            let id = info?["targetId"]?.string ?? event.params["targetId"]?.string ?? ""
            switch event.method {
            case "Target.targetCreated" where info.map(Self.isTab) ?? false:
                // Discovery also announces the targets that existed before it was enabled.
                guard !pages.contains(id) else { continue }
                if !pages.isEmpty {
                    report(.unexpectedTarget(targetID: id, type: "page", url: info?["url"]?.string ?? ""))
                }
                pages.insert(id)
            case "Target.targetDestroyed" where pages.contains(id):
                pages.remove(id)
                if pages.isEmpty {
                    report(.tabClosed(targetID: id))
                    try await openHome(cdp)
                }
            case "Target.targetCrashed" where pages.contains(id):
                report(.tabCrashed(targetID: id, status: event.params["status"]?.string ?? "crashed"))
                try await reload(id, cdp)
            default:
                break
            }
        }
    }

    /// Whether a CDP TargetInfo is a tab: a page target that is not part of the browser's own
    /// UI (the omnibox popup is a hidden WebUI page on a `*.top-chrome` host).
    public static func isTab(_ info: JSONValue) -> Bool {
        guard info["type"]?.string == "page", let url = info["url"]?.string else { return false }
        return !(url.hasPrefix("chrome://") && url.split(separator: "/").dropFirst().first?.hasSuffix(".top-chrome") == true)
    }

    private func reload(_ target: String, _ cdp: CDPConnection) async throws {
        let session = try await cdp.send("Target.attachToTarget", ["targetId": .string(target), "flatten": true])["sessionId"]?.string
        guard let session else { throw CDPError(description: "attachToTarget gave no session") }
        try await cdp.send("Page.reload", [:], session: session)
        try await cdp.send("Target.detachFromTarget", ["sessionId": .string(session)])
        report(.tabReloaded(targetID: target))
    }

    private func openHome(_ cdp: CDPConnection) async throws {
        let id = try await cdp.send("Target.createTarget", ["url": .string(homeURL)])["targetId"]?.string ?? ""
        report(.tabOpened(targetID: id, url: homeURL))
    }
}
