/// What a grabbed combination would do in Chromium; the self-test injects one of each.
public enum GrabPurpose: String, Sendable, CaseIterable, Codable {
    /// Closes the browser, its window or its tab.
    case close
    /// Opens a window: new, incognito, guest or another profile.
    case window
    /// Opens, reopens or switches tabs.
    case tab
    /// Developer tools, view-source, the task manager.
    case devtools
    /// Browser pages and menus: history, downloads, bookmarks, settings, the app menu.
    case browserUI = "browser_ui"
    /// Print, save, open-file and feedback dialogs.
    case dialog
    /// Leaves or reloads the page: back, forward, home, reload, address bar.
    case navigate
    /// Switches or leaves the window: Alt+Tab, fullscreen, the X server's own combinations.
    case switchWindow = "switch"
    /// Clicks that open links in a new tab or window, and the back/forward side buttons.
    case mouse
    /// Added by the configuration (`sessions.lockdown.add`).
    case configured
}

/// One grabbed combination and the reason it is grabbed.
public struct GrabEntry: Sendable, Hashable {
    public var combo: KeyCombo
    public var purpose: GrabPurpose
    public var prevents: String

    public init(_ combo: KeyCombo, _ purpose: GrabPurpose, _ prevents: String) {
        self.combo = combo
        self.purpose = purpose
        self.prevents = prevents
    }
}

public enum GrabList {
    /// Every Chromium shortcut (Linux) that closes the browser, opens a window or tab, opens a
    /// browser page, dialog or devtools, leaves the page, or switches windows; and the clicks
    /// that open links elsewhere. `--kiosk` alone stops none of them (notes/kiosk.md).
    public static let defaults: [GrabEntry] = table.map { text, purpose, prevents in
        // The table is fixed and covered by a test: every entry parses.
        GrabEntry(try! KeyCombo(parsing: text), purpose, prevents)
    }

    static let table: [(String, GrabPurpose, String)] = [
        ("Ctrl+W", .close, "closes the tab; on the last tab, the browser"),
        ("Ctrl+F4", .close, "closes the tab"),
        ("Ctrl+Shift+W", .close, "closes the window"),
        ("Alt+F4", .close, "closes the window (Chromium handles it itself)"),
        ("Ctrl+Q", .close, "quits the browser"),
        ("Ctrl+Shift+Q", .close, "quits the browser"),
        ("Ctrl+N", .window, "opens a full browser window with address bar"),
        ("Ctrl+Shift+N", .window, "opens an incognito window"),
        ("Ctrl+Shift+M", .window, "opens the profile / guest switcher"),
        ("Ctrl+T", .tab, "opens a new tab"),
        ("Ctrl+Shift+T", .tab, "reopens a closed tab or window"),
        ("Ctrl+Tab", .tab, "switches to the next tab"),
        ("Ctrl+Shift+Tab", .tab, "switches to the previous tab"),
        ("Ctrl+Page_Down", .tab, "switches to the next tab"),
        ("Ctrl+Page_Up", .tab, "switches to the previous tab"),
        ("Ctrl+Shift+Page_Down", .tab, "moves the tab"),
        ("Ctrl+Shift+Page_Up", .tab, "moves the tab"),
    ] + (1...9).flatMap { n -> [(String, GrabPurpose, String)] in
        [("Ctrl+\(n)", .tab, "switches to tab \(n)"), ("Alt+\(n)", .tab, "switches to tab \(n)")]
    } + [
        ("F1", .tab, "opens the help centre in a new tab"),
        ("F12", .devtools, "opens developer tools"),
        ("Ctrl+Shift+I", .devtools, "opens developer tools"),
        ("Ctrl+Shift+J", .devtools, "opens the developer console"),
        ("Ctrl+Shift+C", .devtools, "opens the element inspector"),
        ("Ctrl+U", .devtools, "opens the page source in a new tab"),
        ("Shift+Escape", .devtools, "opens the task manager window"),
        ("Ctrl+H", .browserUI, "opens history"),
        ("Ctrl+J", .browserUI, "opens downloads"),
        ("Ctrl+D", .browserUI, "bookmarks the page (a bubble with a folder picker)"),
        ("Ctrl+Shift+D", .browserUI, "bookmarks all tabs"),
        ("Ctrl+Shift+O", .browserUI, "opens the bookmark manager"),
        ("Ctrl+Shift+B", .browserUI, "toggles the bookmarks bar"),
        ("Ctrl+Shift+A", .browserUI, "opens tab search"),
        ("Ctrl+Shift+Delete", .browserUI, "opens clear-browsing-data settings"),
        ("Alt+F", .browserUI, "opens the app menu"),
        ("Alt+E", .browserUI, "opens the app menu"),
        ("F10", .browserUI, "focuses the app menu"),
        ("Alt+Shift+I", .dialog, "opens the feedback dialog"),
        ("F7", .dialog, "opens the caret-browsing dialog"),
        ("Ctrl+P", .dialog, "opens the print dialog"),
        ("Ctrl+Shift+P", .dialog, "opens the system print dialog"),
        ("Ctrl+S", .dialog, "opens the save-page dialog"),
        ("Ctrl+O", .dialog, "opens the open-file dialog"),
        ("Alt+Left", .navigate, "goes back"),
        ("Alt+Right", .navigate, "goes forward"),
        ("Alt+Home", .navigate, "opens the home page"),
        ("F5", .navigate, "reloads the page"),
        ("Ctrl+R", .navigate, "reloads the page"),
        ("Shift+F5", .navigate, "reloads, bypassing the cache"),
        ("Ctrl+Shift+R", .navigate, "reloads, bypassing the cache"),
        ("Ctrl+F5", .navigate, "reloads, bypassing the cache"),
        ("Ctrl+L", .navigate, "focuses the address bar"),
        ("Alt+D", .navigate, "focuses the address bar"),
        ("F6", .navigate, "focuses the address bar"),
        ("Ctrl+K", .navigate, "searches from the address bar"),
        ("Ctrl+E", .navigate, "searches from the address bar"),
        ("Alt+Tab", .switchWindow, "switches windows"),
        ("Alt+Shift+Tab", .switchWindow, "switches windows"),
        ("Alt+Escape", .switchWindow, "switches windows"),
        ("F11", .switchWindow, "leaves full screen"),
        ("Ctrl+Alt+BackSpace", .switchWindow, "kills the X server where zapping is enabled"),
        ("Ctrl+Alt+Delete", .switchWindow, "the session-manager combination"),
        ("Shift+Button1", .mouse, "opens a link in a new window"),
        ("Ctrl+Button1", .mouse, "opens a link in a new tab"),
        ("Ctrl+Shift+Button1", .mouse, "opens a link in a new tab"),
        ("Button2", .mouse, "opens a link in a new tab"),
        ("Shift+Button2", .mouse, "opens a link in a new window"),
        ("Ctrl+Button2", .mouse, "opens a link in a new tab"),
        ("Button8", .mouse, "goes back"),
        ("Button9", .mouse, "goes forward"),
    ]

    /// The defaults with `remove` taken out and `add` put in. Removing a combination that is not
    /// in the list is an error, so a typo cannot silently leave a combination grabbed.
    public static func configured(add: [KeyCombo], remove: [KeyCombo], base: [GrabEntry] = defaults) throws(ComboError) -> [GrabEntry] {
        var entries = base
        for combo in remove {
            guard entries.contains(where: { $0.combo == combo }) else { throw .notInList(combo.description) }
            entries.removeAll { $0.combo == combo }
        }
        for combo in add where !entries.contains(where: { $0.combo == combo }) {
            entries.append(GrabEntry(combo, .configured, "added by the configuration"))
        }
        return entries
    }
}
