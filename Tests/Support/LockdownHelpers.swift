import Display
import Kiosk
import Logging

/// The X keysyms a viewer sends for each modifier.
let modifierKeysyms: [Modifiers: UInt32] = [.ctrl: 0xFFE3, .shift: 0xFFE1, .alt: 0xFFE9, .super: 0xFFEB]

/// Types a combination the way a viewer does: modifiers down, key (shifted letters as their
/// upper case, which is what viewers send with Shift held), everything up.
public func typeCombo(_ combo: KeyCombo, _ viewer: RFBClient, at point: (Int, Int)) {
    let mods = Modifiers.names.map(\.0).filter { combo.modifiers.contains($0) }.compactMap { modifierKeysyms[$0] }
    for sym in mods { viewer.key(sym, down: true) }
    switch combo.trigger {
    case .key(let sym, _):
        var keysym = UInt32(sym)
        if combo.modifiers.contains(.shift), (0x61...0x7A).contains(keysym) { keysym -= 0x20 }
        viewer.key(keysym, down: true)
        viewer.key(keysym, down: false)
    case .button(let n):
        viewer.pointer(buttons: UInt8(1 << (n - 1)), x: point.0, y: point.1)
        viewer.pointer(buttons: 0, x: point.0, y: point.1)
    }
    for sym in mods.reversed() { viewer.key(sym, down: false) }
}

/// The combination a lockdown event of `session` blocked, if it is one.
public func blockedCombo(_ e: (session: String, event: SessionEvent), _ session: String) -> String? {
    guard e.session == session, case .lockdown(.blocked(let combo, _)) = e.event else { return nil }
    return combo
}

/// Follows the window manager's client list with `xprop -spy` until it holds one window.
public func waitForKioskWindowAlone(_ info: SessionInfo) async throws {
    let xprop = try systemProgram("/usr/bin/xprop", package: "x11-utils")
    try await waitForLine(xprop, ["-root", "-spy", "_NET_CLIENT_LIST"], environment: ["DISPLAY": info.display, "XAUTHORITY": info.directory + "/Xauthority"],
                          "the kiosk window alone in _NET_CLIENT_LIST") { line in
        line.hasPrefix("_NET_CLIENT_LIST") && line.split(separator: ",").count == 1 && line.contains("0x")
    }
}

/// The browser's tabs, from its CDP endpoint.
public func pageTargets(_ info: SessionInfo) async throws -> [(id: String, url: String)] {
    guard let port = Int(info.cdpURL.split(separator: ":").last ?? ""),
          let url = await browserDebuggerURL(cdpPort: port) else { throw TestFailure("no CDP endpoint at \(info.cdpURL)") }
    return try await CDPConnection.connect(url: url, logger: Logger(label: "test.cdp")) { cdp in
        (try await cdp.send("Target.getTargets")["targetInfos"]?.array ?? []).filter(BrowserWatch.isTab).map {
            (id: $0["targetId"]?.string ?? "", url: $0["url"]?.string ?? "")
        }
    }
}
