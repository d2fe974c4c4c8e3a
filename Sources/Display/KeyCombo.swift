import CX11

/// The modifiers of a combination, by role. Which X modifier bit Alt or Super is depends on the
/// keymap (`ModifierLayout`), so a combination names roles, not bits.
public struct Modifiers: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let ctrl = Modifiers(rawValue: 1)
    public static let shift = Modifiers(rawValue: 2)
    public static let alt = Modifiers(rawValue: 4)
    public static let `super` = Modifiers(rawValue: 8)

    /// Names in the order they are written: "Ctrl+Shift+Alt+Super+…".
    public static let names: [(Modifiers, String)] = [(.ctrl, "Ctrl"), (.shift, "Shift"), (.alt, "Alt"), (.super, "Super")]
    static let aliases: [String: Modifiers] = ["ctrl": .ctrl, "control": .ctrl, "shift": .shift, "alt": .alt, "super": .super, "win": .super]
}

/// A key or button combination such as `Ctrl+Shift+N`, `Alt+F4` or `Shift+Button1`.
public struct KeyCombo: Sendable, Hashable, CustomStringConvertible {
    public enum Trigger: Sendable, Hashable {
        /// An X keysym (e.g. XK_w); letters are kept lower-case, the keymap holds both cases.
        case key(keysym: UInt, name: String)
        /// A pointer button, 1 to 9 (8 and 9 are the back/forward side buttons).
        case button(Int)
    }

    public var modifiers: Modifiers
    public var trigger: Trigger

    public init(modifiers: Modifiers, trigger: Trigger) {
        self.modifiers = modifiers
        self.trigger = trigger
    }

    /// Parses `Mod+Mod+Key`: modifiers Ctrl, Shift, Alt, Super (any case); the key an X keysym
    /// name (`W`, `F4`, `Tab`, `Page_Up`, `BackSpace`) or `Button1`…`Button9`.
    public init(parsing text: String) throws(ComboError) {
        let parts = text.filter { !$0.isWhitespace }.split(separator: "+", omittingEmptySubsequences: false)
        guard let last = parts.last, !last.isEmpty, !parts.dropLast().contains("") else { throw .malformed(text) }
        var mods: Modifiers = []
        for part in parts.dropLast() {
            guard let m = Modifiers.aliases[part.lowercased()] else { throw .unknownModifier(text, String(part)) }
            guard !mods.contains(m) else { throw .malformed(text) }
            mods.insert(m)
        }
        modifiers = mods
        if last.lowercased().hasPrefix("button"), let n = Int(last.dropFirst(6)) {
            guard (1...9).contains(n) else { throw .unknownKey(text, String(last)) }
            trigger = .button(n)
            return
        }
        // One letter: the lower-case keysym; the keymap carries the upper case on the same key.
        let name = last.count == 1 ? last.lowercased() : String(last)
        let sym = XStringToKeysym(name)
        guard sym != UInt(NoSymbol) else { throw .unknownKey(text, String(last)) }
        trigger = .key(keysym: sym, name: last.count == 1 ? last.uppercased() : String(last))
    }

    public var description: String {
        let mods = Modifiers.names.filter { modifiers.contains($0.0) }.map(\.1)
        let key = switch trigger {
        case .key(_, let name): name
        case .button(let n): "Button\(n)"
        }
        return (mods + [key]).joined(separator: "+")
    }
}

public enum ComboError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case unknownModifier(String, String)
    case unknownKey(String, String)
    case notInList(String)

    public var description: String {
        switch self {
        case .malformed(let t): "'\(t)' is not a combination like Ctrl+Shift+N"
        case .unknownModifier(let t, let m): "'\(t)': unknown modifier '\(m)' (use Ctrl, Shift, Alt, Super)"
        case .unknownKey(let t, let k): "'\(t)': '\(k)' is not an X keysym name or Button1…Button9"
        case .notInList(let t): "'\(t)' is not in the grab list, so it cannot be removed"
        }
    }
}
