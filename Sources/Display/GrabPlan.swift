/// One passive grab on the root window: a keycode or a button with exact modifier bits.
public struct Grab: Sendable, Hashable {
    public enum Input: Sendable, Hashable {
        case key(UInt8)
        case button(UInt32)
    }

    public var input: Input
    public var modifiers: UInt32
}

/// What to grab for a grab list on a given keymap: each entry on every keycode carrying its
/// keysym, with every variant of the lock modifiers. Pure, so it is tested without X.
public struct GrabPlan: Sendable {
    public struct Item: Sendable {
        public var entry: GrabEntry
        public var grabs: [Grab]
        /// Why the entry could not be grabbed on this keymap (no key carries it, or a modifier
        /// role has no key); such an entry cannot be typed either until the keymap changes.
        public var unmapped: String?
    }

    public let items: [Item]
    public let layout: ModifierLayout

    public init(entries: [GrabEntry], keymap: Keymap, layout: ModifierLayout) {
        self.init(entries: entries, layout: layout, keycodes: keymap.keycodes(for:))
    }

    /// `keycodes`: the keycodes to grab for a keysym.
    public init(entries: [GrabEntry], layout: ModifierLayout, keycodes: (UInt) -> [UInt8]) {
        self.layout = layout
        items = entries.map { entry in
            guard let base = layout.mask(of: entry.combo.modifiers) else {
                return Item(entry: entry, grabs: [], unmapped: "no key on this keymap gives its modifiers")
            }
            let inputs: [Grab.Input] = switch entry.combo.trigger {
            case .key(let sym, _): keycodes(sym).map { .key($0) }
            case .button(let n): [.button(UInt32(n))]
            }
            guard !inputs.isEmpty else { return Item(entry: entry, grabs: [], unmapped: "no keycode carries its keysym") }
            let grabs = inputs.flatMap { input in layout.lockMasks.map { Grab(input: input, modifiers: base | $0) } }
            return Item(entry: entry, grabs: grabs, unmapped: nil)
        }
    }

    /// The entry an event belongs to: its keycode or button and its state without lock bits
    /// (and without the button bits a pointer event carries).
    public func entry(for input: Grab.Input, state: UInt32) -> GrabEntry? {
        let relevant = state & 0xFF & ~layout.ignoredBits
        return items.first { item in
            item.grabs.contains { $0.input == input && $0.modifiers & ~layout.ignoredBits == relevant }
        }?.entry
    }
}
