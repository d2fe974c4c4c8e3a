/// Which X keysyms a viewer may send: the one rule, used by the bridge's RFB filter (first
/// layer) and by the lockdown's keymap (second layer, so nothing else can be typed even by a
/// client that reaches x11vnc some other way).
///
/// An RFB KeyEvent carries any 32-bit keysym, not a key of a real keyboard, and many keysyms are
/// actions rather than characters: XF86 vendor keysyms (browser Home/Back/Search, launchers,
/// VT switches, XF86Ungrab/ClearGrab), XKB actions in 0xFExx (Terminate_Server, Pointer_*,
/// AccessX, group locks), 3270 keys. A viewer needs characters, editing, cursor, function,
/// modifier and keypad keys; everything else is refused.
public enum ViewerKeysyms {
    /// Why a keysym is refused; the label of the metric and of the task event.
    public enum Refusal: String, Sendable, CaseIterable {
        /// 0x1008xxxx: XF86 media, browser, launch, VT-switch and grab keys.
        case xf86 = "xf86_vendor"
        /// Other vendors' keysyms (HP, DEC, Sun) and anything past Unicode.
        case vendor
        /// 0xFExx: XKB/ISO actions (Terminate_Server, Pointer_*, AccessX, group and level locks).
        case xkbAction = "xkb_action"
        /// 0xFDxx: IBM 3270 function keys.
        case ibm3270 = "3270"
        /// 0xFFxx keys that act rather than edit: Help, Print, Execute, Sys_Req, Break, IME modes …
        case actionKey = "action_key"
        /// Values no keysym table assigns (control characters, gaps).
        case unassigned
    }

    /// nil when the keysym may pass; otherwise why not.
    public static func refusal(_ keysym: UInt32) -> Refusal? {
        switch keysym {
        case 0x0020...0x007E, 0x00A0...0x00FF: return nil           // Latin-1 characters
        case 0x0100...0x0EFF, 0x1200...0x13FF, 0x20A0...0x20AC: return nil  // legacy character sets
        case 0x0100_0020...0x0100_007E, 0x0100_00A0...0x0110_FFFF: return nil  // Unicode characters
        case 0xFE00...0xFEFF: return allowedXKB.contains(keysym) ? nil : .xkbAction
        case 0xFD00...0xFDFF: return .ibm3270
        case 0xFF00...0xFFFF: return allowedKeys.contains(keysym) ? nil : .actionKey
        case 0x1008_0000...0x1008_FFFF: return .xf86
        case 0x1000_0000...: return .vendor
        default: return .unassigned
        }
    }

    public static func allows(_ keysym: UInt32) -> Bool { refusal(keysym) == nil }

    /// In 0xFExx only AltGr-style level shifts (needed by international layouts), ISO_Left_Tab
    /// (Shift+Tab on many layouts) and the dead keys that compose characters.
    static let allowedXKB: Set<UInt32> = Set([0xFE03, 0xFE11, 0xFE20])
        .union(0xFE50...0xFE6F).union(0xFE80...0xFE8C).union(0xFE90...0xFE93)

    /// In 0xFFxx: editing, cursor, keypad, function and modifier keys.
    static let allowedKeys: Set<UInt32> = Set([
        0xFF08, 0xFF09, 0xFF0A, 0xFF0B, 0xFF0D,     // BackSpace, Tab, Linefeed, Clear, Return
        0xFF13, 0xFF14, 0xFF1B, 0xFF20,             // Pause, Scroll_Lock, Escape, Multi_key (compose)
        0xFF63, 0xFF65, 0xFF66, 0xFF67,             // Insert, Undo, Redo, Menu (what a right click opens)
        0xFF7E, 0xFF7F, 0xFF80, 0xFF89, 0xFF8D,     // Mode_switch, Num_Lock, KP_Space, KP_Tab, KP_Enter
        0xFFBD, 0xFFFF,                             // KP_Equal, Delete
    ]).union(0xFF50...0xFF58)                       // Home, arrows, Prior, Next, End, Begin
        .union(0xFF91...0xFF9F)                     // KP_F1…KP_F4, KP_Home…KP_Delete
        .union(0xFFAA...0xFFB9)                     // KP_Multiply…KP_9
        .union(0xFFBE...0xFFE0)                     // F1…F35
        .union(0xFFE1...0xFFEE)                     // Shift, Control, Caps/Shift lock, Meta, Alt, Super, Hyper
}
