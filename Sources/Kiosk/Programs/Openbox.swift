import Supervision

/// Openbox: the session's window manager, configured so that every window (dialogs included) is
/// undecorated and fullscreen and no key or mouse binding does anything.
public enum Openbox {
    public static let executable = "/usr/bin/openbox"

    public struct Settings: Sendable, Equatable {
        public var display: Int
        public var authFile: String
        /// Where rc.xml, the empty menu and the readiness marker live (the session's directory).
        public var directory: String

        public init(display: Int, authFile: String, directory: String) {
            self.display = display
            self.authFile = authFile
            self.directory = directory
        }

        public var rcPath: String { directory + "/openbox-rc.xml" }
        public var menuPath: String { directory + "/openbox-menu.xml" }
        /// Touched by `--startup` once Openbox manages the screen.
        public var readyPath: String { directory + "/openbox.ready" }
    }

    /// The kiosk rc.xml: an empty <keyboard/> (Openbox binds A-F4 and more by default, which also
    /// makes the key grabber's XGrabKey fail with BadAccess), a mouse section without Root or
    /// Desktop contexts (no menus), and one application rule for every class.
    public static func rcXML(menuPath: String) -> String {
        """
        <?xml version="1.0" encoding="UTF-8"?>
        <openbox_config xmlns="http://openbox.org/3.4/rc">
          <resistance><strength>0</strength><screen_edge_strength>0</screen_edge_strength></resistance>
          <focus><focusNew>yes</focusNew><followMouse>no</followMouse></focus>
          <placement><policy>Smart</policy></placement>
          <desktops><number>1</number><popupTime>0</popupTime></desktops>
          <keyboard></keyboard>
          <mouse><dragThreshold>8</dragThreshold><doubleClickTime>200</doubleClickTime></mouse>
          <menu><file>\(xmlEscaped(menuPath))</file><hideDelay>0</hideDelay></menu>
          <applications>
            <application class="*">
              <decor>no</decor>
              <maximized>yes</maximized>
              <fullscreen>yes</fullscreen>
              <skip_taskbar>yes</skip_taskbar>
              <focus>yes</focus>
              <desktop>all</desktop>
            </application>
          </applications>
        </openbox_config>

        """
    }

    public static let emptyMenuXML = """
        <?xml version="1.0" encoding="UTF-8"?>
        <openbox_menu xmlns="http://openbox.org/3.4/menu"></openbox_menu>

        """

    /// Writes rc.xml and the empty menu into the session directory.
    public static func writeConfig(_ s: Settings, owner: Credentials?) throws {
        try writeFile(s.rcPath, rcXML(menuPath: s.menuPath), mode: 0o644, owner: owner)
        try writeFile(s.menuPath, emptyMenuXML, mode: 0o644, owner: owner)
    }

    public static func arguments(_ s: Settings) -> [String] {
        [
            "--config-file", s.rcPath,
            // No session manager exists here; without this Openbox tries to reach one.
            "--sm-disable",
            "--startup", "/usr/bin/touch \(s.readyPath)",
        ]
    }

    public static func childSpec(_ s: Settings, credentials: Credentials?, environment: [String: String]) -> ChildSpec {
        ChildSpec(
            id: "openbox",
            kind: .process(ProcessSpec(executable: executable, arguments: arguments(s),
                                       environment: environment.merging(x11Environment(display: s.display, authFile: s.authFile)) { $1 },
                                       workingDirectory: s.directory, credentials: credentials)),
            restart: .permanent,
            shutdown: .timeout(.seconds(2)),
            readiness: .file(path: s.readyPath),
            readyTimeout: .seconds(10))
    }
}

/// DISPLAY and XAUTHORITY for an X client of the session.
public func x11Environment(display: Int, authFile: String) -> [String: String] {
    ["DISPLAY": ":\(display)", "XAUTHORITY": authFile]
}

func xmlEscaped(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        default: out.append(c)
        }
    }
    return out
}
