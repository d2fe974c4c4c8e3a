/// What the lockdown did, for the session's events and the operator's log.
public enum LockdownEvent: Sendable, Equatable, CustomStringConvertible {
    /// A grabbed combination was pressed (by a viewer, through x11vnc's XTEST); it never
    /// reached the browser.
    case blocked(combo: String, purpose: GrabPurpose)
    /// A top-level window other than the kiosk window was asked to close.
    case windowClosed(window: UInt, name: String)
    /// The keymap changed; every grab was placed again.
    case regrabbed(grabs: Int)
    /// Keys and buttons still down (a controlling viewer left while holding them) were released.
    case inputReleased(keys: [String], buttons: [Int])

    public var description: String {
        switch self {
        case .blocked(let combo, let purpose): "blocked \(combo) (\(purpose.rawValue))"
        case .windowClosed(let w, let name): "closed window 0x\(String(w, radix: 16)) '\(name)': not the kiosk window"
        case .regrabbed(let n): "keymap changed: \(n) grabs placed again"
        case .inputReleased(let keys, let buttons):
            "released held input: keys [\(keys.joined(separator: ", "))], buttons \(buttons)"
        }
    }
}

public enum LockdownError: Error, Equatable, CustomStringConvertible {
    case cannotConnect(display: Int)
    case grabConflict(display: Int, combo: String)
    case selfTestFailed(display: Int, missing: [String])
    case connectionLost(display: Int)
    case stopped

    public var description: String {
        switch self {
        case .cannotConnect(let d): "cannot open X display :\(d) with the session's cookie"
        case .grabConflict(let d, let combo):
            "cannot grab \(combo) on :\(d): another X client already holds it (BadAccess); a window manager binding it?"
        case .selfTestFailed(let d, let missing):
            "lockdown self-test failed on :\(d): injected \(missing.joined(separator: ", ")) did not reach the grabber"
        case .connectionLost(let d): "lost the connection to X display :\(d)"
        case .stopped: "the lockdown was stopped"
        }
    }
}
