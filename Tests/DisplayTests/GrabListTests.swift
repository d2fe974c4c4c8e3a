import Display
import Kiosk
import Testing

/// The grab list and its plan, without X: parsing, configuration, lock variants.
@Suite struct GrabListTests {
    @Test func everyDefaultEntryParsesAndPrintsBackAsItself() throws {
        #expect(GrabList.defaults.count > 60)
        for entry in GrabList.defaults {
            #expect(try KeyCombo(parsing: entry.combo.description) == entry.combo, "\(entry.combo)")
        }
        #expect(Set(GrabList.defaults.map(\.combo)).count == GrabList.defaults.count, "no duplicates")
        let purposes = Set(GrabList.defaults.map(\.purpose))
        #expect(purposes == Set(GrabPurpose.allCases).subtracting([.configured]), "every purpose has entries")
    }

    @Test func combinationsParseCaseInsensitivelyAndRejectNonsenseByName() throws {
        #expect(try KeyCombo(parsing: "control+shift+n").description == "Ctrl+Shift+N")
        #expect(try KeyCombo(parsing: " Alt + F4 ").description == "Alt+F4")
        #expect(try KeyCombo(parsing: "Shift+Button1").trigger == .button(1))
        #expect(throws: ComboError.unknownModifier("Hyper+W", "Hyper")) { try KeyCombo(parsing: "Hyper+W") }
        #expect(throws: ComboError.unknownKey("Ctrl+Bogus", "Bogus")) { try KeyCombo(parsing: "Ctrl+Bogus") }
        #expect(throws: ComboError.unknownKey("Button10", "Button10")) { try KeyCombo(parsing: "Button10") }
        #expect(throws: ComboError.malformed("Ctrl++W")) { try KeyCombo(parsing: "Ctrl++W") }
        #expect(throws: ComboError.malformed("Ctrl+Ctrl+W")) { try KeyCombo(parsing: "Ctrl+Ctrl+W") }
        #expect(throws: ComboError.malformed("")) { try KeyCombo(parsing: "") }
    }

    @Test func theConfigurationAddsAndRemovesAndRefusesToRemoveWhatIsNotThere() throws {
        let f5 = try KeyCombo(parsing: "F5"), extra = try KeyCombo(parsing: "Ctrl+Shift+X")
        let list = try GrabList.configured(add: [extra], remove: [f5])
        #expect(!list.contains { $0.combo == f5 })
        #expect(list.last == GrabEntry(extra, .configured, "added by the configuration"))
        #expect(throws: ComboError.notInList("Ctrl+Shift+X")) { try GrabList.configured(add: [], remove: [extra]) }
    }

    /// Xvfb's default layout: NumLock on Mod2, Alt on Mod1, Super on Mod4, no ScrollLock key.
    static let keymap = Keymap(minKeycode: 8, symbols: [
        [0xFFE3], [0xFFE1], [0xFFE9], [0xFFEB], [0xFF7F],   // 8 Control_L, 9 Shift_L, 10 Alt_L, 11 Super_L, 12 Num_Lock
        [0x77, 0x57], [0xFFC1], [0x77, 0x57],                // 13 w W, 14 F4, 15 w W again (a second keyboard row)
    ])
    static let layout = ModifierLayout(modifierKeycodes: [[9], [], [8], [10], [12], [], [11], []], keymap: keymap)

    @Test func theKeymapKeepsOnlyKeysymsAViewerMayType() {
        // F1 with XF86Switch_VT_1 on its Ctrl+Alt level, NumLock with Pointer_EnableKeys,
        // XF86HomePage alone, BackSpace with Terminate_Server, an AltGr key.
        let keymap = Keymap(minKeycode: 8, symbols: [
            [0xFFBE, 0, 0xFFBE, 0, 0x1008_FE01], [0xFF7F, 0xFEF9], [0x1008_FF18, 0], [0xFF08, 0xFF08, 0, 0, 0xFED5], [0xFE03, 0],
        ])
        let (restricted, removed) = keymap.withViewerKeysymsOnly()
        #expect(removed == 4)
        #expect(restricted.symbols == [[0xFFBE, 0, 0xFFBE, 0, 0], [0xFF7F, 0], [0, 0], [0xFF08, 0xFF08, 0, 0, 0], [0xFE03, 0]])
        #expect(restricted.withViewerKeysymsOnly().removed == 0, "a second pass finds nothing: no MappingNotify loop")
    }

    @Test func theModifierLayoutComesFromTheModifierMapping() {
        #expect(Self.layout.mask(of: [.ctrl, .alt]) == UInt32(4 | 8))
        #expect(Self.layout.mask(of: [.super]) == UInt32(64))
        #expect(Self.layout.lockMasks == [0, 2, 16, 18], "every subset of CapsLock and NumLock")
        #expect(Self.layout.keycodes[Modifiers.alt.rawValue] == 10)
    }

    @Test func aPlanGrabsEveryKeycodeWithEveryLockVariantAndMapsEventsBack() throws {
        let ctrlW = GrabEntry(try KeyCombo(parsing: "Ctrl+W"), .close, "closes")
        let altF4 = GrabEntry(try KeyCombo(parsing: "Alt+F4"), .close, "closes")
        let missing = GrabEntry(try KeyCombo(parsing: "F1"), .tab, "help")
        let plan = GrabPlan(entries: [ctrlW, altF4, missing], keymap: Self.keymap, layout: Self.layout)
        #expect(plan.items[0].grabs.count == 2 * 4, "two keycodes carry w, four lock variants")
        #expect(Set(plan.items[0].grabs.map(\.input)) == [.key(13), .key(15)])
        #expect(plan.items[2].unmapped == "no keycode carries its keysym")
        // NumLock on (Mod2 = 16) and a pointer button held (Button1Mask = 256) change nothing.
        #expect(plan.entry(for: .key(15), state: 4 | 16 | 256) == ctrlW)
        #expect(plan.entry(for: .key(14), state: 8 | 2) == altF4)
        #expect(plan.entry(for: .key(13), state: 4 | 1) == nil, "Ctrl+Shift+W is another combination")
    }

    @Test func x11vncViewerGoneLinesAreRecognised() {
        #expect(X11VNC.isViewerGone("22/11/2026 01:24:27 Client 127.0.0.1 gone"))
        #expect(!X11VNC.isViewerGone("22/11/2026 01:24:27 Got connection from client 127.0.0.1"))
        #expect(!X11VNC.isViewerGone("22/11/2026 01:24:27 rfbProcessClientProtocolVersion: client gone"))
    }
}
