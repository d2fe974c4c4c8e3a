import CSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A dedicated thread for a blocking loop (epoll over pidfds and pipes, an Xlib connection),
/// which async code talks to by queueing commands. One thread per loop keeps the loop's state
/// single-threaded, and a blocking loop never holds one of the concurrency pool's few threads.
///
/// The loop polls `wakeFD` beside its own descriptors and calls `runQueued` when it is readable;
/// commands run in the order they were queued, with the loop's context (its connection, its
/// state) as their argument.
public final class SerialThread<Context>: Sendable {
    /// Readable while commands wait (an eventfd).
    public let wakeFD: Int32
    private let commands = Mutex<[@Sendable (Context) -> Void]>([])

    public init() throws(SystemError) {
        wakeFD = try sys("eventfd") { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
    }

    deinit { close(wakeFD) }

    /// Starts the thread (detached, named for `top -H` and core dumps; at most 15 bytes) running
    /// `loop`, which owns the thread until it returns.
    public func start(name: String, _ loop: @escaping @Sendable () -> Void) throws(SystemError) {
        let box = Unmanaged.passRetained(ThreadBody(name, loop)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let body = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
            ksup_name_thread(body.name)
            body.loop()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            throw SystemError("pthread_create(\(name))", errno: rc)
        }
        pthread_detach(thread)
    }

    /// Queues `command` for the thread and wakes it.
    public func enqueue(_ command: @escaping @Sendable (Context) -> Void) {
        commands.withLock { $0.append(command) }
        wake()
    }

    /// Wakes the loop without a command (it rechecks its own state, e.g. a stop flag).
    public func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// On the thread, when `wakeFD` is readable: clears it and runs what was queued.
    public func runQueued(_ context: Context) {
        var count: UInt64 = 0
        _ = read(wakeFD, &count, 8)
        for command in commands.withLock({ queue in defer { queue = [] }; return queue }) { command(context) }
    }
}

/// What a new thread runs, handed over through pthread_create's one pointer.
private final class ThreadBody: Sendable {
    let name: String
    let loop: @Sendable () -> Void

    init(_ name: String, _ loop: @escaping @Sendable () -> Void) {
        self.name = name
        self.loop = loop
    }
}
