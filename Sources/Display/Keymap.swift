import CX11
import ViewerInput

/// The keyboard mapping as the server has it: the keysyms on each keycode.
public struct Keymap: Sendable, Equatable {
    public var minKeycode: Int
    /// Keysyms per keycode, in XGetKeyboardMapping's columns (unshifted, shifted, …).
    public var symbols: [[UInt]]

    public init(minKeycode: Int, symbols: [[UInt]]) {
        self.minKeycode = minKeycode
        self.symbols = symbols
    }

    /// Every keycode that carries `keysym` in any column: x11vnc may type it on any of them,
    /// and a keysym it adds at run time lands on a new keycode (then a MappingNotify re-grabs).
    public func keycodes(for keysym: UInt) -> [UInt8] {
        var upper: KeySym = 0, lower: KeySym = 0
        XConvertCase(KeySym(keysym), &lower, &upper)
        var codes: [UInt8] = []
        for (i, syms) in symbols.enumerated() where syms.contains(where: { $0 != 0 && ($0 == lower || $0 == upper) }) {
            codes.append(UInt8(minKeycode + i))
        }
        return codes
    }

    /// The keymap with every keysym a viewer may not type (`ViewerKeysyms`) taken off its key,
    /// and how many were taken. x11vnc runs with -noadd_keysyms, so what is not in the keymap
    /// cannot be typed through it: XF86 browser and VT keys, Terminate_Server, Pointer_* ….
    public func withViewerKeysymsOnly() -> (keymap: Keymap, removed: Int) {
        var removed = 0
        let symbols = symbols.map { syms in
            syms.map { sym -> UInt in
                guard sym != 0, !ViewerKeysyms.allows(UInt32(truncatingIfNeeded: sym)) else { return sym }
                removed += 1
                return 0
            }
        }
        return (Keymap(minKeycode: minKeycode, symbols: symbols), removed)
    }

    public func keysyms(of keycode: UInt8) -> [UInt] {
        let i = Int(keycode) - minKeycode
        return symbols.indices.contains(i) ? symbols[i] : []
    }
}

/// Which X modifier bit each role is on, read from XGetModifierMapping: Alt and Super move
/// between Mod1…Mod5 with the keymap, and so do NumLock and ScrollLock, whose every on/off
/// variant must be grabbed because a grab matches modifiers exactly.
public struct ModifierLayout: Sendable, Equatable {
    public var masks: [UInt8: UInt32]
    /// The keycode that sets each role's bit, for XTest injection.
    public var keycodes: [UInt8: UInt8]
    /// CapsLock, NumLock, ScrollLock: the bits a grab must ignore.
    public var lockMasks: [UInt32]

    /// `modifierKeycodes[i]`: keycodes of modifier i (Shift, Lock, Control, Mod1…Mod5).
    public init(modifierKeycodes: [[UInt8]], keymap: Keymap) {
        masks = [Modifiers.ctrl.rawValue: UInt32(ControlMask), Modifiers.shift.rawValue: UInt32(ShiftMask)]
        keycodes = [:]
        var numLock: UInt32 = 0, scrollLock: UInt32 = 0
        for (index, codes) in modifierKeycodes.enumerated() {
            let mask = UInt32(1) << UInt32(index)
            for code in codes where code != 0 {
                let syms = keymap.keysyms(of: code).map { Int($0) }
                func has(_ names: Int32...) -> Bool { names.contains { syms.contains(Int($0)) } }
                if index == ShiftMapIndex, keycodes[Modifiers.shift.rawValue] == nil { keycodes[Modifiers.shift.rawValue] = code }
                if index == ControlMapIndex, keycodes[Modifiers.ctrl.rawValue] == nil { keycodes[Modifiers.ctrl.rawValue] = code }
                guard index >= Mod1MapIndex else { continue }
                if has(XK_Alt_L, XK_Alt_R, XK_Meta_L), masks[Modifiers.alt.rawValue] == nil {
                    masks[Modifiers.alt.rawValue] = mask
                    keycodes[Modifiers.alt.rawValue] = code
                }
                if has(XK_Super_L, XK_Super_R), masks[Modifiers.super.rawValue] == nil {
                    masks[Modifiers.super.rawValue] = mask
                    keycodes[Modifiers.super.rawValue] = code
                }
                if has(XK_Num_Lock) { numLock = mask }
                if has(XK_Scroll_Lock) { scrollLock = mask }
            }
        }
        // Every subset of the lock bits, the empty one first.
        let bits = [UInt32(LockMask), numLock, scrollLock].filter { $0 != 0 }
        lockMasks = (0..<(1 << bits.count)).map { subset in
            bits.enumerated().reduce(UInt32(0)) { acc, item in subset & (1 << item.offset) != 0 ? acc | item.element : acc }
        }
    }

    /// The X state bits of a role set; nil when the keymap has no key for one of the roles.
    public func mask(of modifiers: Modifiers) -> UInt32? {
        var out: UInt32 = 0
        for (role, _) in Modifiers.names where modifiers.contains(role) {
            guard let m = masks[role.rawValue] else { return nil }
            out |= m
        }
        return out
    }

    /// The state bits a grab compares, with the lock bits removed.
    public var ignoredBits: UInt32 { lockMasks.reduce(0, |) }
}
