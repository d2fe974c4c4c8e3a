/// What a viewer may do in a session: the role a viewer token grants, what the bridge's filter
/// lets through, and what the session's x11vnc accepts from viewers at all.
public enum ViewerRole: String, Sendable, CaseIterable, Codable {
    /// Watch: nothing from the viewer reaches the display.
    case view
    /// Keys, mouse motion and buttons too.
    case control
}
