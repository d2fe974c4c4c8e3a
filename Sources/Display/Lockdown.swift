import CX11
import Logging
import Metrics
import Essentials
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One display's lockdown: the key grabber and the window watchdog on their own X connection,
/// served by a dedicated thread (Xlib is not async; one thread per display keeps each
/// connection single-threaded). Everything else talks to it through `perform`.
public final class Lockdown: Sendable {
    public struct Options: Sendable {
        public var display: Int
        /// The session's MIT-MAGIC-COOKIE-1.
        public var cookie: [UInt8]
        public var entries: [GrabEntry]
        /// The session, as a metric dimension and a log field.
        public var session: String

        public init(display: Int, cookie: [UInt8], entries: [GrabEntry] = GrabList.defaults, session: String) {
            self.display = display
            self.cookie = cookie
            self.entries = entries
            self.session = session
        }
    }

    public let display: Int
    /// Grabs placed, and the entries this keymap cannot produce (so cannot be typed either).
    public let grabCount: Int
    public let unmapped: [String]
    /// Action keysyms taken off the keymap when the lockdown connected (`ViewerKeysyms`).
    public let keysymsRemoved: Int
    private let thread: SerialThread<LockdownCore>
    private let end = OnceValue<LockdownError>()
    private let stopping = Atomic<Bool>(false)

    private init(display: Int, grabCount: Int, unmapped: [String], keysymsRemoved: Int, thread: SerialThread<LockdownCore>) {
        self.display = display
        self.grabCount = grabCount
        self.unmapped = unmapped
        self.keysymsRemoved = keysymsRemoved
        self.thread = thread
    }

    /// Connects, places every grab and starts serving. Throws `grabConflict` when another
    /// client holds a combination, `cannotConnect` when the display refuses the cookie.
    public static func start(_ options: Options, report: @escaping @Sendable (LockdownEvent) -> Void) async throws -> Lockdown {
        let started = OnceValue<Result<Lockdown, LockdownError>>()
        let abandoned = OnceValue<Void>()
        guard let thread = try? SerialThread<LockdownCore>() else { throw LockdownError.cannotConnect(display: options.display) }
        let counted: @Sendable (LockdownEvent) -> Void = { event in
            switch event {
            case .blocked(_, let purpose):
                Counter(label: "kioskd_lockdown_blocked_total", dimensions: [("purpose", purpose.rawValue)]).increment()
            case .windowClosed:
                Counter(label: "kioskd_lockdown_windows_closed_total").increment()
            default:
                break
            }
            report(event)
        }
        do {
            try thread.start(name: "x11-lock:\(options.display)") {
                Lockdown.serve(options, thread: thread, report: counted, started: started, abandoned: abandoned)
            }
        } catch {
            throw LockdownError.cannotConnect(display: options.display)
        }
        do {
            return try await started.wait().get()
        } catch is CancellationError {
            // The thread goes on connecting: whatever it gets must not stay grabbed. Each side
            // sets its own value before reading the other's, so one of them stops it.
            abandoned.set(())
            if case .success(let lockdown)? = started.current { lockdown.stop() }
            throw CancellationError()
        }
    }

    /// The thread's whole life: connect, grab, then serve events and commands until stopped
    /// or the server goes away.
    private static func serve(_ options: Options, thread: SerialThread<LockdownCore>, report: @escaping @Sendable (LockdownEvent) -> Void,
                              started: OnceValue<Result<Lockdown, LockdownError>>, abandoned: OnceValue<Void>) {
        guard let dpy = options.cookie.withUnsafeBufferPointer({ kx_open(":\(options.display)", $0.baseAddress, Int32($0.count)) }) else {
            started.set(.failure(.cannotConnect(display: options.display)))
            return
        }
        // Closing the connection is what drops every grab.
        defer { XCloseDisplay(dpy) }
        let core = LockdownCore(dpy: dpy, display: options.display, entries: options.entries, report: report)
        do {
            try core.grabAll()
        } catch {
            started.set(.failure(error))
            return
        }
        let lockdown = Lockdown(display: options.display, grabCount: core.grabCount, unmapped: core.unmapped, keysymsRemoved: core.keysymsRemoved, thread: thread)
        started.set(.success(lockdown))
        if abandoned.current != nil { lockdown.stop() }
        core.enforceSingleWindow()
        lockdown.end.set(lockdown.loop(core))
    }

    private func loop(_ core: LockdownCore) -> LockdownError {
        let display = self.display
        var fds = [pollfd(fd: core.connectionFD, events: Int16(POLLIN), revents: 0), pollfd(fd: thread.wakeFD, events: Int16(POLLIN), revents: 0)]
        while true {
            core.drainEvents()
            XFlush(core.dpy)
            if kx_io_failed() != 0 {
                core.failPending(.connectionLost(display: display))
                return .connectionLost(display: display)
            }
            if stopping.load(ordering: .acquiring) {
                core.failPending(.stopped)
                return .stopped
            }
            var timeout: Int32 = -1
            if let deadline = core.selfTestDeadline {
                let left = deadline - .now
                timeout = max(0, Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1)
            }
            _ = poll(&fds, 2, timeout)
            if fds[1].revents != 0 { thread.runQueued(core) }
            if fds[0].revents & Int16(POLLHUP | POLLERR) != 0 {
                // Let Xlib notice on its next read and report it through the handlers.
                _ = XPending(core.dpy)
                if kx_io_failed() == 0 { return .connectionLost(display: display) }
            }
            core.checkDeadline(now: .now)
        }
    }

    /// Runs `body` on the connection's thread; `body` calls `done` exactly once.
    private func perform<T: Sendable>(_ body: @escaping @Sendable (LockdownCore, @escaping (Result<T, LockdownError>) -> Void) -> Void) async throws -> T {
        if let why = end.current { throw why }
        let result = OnceValue<Result<T, LockdownError>>()
        thread.enqueue { core in body(core) { result.set($0) } }
        // If the thread ends first, the command never runs: its end answers instead.
        return try await race({ try await result.wait() }, { .failure(try await self.end.wait()) }).get()
    }

    /// Injects one combination of each purpose through XTEST and waits until the grabber has
    /// received every one (a grabbed event goes only to the grabber, so the browser did not).
    /// Returns the combinations tested.
    public func selfTest(timeout: Duration = .seconds(2)) async throws -> [String] {
        try await perform { core, done in core.startSelfTest(timeout: timeout, finish: done) }
    }

    /// Releases every key and button the X server has down.
    @discardableResult
    public func releaseHeldInput() async throws -> LockdownEvent {
        try await perform { core, done in done(.success(core.releaseHeldInput())) }
    }

    /// The window manager's top-level windows, oldest first.
    public func clientWindows() async throws -> [UInt] {
        try await perform { core, done in done(.success(core.clientWindows())) }
    }

    /// The top-level windows once there is at least one (the browser's window is mapped).
    public func firstWindows() async throws -> [UInt] {
        try await perform { core, done in core.whenWindowsExist { done(.success($0)) } }
    }

    /// Waits until the lockdown ends: stopped, or its X server gone.
    public func ended() async throws -> LockdownError { try await end.wait() }

    /// Ungrabs (by closing the connection) and ends the thread.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        thread.wake()
    }
}
