import Essentials
import Kiosk
import Logging
import Supervision

/// A page with this title, painted in one colour the screenshot can find.
public func testPage(_ title: String) -> String {
    "data:text/html,<title>\(title)</title><body style='margin:0;background:rgb(200,30,30)'><h1>\(title)</h1></body>"
}

/// Resolves to 'painted' once noVNC's canvas shows `testPage`'s colour over a quarter of it,
/// checked on every animation frame (the browser's own paint signal), then two more frames.
public let noVNCPaintedTestColour = """
    new Promise(resolve => {
      const check = () => {
        const c = document.querySelector('canvas');
        if (c && c.width > 0) {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let hits = 0;
          for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 200) < 24 && d[i + 1] < 60 && d[i + 2] < 60) hits++;
          if (hits * 4 > d.length / 4) return requestAnimationFrame(() => requestAnimationFrame(() => resolve('painted')));
        }
        requestAnimationFrame(check);
      };
      check();
    })
    """

/// A CDP connection to the session's first page, for driving it the way an agent does.
public func withPage<T: Sendable>(_ info: SessionInfo, _ body: @escaping @Sendable (CDPConnection, String) async throws -> T) async throws -> T {
    try await withPage(cdpURL: info.cdpURL, body)
}

/// The same for a session known by its `cdp_url` only (a daemon's task).
public func withPage<T: Sendable>(cdpURL: String, _ body: @escaping @Sendable (CDPConnection, String) async throws -> T) async throws -> T {
    guard let port = Int(cdpURL.split(separator: ":").last ?? ""),
          let url = await browserDebuggerURL(cdpPort: port) else { throw TestFailure("no CDP endpoint at \(cdpURL)") }
    return try await CDPConnection.connect(url: url, logger: Logger(label: "test.cdp")) { cdp in
        let targets = try await cdp.send("Target.getTargets")["targetInfos"]?.array ?? []
        guard let page = targets.first(where: BrowserWatch.isTab)?["targetId"]?.string else {
            throw TestFailure("no page target among \(targets)")
        }
        let session = try await cdp.send("Target.attachToTarget", ["targetId": .string(page), "flatten": true])["sessionId"]?.string ?? ""
        return try await body(cdp, session)
    }
}

/// Evaluates an expression in the page, awaiting a promise; returns the value as a string.
public func evaluate(_ cdp: CDPConnection, _ session: String, _ expression: String) async throws -> String {
    let result = try await cdp.send("Runtime.evaluate", ["expression": .string(expression), "awaitPromise": true, "returnByValue": true], session: session)
    if let exception = result["exceptionDetails"] { throw TestFailure("page threw: \(exception)") }
    guard let value = result["result"]?["value"] else { return "" }
    return value.string ?? "\(value)"
}

/// A page load that finished: the title once the document is complete.
public let loadedTitle = "new Promise(r => document.readyState === 'complete' ? r(document.title) : addEventListener('load', () => r(document.title)))"

/// Waits on CDP's target events (not by polling) until a tab of the session shows a URL
/// starting with `prefix`: a ready session's tab may still be replacing about:blank. Then waits
/// for that page's load and returns its title.
public func waitForPage(_ info: SessionInfo, url prefix: String, timeout: Duration = .seconds(20)) async throws -> String {
    try await waitForPage(cdpURL: info.cdpURL, url: prefix, timeout: timeout)
}

public func waitForPage(cdpURL: String, url prefix: String, timeout: Duration = .seconds(20)) async throws -> String {
    guard let port = Int(cdpURL.split(separator: ":").last ?? ""),
          let url = await browserDebuggerURL(cdpPort: port) else { throw TestFailure("no CDP endpoint at \(cdpURL)") }
    try await withTimeout(timeout, "a tab at \(prefix)") {
        try await CDPConnection.connect(url: url, logger: Logger(label: "test.cdp")) { cdp in
            // Subscribed before asking: existing targets are announced as created, changes after.
            let events = cdp.events
            _ = try await cdp.send("Target.setDiscoverTargets", ["discover": true])
            for await event in events where event.method == "Target.targetCreated" || event.method == "Target.targetInfoChanged" {
                guard let target = event.params["targetInfo"], BrowserWatch.isTab(target) else { continue }
                if target["url"]?.string?.hasPrefix(prefix) == true { return }
            }
            throw TestFailure("the browser's CDP connection ended")
        }
    }
    return try await withPage(cdpURL: cdpURL) { cdp, session in try await evaluate(cdp, session, loadedTitle) }
}
