import CX11

#if canImport(Glibc)
import Glibc
#endif

/// The lockdown's X side. Confined to its connection's thread: Xlib is only ever called there,
/// which is also what lets the C error handlers attribute errors by thread.
final class LockdownCore {
    let dpy: OpaquePointer
    let display: Int
    let root: Window
    private(set) var plan: GrabPlan
    private let entries: [GrabEntry]
    private let report: @Sendable (LockdownEvent) -> Void
    private let clientListAtom: Atom
    private let closeWindowAtom: Atom
    /// The first top-level window of a run of the browser; everything else is closed.
    private var kioskWindow: Window?
    private var closing: Set<Window> = []
    private var selfTest: PendingSelfTest?
    private var windowWaiters: [([Window]) -> Void] = []
    /// Every keycode that has carried each grabbed keysym this session. Clients that missed a
    /// keymap change (x11vnc's and Chromium's caches) keep typing and reading the old codes,
    /// so a combination stays grabbed on its old keycodes as well as its new ones.
    private var keycodeHistory: [UInt: Set<UInt8>] = [:]
    /// Action keysyms taken off the keymap at the start (XF86 keys, Terminate_Server, …).
    let keysymsRemoved: Int

    struct PendingSelfTest {
        var expected: [GrabEntry]
        var deadline: ContinuousClock.Instant
        var finish: (Result<[String], LockdownError>) -> Void
    }

    init(dpy: OpaquePointer, display: Int, entries: [GrabEntry], report: @escaping @Sendable (LockdownEvent) -> Void) {
        self.dpy = dpy
        self.display = display
        self.entries = entries
        self.report = report
        root = XDefaultRootWindow(dpy)
        clientListAtom = XInternAtom(dpy, "_NET_CLIENT_LIST", 0)
        closeWindowAtom = XInternAtom(dpy, "_NET_CLOSE_WINDOW", 0)
        keysymsRemoved = Self.restrictKeymap(dpy)
        // Our own change's MappingNotify: the plan below reads the new keymap anyway.
        var own = XEvent()
        while XCheckTypedEvent(dpy, MappingNotify, &own) != 0 { XRefreshKeyboardMapping(&own.xmapping) }
        var history: [UInt: Set<UInt8>] = [:]
        plan = Self.makePlan(dpy, entries, &history)
        keycodeHistory = history
        // The window manager publishes its client list on the root window.
        XSelectInput(dpy, root, PropertyChangeMask)
    }

    var connectionFD: Int32 { XConnectionNumber(dpy) }

    // MARK: - Grabs

    /// Places every grab. Grab errors arrive asynchronously: a sync per entry tells which
    /// combination another client holds.
    func grabAll() throws(LockdownError) {
        _ = kx_take_error(nil, nil)
        for item in plan.items {
            for grab in item.grabs {
                switch grab.input {
                case .key(let code):
                    XGrabKey(dpy, Int32(code), grab.modifiers, root, 0, GrabModeAsync, GrabModeAsync)
                case .button(let n):
                    XGrabButton(dpy, n, grab.modifiers, root, 0, UInt32(ButtonPressMask | ButtonReleaseMask),
                                GrabModeAsync, GrabModeAsync, Window(0), Cursor(0))
                }
            }
            XSync(dpy, 0)
            if kx_io_failed() != 0 { throw .connectionLost(display: display) }
            if kx_take_error(nil, nil) == BadAccess {
                throw .grabConflict(display: display, combo: item.entry.combo.description)
            }
        }
    }

    private static func makePlan(_ dpy: OpaquePointer, _ entries: [GrabEntry], _ history: inout [UInt: Set<UInt8>]) -> GrabPlan {
        let keymap = keymap(dpy)
        return GrabPlan(entries: entries, layout: layout(dpy)) { sym in
            history[sym, default: []].formUnion(keymap.keycodes(for: sym))
            return history[sym, default: []].sorted()
        }
    }

    var grabCount: Int { plan.items.reduce(0) { $0 + $1.grabs.count } }
    var unmapped: [String] { plan.items.compactMap { item in item.unmapped.map { "\(item.entry.combo): \($0)" } } }

    /// Adds the grabs the new keymap needs. Nothing is ungrabbed first: an ungrab-all then
    /// grab would leave a moment with no grab at all (CI caught Ctrl+W passing in it), and
    /// re-grabbing a combination this client already holds just renews it.
    private func regrab() {
        plan = Self.makePlan(dpy, entries, &keycodeHistory)
        do {
            try grabAll()
            report(.regrabbed(grabs: grabCount))
        } catch {
            // Only another client grabbing in between can cause this; the next mapping change
            // or a restart of the lockdown tries again. Keep every grab that did succeed.
            report(.regrabbed(grabs: 0))
        }
    }

    // MARK: - Events

    /// Handles everything queued on the connection.
    func drainEvents() {
        while XPending(dpy) > 0 {
            var event = XEvent()
            XNextEvent(dpy, &event)
            handle(&event)
        }
    }

    private func handle(_ event: inout XEvent) {
        switch event.type {
        case KeyPress:
            pressed(.key(UInt8(truncatingIfNeeded: event.xkey.keycode)), state: event.xkey.state)
        case ButtonPress:
            pressed(.button(event.xbutton.button), state: event.xbutton.state)
        case MappingNotify:
            XRefreshKeyboardMapping(&event.xmapping)
            // Whoever changed the keymap (another client with the cookie) gets no action keysym
            // in: they are taken off again; our own change finds nothing more to take.
            if event.xmapping.request == MappingKeyboard { _ = Self.restrictKeymap(dpy) }
            if event.xmapping.request == MappingKeyboard || event.xmapping.request == MappingModifier { regrab() }
        case PropertyNotify where event.xproperty.atom == clientListAtom:
            enforceSingleWindow()
        default:
            break
        }
    }

    private func pressed(_ input: Grab.Input, state: UInt32) {
        guard let entry = plan.entry(for: input, state: state) else { return }
        if var test = selfTest, let i = test.expected.firstIndex(of: entry) {
            test.expected.remove(at: i)
            selfTest = test
            if test.expected.isEmpty { finishSelfTest(.success([])) }
            return
        }
        report(.blocked(combo: entry.combo.description, purpose: entry.purpose))
    }

    // MARK: - Self-test

    /// Injects one combination of each purpose through XTEST, the way x11vnc delivers a
    /// viewer's keys; `finish` gets the combinations once the grabber has received them all,
    /// or the missing ones at the deadline.
    func startSelfTest(timeout: Duration, finish: @escaping (Result<[String], LockdownError>) -> Void) {
        var chosen: [GrabEntry] = []
        for purpose in GrabPurpose.allCases {
            if let item = plan.items.first(where: { $0.entry.purpose == purpose && $0.unmapped == nil }) { chosen.append(item.entry) }
        }
        let names = chosen.map(\.combo.description)
        selfTest = PendingSelfTest(expected: chosen, deadline: .now + timeout) { result in
            finish(result.map { _ in names })
        }
        if chosen.isEmpty { return finishSelfTest(.success([])) }
        for entry in chosen { inject(entry.combo) }
        XSync(dpy, 0)
    }

    var selfTestDeadline: ContinuousClock.Instant? { selfTest?.deadline }

    func checkDeadline(now: ContinuousClock.Instant) {
        guard let test = selfTest, now >= test.deadline else { return }
        finishSelfTest(.failure(.selfTestFailed(display: display, missing: test.expected.map(\.combo.description))))
    }

    func failPending(_ error: LockdownError) {
        if selfTest != nil { finishSelfTest(.failure(error)) }
    }

    private func finishSelfTest(_ result: Result<[String], LockdownError>) {
        guard let test = selfTest else { return }
        selfTest = nil
        test.finish(result)
    }

    private func inject(_ combo: KeyCombo) {
        let mods = Modifiers.names.map(\.0).filter { combo.modifiers.contains($0) }
            .compactMap { plan.layout.keycodes[$0.rawValue] }
        for code in mods { XTestFakeKeyEvent(dpy, UInt32(code), 1, 0) }
        switch combo.trigger {
        case .key(let sym, _):
            let code = XKeysymToKeycode(dpy, KeySym(sym))
            XTestFakeKeyEvent(dpy, UInt32(code), 1, 0)
            XTestFakeKeyEvent(dpy, UInt32(code), 0, 0)
        case .button(let n):
            XTestFakeButtonEvent(dpy, UInt32(n), 1, 0)
            XTestFakeButtonEvent(dpy, UInt32(n), 0, 0)
        }
        for code in mods.reversed() { XTestFakeKeyEvent(dpy, UInt32(code), 0, 0) }
    }

    // MARK: - Held input

    /// Releases every key and button the server has down. Called when a controlling viewer
    /// leaves: whatever it held would otherwise stay held for the agent.
    func releaseHeldInput() -> LockdownEvent {
        var bits = [CChar](repeating: 0, count: 32)
        XQueryKeymap(dpy, &bits)
        var keys: [String] = []
        for code in 8..<256 where UInt8(bitPattern: bits[code / 8]) & (1 << (code % 8)) != 0 {
            XTestFakeKeyEvent(dpy, UInt32(code), 0, 0)
            let sym = XkbKeycodeToKeysym(dpy, KeyCode(code), 0, 0)
            keys.append(XKeysymToString(sym).map { String(cString: $0) } ?? "keycode \(code)")
        }
        var rootReturn: Window = 0, child: Window = 0
        var rx: Int32 = 0, ry: Int32 = 0, wx: Int32 = 0, wy: Int32 = 0
        var mask: UInt32 = 0
        XQueryPointer(dpy, root, &rootReturn, &child, &rx, &ry, &wx, &wy, &mask)
        var buttons: [Int] = []
        for n in 1...5 where mask & (UInt32(Button1Mask) << UInt32(n - 1)) != 0 {
            XTestFakeButtonEvent(dpy, UInt32(n), 0, 0)
            buttons.append(n)
        }
        XSync(dpy, 0)
        return .inputReleased(keys: keys, buttons: buttons)
    }

    // MARK: - Windows

    /// The window manager's client list: top-level windows in mapping order, oldest first.
    func clientWindows() -> [Window] {
        var type: Atom = 0, format: Int32 = 0
        var count: UInt = 0, after: UInt = 0
        var data: UnsafeMutablePointer<UInt8>?
        guard XGetWindowProperty(dpy, root, clientListAtom, 0, 4096, 0, Atom(XA_WINDOW), &type, &format, &count, &after, &data) == Success,
              let data else { return [] }
        defer { XFree(data) }
        guard format == 32 else { return [] }
        // Format 32 properties are returned as C longs.
        return data.withMemoryRebound(to: UInt.self, capacity: Int(count)) { Array(UnsafeBufferPointer(start: $0, count: Int(count))) }
    }

    /// The watchdog: keeps the oldest window (the kiosk) and asks every other top-level window
    /// to close, as a window manager's close button would (_NET_CLOSE_WINDOW → WM_DELETE_WINDOW).
    func enforceSingleWindow() {
        let windows = clientWindows()
        if !windows.isEmpty, !windowWaiters.isEmpty {
            for waiter in windowWaiters { waiter(windows) }
            windowWaiters = []
        }
        closing.formIntersection(windows)
        if kioskWindow.map({ !windows.contains($0) }) ?? true { kioskWindow = windows.first }
        for window in windows where window != kioskWindow && !closing.contains(window) {
            closing.insert(window)
            var event = XEvent()
            event.xclient.type = ClientMessage
            event.xclient.window = window
            event.xclient.message_type = closeWindowAtom
            event.xclient.format = 32
            event.xclient.data.l.0 = Int(CurrentTime)
            event.xclient.data.l.1 = 2 // source: a pager or tool, which the window manager obeys
            XSendEvent(dpy, root, 0, SubstructureRedirectMask | SubstructureNotifyMask, &event)
            XFlush(dpy)
            report(.windowClosed(window: window, name: name(of: window)))
        }
    }

    /// Calls `body` with the client list as soon as it has a window.
    func whenWindowsExist(_ body: @escaping ([Window]) -> Void) {
        let windows = clientWindows()
        if windows.isEmpty { windowWaiters.append(body) } else { body(windows) }
    }

    private func name(of window: Window) -> String {
        var raw: UnsafeMutablePointer<CChar>?
        guard XFetchName(dpy, window, &raw) != 0, let raw else { return "" }
        defer { XFree(raw) }
        return String(cString: raw)
    }

    // MARK: - Keymap

    static func keymap(_ dpy: OpaquePointer) -> Keymap {
        var minCode: Int32 = 0, maxCode: Int32 = 0, perCode: Int32 = 0
        XDisplayKeycodes(dpy, &minCode, &maxCode)
        let count = maxCode - minCode + 1
        guard let syms = XGetKeyboardMapping(dpy, KeyCode(minCode), count, &perCode) else {
            return Keymap(minKeycode: Int(minCode), symbols: [])
        }
        defer { XFree(syms) }
        let per = Int(perCode)
        let symbols = (0..<Int(count)).map { i in (0..<per).map { UInt(syms[i * per + $0]) } }
        return Keymap(minKeycode: Int(minCode), symbols: symbols)
    }

    /// Takes every keysym a viewer may not type off the server's keymap, in one request (one
    /// MappingNotify for the clients); returns how many were taken.
    static func restrictKeymap(_ dpy: OpaquePointer) -> Int {
        let current = keymap(dpy)
        let (restricted, removed) = current.withViewerKeysymsOnly()
        guard removed > 0, let per = restricted.symbols.first?.count, per > 0 else { return 0 }
        var flat = restricted.symbols.flatMap { $0.map { KeySym($0) } }
        XChangeKeyboardMapping(dpy, Int32(restricted.minKeycode), Int32(per), &flat, Int32(restricted.symbols.count))
        XSync(dpy, 0)
        return removed
    }

    static func layout(_ dpy: OpaquePointer) -> ModifierLayout {
        let keymap = keymap(dpy)
        guard let map = XGetModifierMapping(dpy) else { return ModifierLayout(modifierKeycodes: [], keymap: keymap) }
        defer { XFreeModifiermap(map) }
        let per = Int(map.pointee.max_keypermod)
        let codes = (0..<8).map { m in (0..<per).map { map.pointee.modifiermap[m * per + $0] } }
        return ModifierLayout(modifierKeycodes: codes, keymap: keymap)
    }
}
