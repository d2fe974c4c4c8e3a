import Essentials
import Logging
import Supervision
import Synchronization

/// What the watch sees in the browser that no process watcher can: a crashed tab ("Aw, Snap"
/// leaves the browser process alive), a tab gone, a page target nobody expected.
public enum BrowserEvent: Sendable, Equatable, CustomStringConvertible {
    case attached(pages: Int)
    case tabCrashed(targetID: String, status: String)
    case tabReloaded(targetID: String)
    case tabClosed(targetID: String)
    case tabOpened(targetID: String, url: String)
    case unexpectedTarget(targetID: String, type: String, url: String)
    /// The watchdog closed a tab that is not the kiosk tab; `byPage`: the page opened it
    /// (window.open, target=_blank, a modified click).
    case targetClosed(targetID: String, url: String, byPage: Bool)
    /// A tab reached a browser page (the new-tab or home page, chrome://…) by some key or
    /// command, and was sent back to the kiosk's page.
    case returnedHome(targetID: String, from: String)
    /// The lockdown's self-test passed with the browser up: these combinations reached the
    /// grabber and the windows and tabs stayed the same.
    case lockdownVerified(combos: String)

    public var description: String {
        switch self {
        case .attached(let n): "CDP attached (\(n) page\(n == 1 ? "" : "s"))"
        case .tabCrashed(let id, let status): "tab \(id) crashed (\(status))"
        case .tabReloaded(let id): "tab \(id) reloaded after its crash"
        case .tabClosed(let id): "the last tab \(id) was closed"
        case .tabOpened(let id, let url): "opened tab \(id) on \(url)"
        case .unexpectedTarget(let id, let type, let url): "extra \(type) target \(id) (\(url)) left open"
        case .targetClosed(let id, let url, let byPage): "closed \(byPage ? "a tab the page opened" : "an extra tab") \(id) (\(url))"
        case .lockdownVerified(let combos): "lockdown verified against the browser: \(combos)"
        case .returnedHome(let id, let url): "tab \(id) reached \(url): sent back to the kiosk page"
        }
    }
}

/// Which tabs the browser watch closes besides windows the lockdown closes.
public enum TabPolicy: String, Sendable, CaseIterable {
    /// Tabs a CDP client (the agent) creates live; tabs the page opens (window.open,
    /// target=_blank, modified clicks: they have an opener) are closed. Agents open pages all
    /// the time (Playwright's `context.new_page()`), so this is the default.
    case agent
    /// Only the kiosk tab lives: every other tab is closed, the agent's as well.
    case kioskOnly = "kiosk_only"
}

/// An in-process child next to Chromium: attaches to the browser's CDP endpoint, watches the
/// targets, reloads a crashed tab and reopens the home page when the last tab is gone. It is
/// also the tab half of the lockdown's watchdog: a tab other than the kiosk tab is closed.
/// A browser restart only drops the connection: the watch reattaches to the new browser itself,
/// so a Chromium restart does not count twice against the session's budget.
public struct BrowserWatch: Sendable {
    public let cdpPort: Int
    /// The page Chromium's command line opens; a warm session's, until a task takes it.
    public let launchURL: String
    /// The kiosk's page: where a tab that reached a browser page goes back to, and what a
    /// relaunched browser is sent to. A task taking a warm session changes it.
    public let home: KioskHome
    public let tabs: TabPolicy
    /// Run on every attach before the watch counts as ready: the lockdown's self-test against
    /// the running browser. Tabs must be the same afterwards.
    public let verify: (@Sendable () async throws -> String)?
    public let report: @Sendable (BrowserEvent) -> Void
    public let logger: Logger

    public init(cdpPort: Int, homeURL: String, tabs: TabPolicy = .agent, verify: (@Sendable () async throws -> String)? = nil,
                logger: Logger, report: @escaping @Sendable (BrowserEvent) -> Void) {
        self.cdpPort = cdpPort
        self.launchURL = homeURL
        self.home = KioskHome(homeURL)
        self.tabs = tabs
        self.verify = verify
        self.logger = logger
        self.report = report
    }

    public func childSpec() -> ChildSpec {
        ChildSpec(id: "cdp-watch", kind: .task { context in try await run(context) },
                  restart: .permanent, shutdown: .timeout(.seconds(1)), readiness: .signaled, readyTimeout: .seconds(30))
    }

    func run(_ context: TaskChildContext) async throws {
        var delay = Duration.milliseconds(20)
        var attachedTo: String?
        while true {
            try Task.checkCancellation()
            if let url = await browserDebuggerURL(cdpPort: cdpPort) {
                // A new browser (the id in its URL changes with every launch) opened the launch
                // page again; the first one is the session's own start.
                let relaunched = attachedTo != nil && attachedTo != url
                attachedTo = url
                do {
                    try await CDPConnection.connect(url: url, logger: logger) { cdp in try await watch(cdp, context, relaunched: relaunched) }
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

    private func tabs(_ cdp: CDPConnection) async throws -> [String] {
        try await cdp.send("Target.getTargets")["targetInfos"]?.array?.filter(Self.isTab).compactMap { $0["targetId"]?.string } ?? []
    }

    private func watch(_ cdp: CDPConnection, _ context: TaskChildContext, relaunched: Bool) async throws {
        try await cdp.send("Target.setDiscoverTargets", ["discover": true])
        let found = try await tabs(cdp)
        if relaunched, home.url != launchURL {
            // A task took this session from the warm pool: its page, not the pool's blank one.
            for target in try await cdp.send("Target.getTargets")["targetInfos"]?.array ?? []
            where Self.isTab(target) && target["url"]?.string == launchURL {
                if let id = target["targetId"]?.string { try await navigateHome(id, from: launchURL, cdp) }
            }
        }
        var pages = Set(found)
        report(.attached(pages: pages.count))
        if tabs == .kioskOnly {
            for id in found.dropFirst() {
                try await close(id, url: "", byPage: false, cdp)
                pages.remove(id)
            }
        }
        if let verify {
            let tested = try await verify()
            let after = Set(try await tabs(cdp))
            guard after == pages else {
                throw CDPError(description: "tabs changed during the lockdown self-test: \(pages.sorted()) → \(after.sorted())")
            }
            report(.lockdownVerified(combos: tested))
        }
        context.markReady("\(pages.count) page\(pages.count == 1 ? "" : "s")")
        if pages.isEmpty { try await openHome(cdp) }

        for await event in cdp.events {
            let info = event.params["targetInfo"]
            let id = info?["targetId"]?.string ?? event.params["targetId"]?.string ?? ""
            switch event.method {
            case "Target.targetCreated" where info.map(Self.isTab) ?? false:
                let url = info?["url"]?.string ?? ""
                // Discovery also announces the targets that existed before it was enabled. One
                // left on a browser page is sent home: navigating to a WebUI page drops every
                // CDP connection, so the change itself may have gone unseen.
                guard !pages.contains(id) else {
                    if Self.isBrowserPage(url) { try await navigateHome(id, from: url, cdp) }
                    continue
                }
                if !pages.isEmpty {
                    // Opened by the page (window.open, a target=_blank or modified click).
                    let byPage = !(info?["openerId"]?.string ?? "").isEmpty
                    if tabs == .kioskOnly || byPage {
                        try await close(id, url: url, byPage: byPage, cdp)
                        continue
                    }
                    report(.unexpectedTarget(targetID: id, type: "page", url: url))
                }
                pages.insert(id)
            case "Target.targetDestroyed" where pages.contains(id):
                pages.remove(id)
                if pages.isEmpty {
                    report(.tabClosed(targetID: id))
                    try await openHome(cdp)
                }
            case "Target.targetInfoChanged" where pages.contains(id):
                // The lockdown's last layer: whatever key got through, a tab never stays on a
                // browser page.
                let url = info?["url"]?.string ?? ""
                if Self.isBrowserPage(url) { try await navigateHome(id, from: url, cdp) }
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

    /// The browser's own pages, which no kiosk shows: new tab, home, settings, history … and
    /// about: pages other than about:blank. Error pages (chrome-error:) are the kiosk page
    /// failing to load, not a way out: sending them home again would loop.
    public static func isBrowserPage(_ url: String) -> Bool {
        guard let colon = url.firstIndex(of: ":") else { return false }
        let scheme = url[..<colon].lowercased()
        if scheme == "about" { return !url.lowercased().hasPrefix("about:blank") }
        return ["chrome", "chrome-untrusted", "chrome-search", "chrome-native", "devtools", "view-source"].contains(scheme)
    }

    private func navigateHome(_ target: String, from url: String, _ cdp: CDPConnection) async throws {
        let session = try await cdp.send("Target.attachToTarget", ["targetId": .string(target), "flatten": true])["sessionId"]?.string
        guard let session else { throw CDPError(description: "attachToTarget gave no session") }
        try await cdp.send("Page.navigate", ["url": .string(home.url)], session: session)
        try await cdp.send("Target.detachFromTarget", ["sessionId": .string(session)])
        report(.returnedHome(targetID: target, from: url))
    }

    private func reload(_ target: String, _ cdp: CDPConnection) async throws {
        let session = try await cdp.send("Target.attachToTarget", ["targetId": .string(target), "flatten": true])["sessionId"]?.string
        guard let session else { throw CDPError(description: "attachToTarget gave no session") }
        try await cdp.send("Page.reload", [:], session: session)
        try await cdp.send("Target.detachFromTarget", ["sessionId": .string(session)])
        report(.tabReloaded(targetID: target))
    }

    private func close(_ id: String, url: String, byPage: Bool, _ cdp: CDPConnection) async throws {
        do {
            try await cdp.send("Target.closeTarget", ["targetId": .string(id)])
            report(.targetClosed(targetID: id, url: url, byPage: byPage))
        } catch let error as CDPError {
            // Already gone (the X watchdog closed its window first): nothing left to close.
            logger.debug("closing a tab", metadata: ["target": "\(id)", "reason": "\(error)"])
        }
    }

    private func openHome(_ cdp: CDPConnection) async throws {
        let url = home.url
        let id = try await cdp.send("Target.createTarget", ["url": .string(url)])["targetId"]?.string ?? ""
        report(.tabOpened(targetID: id, url: url))
    }

    /// Makes `url` the kiosk's page and loads it in the kiosk tab (a warm session given to a
    /// task): returns once its load event fired (or `loadTimeout` passed: a slow page is the
    /// task's, as on a cold start), with the pool's blank page gone from the tab's history.
    public func open(_ url: String, loadTimeout: Duration = .seconds(10)) async throws {
        home.url = url
        guard let browser = await browserDebuggerURL(cdpPort: cdpPort) else { throw CDPError(description: "the browser does not answer CDP") }
        try await CDPConnection.connect(url: browser, logger: logger) { cdp in
            let targets = try await cdp.send("Target.getTargets")["targetInfos"]?.array ?? []
            guard let tab = targets.first(where: Self.isTab)?["targetId"]?.string else { throw CDPError(description: "the browser has no tab") }
            let attached = try await cdp.send("Target.attachToTarget", ["targetId": .string(tab), "flatten": true])["sessionId"]?.string
            guard let session = attached else { throw CDPError(description: "attachToTarget gave no session") }
            try await cdp.send("Page.enable", [:], session: session)
            let navigated = try await cdp.send("Page.navigate", ["url": .string(url)], session: session)
            if let failure = navigated["errorText"]?.string { logger.warning("the task's page failed to load", metadata: ["url": "\(url)", "error": "\(failure)"]) }
            _ = try? await withTimeout(loadTimeout, "the page's load") {
                for await event in cdp.events where event.method == "Page.loadEventFired" && event.sessionID == session { return }
                throw CDPError(description: "the CDP connection ended")
            }
            // Closing the connection detaches the session: no detach round trip.
            try await cdp.send("Page.resetNavigationHistory", [:], session: session)
        }
    }
}

/// The kiosk's page, shared by the watch's loops and whoever changes it.
public final class KioskHome: Sendable {
    private let value: Mutex<String>

    public init(_ url: String) { value = Mutex(url) }

    public var url: String {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
