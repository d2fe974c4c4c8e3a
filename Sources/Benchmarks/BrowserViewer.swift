// A real browser as the viewer: a kiosk session's Chromium opens the WebSocket from a page on
// the bridge's origin and counts what arrives, as noVNC receives it (ArrayBuffer messages). The
// browser's own cost per message is part of what a viewer sees, so this row compares the
// bridge and websockify where it matters.
import Kiosk
import KioskdTestSupport
import Logging
import Supervision

struct BrowserViewer {
    let manager: SessionManager
    let info: SessionInfo
    let dir: String

    /// A session showing `page` (the bridge's origin, so its Origin check passes).
    static func start(page: String) async throws -> BrowserViewer {
        let (manager, info, dir) = try await benchSession("bench-viewer", page: page, width: 800, height: 600, displays: 850...899)
        return BrowserViewer(manager: manager, info: info, dir: dir)
    }

    /// MiB/s the page receives from `url` after the RFB greeting, over `bytes` bytes.
    func rate(url: String, bytes: Int) async throws -> Double {
        let hello = rfbHello.map(String.init).joined(separator: ",")
        let script = """
            new Promise((resolve, reject) => {
              const ws = new WebSocket('\(url)', ['binary']);
              ws.binaryType = 'arraybuffer';
              let total = 0, start = 0;
              ws.onmessage = e => {
                if (start === 0) { ws.send(new Uint8Array([\(hello)])); start = performance.now(); return; }
                total += e.data.byteLength;
                if (total >= \(bytes)) { const s = (performance.now() - start) / 1000; ws.close(); resolve(String(total / 1048576 / s)); }
              };
              ws.onclose = e => { if (total < \(bytes)) reject('closed after ' + total + ' bytes: ' + e.code); };
            })
            """
        let answer = try await withPage(info) { cdp, session in
            _ = try await evaluate(cdp, session, loadedTitle)
            return try await evaluate(cdp, session, script)
        }
        guard let rate = Double(answer) else { throw TestFailure("the page answered \(answer)") }
        return rate
    }

    func stop() async {
        await manager.stopAll(reason: "bench over")
        removeTree(dir)
    }
}
