import CX11
import Logging
import Metrics
import Supervision
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
    private let commands = Mutex<[@Sendable (LockdownCore) -> Void]>([])
    private let wakeFD: Int32
    private let end = OnceValue<LockdownError>()
    private let stopping = Atomic<Bool>(false)

    private init(display: Int, grabCount: Int, unmapped: [String], keysymsRemoved: Int, wakeFD: Int32) {
        self.display = display
        self.grabCount = grabCount
        self.unmapped = unmapped
        self.keysymsRemoved = keysymsRemoved
        self.wakeFD = wakeFD
    }

    /// Connects, places every grab and starts serving. Throws `grabConflict` when another
    /// client holds a combination, `cannotConnect` when the display refuses the cookie.
    public static func start(_ options: Options, report: @escaping @Sendable (LockdownEvent) -> Void) async throws -> Lockdown {
        let started = OnceValue<Result<Lockdown, LockdownError>>()
        let wake = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wake >= 0 else { throw LockdownError.cannotConnect(display: options.display) }
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
        guard startThread(name: "x11-lock:\(options.display)", { Lockdown.serve(options, wakeFD: wake, report: counted, started: started) }) else {
            close(wake)
            throw LockdownError.cannotConnect(display: options.display)
        }
        do {
            return try await started.wait().get()
        } catch is CancellationError {
            // The thread goes on connecting: whatever it gets must not stay grabbed.
            Task { if case .success(let lockdown)? = try? await started.wait() { lockdown.stop() } }
            throw CancellationError()
        }
    }

    /// The thread's whole life: connect, grab, then serve events and commands until stopped
    /// or the server goes away.
    private static func serve(_ options: Options, wakeFD: Int32, report: @escaping @Sendable (LockdownEvent) -> Void,
                              started: OnceValue<Result<Lockdown, LockdownError>>) {
        guard let dpy = options.cookie.withUnsafeBufferPointer({ kx_open(":\(options.display)", $0.baseAddress, Int32($0.count)) }) else {
            close(wakeFD)
            started.set(.failure(.cannotConnect(display: options.display)))
            return
        }
        // Closing the connection is what drops every grab.
        defer { XCloseDisplay(dpy) }
        let core = LockdownCore(dpy: dpy, display: options.display, entries: options.entries, report: report)
        do {
            try core.grabAll()
        } catch {
            close(wakeFD)
            started.set(.failure(error))
            return
        }
        let lockdown = Lockdown(display: options.display, grabCount: core.grabCount, unmapped: core.unmapped, keysymsRemoved: core.keysymsRemoved, wakeFD: wakeFD)
        started.set(.success(lockdown))
        core.enforceSingleWindow()
        lockdown.end.set(lockdown.loop(core))
    }

    private func loop(_ core: LockdownCore) -> LockdownError {
        let display = self.display
        var fds = [pollfd(fd: core.connectionFD, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
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
            if fds[1].revents != 0 {
                var count: UInt64 = 0
                _ = read(wakeFD, &count, 8)
                for command in commands.withLock({ queue in defer { queue = [] }; return queue }) { command(core) }
            }
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
        commands.withLock { $0.append { core in body(core) { result.set($0) } } }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        // If the thread ends first, the command never runs: its end answers instead.
        return try await withThrowingTaskGroup(of: Result<T, LockdownError>.self) { group in
            group.addTask { try await result.wait() }
            group.addTask { .failure(try await self.end.wait()) }
            let first = try await group.next()!
            group.cancelAll()
            return try first.get()
        }
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

    deinit { close(wakeFD) }

    /// Ungrabs (by closing the connection) and ends the thread.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }
}

/// A detached pthread running `body`: the X connection's blocking loop must not occupy one of
/// the concurrency pool's few threads.
private func startThread(name: String, _ body: @escaping @Sendable () -> Void) -> Bool {
    final class Box: Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(_ name: String, _ body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
    let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        // Thread names are at most 15 bytes: visible in top -H and core dumps.
        kx_name_thread(String(box.name.prefix(15)))
        box.body()
        return nil
    }, box)
    guard rc == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        return false
    }
    pthread_detach(thread)
    return true
}
