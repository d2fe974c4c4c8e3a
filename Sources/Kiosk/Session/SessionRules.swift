/// What a session (and so a task) may be asked for, written once. The control API's request
/// parser, the config schema and `SessionSettings.problems()` call these; a test holds the
/// OpenAPI document to them.
public enum SessionRules {
    /// Screen size in pixels: Xvfb needs a usable minimum; 8K is the most a host can afford.
    public static let width = 320...7680
    public static let height = 200...4320

    /// Session and task ids name the session's directory, logs and events.
    public static let idMaxBytes = 64
    public static let idPattern = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
    public static let idRule = "1–64 letters, digits, '-' or '_', not starting with '-'"

    public static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= idMaxBytes && !id.hasPrefix("-") && id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F
        }
    }

    /// The page a kiosk opens: a web page, or an inline or blank one. No file:, chrome: or
    /// javascript: URL: each would open the host or the browser to the viewer. Its length is
    /// counted in code points, as JSON Schema's `maxLength` counts.
    public static let urlMaxLength = 8192
    public static let urlSchemes = ["http://", "https://", "about:", "data:"]
    public static let urlPattern = "^(https?://|about:|data:)"
    public static let urlRule = "an http(s), about: or data: URL of at most 8192 characters"

    /// The scheme is compared byte by byte: as Characters, a combining mark right after it would
    /// merge with its last character and hide it.
    public static func isValidURL(_ url: String) -> Bool {
        !url.isEmpty && url.unicodeScalars.count <= urlMaxLength && urlSchemes.contains { url.utf8.starts(with: $0.utf8) }
    }
}
