import CSupport
import Essentials
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One thread, one epoll set: every child's pidfd (exit seen the moment it happens, immune to
/// PID reuse) and every output pipe (drained line by line, so a child never blocks on a full
/// pipe). Children are forked on this thread too: PR_SET_PDEATHSIG fires when the *forking
/// thread* exits, and this one lives as long as the process.
final class ProcessReactor: Sendable {
    static let shared = ProcessReactor()

    /// Longest line kept whole; longer output is cut into pieces of this size.
    static let maxLineBytes = 8192
    /// Reads of 64 KiB per fd per wake-up: 1 MiB, what a pipe holds at most by default (so a dead
    /// child's last output is all read before its exit is reported), and a bound on how long a
    /// flooding child keeps this thread from every other child's output and exit.
    static let maxReadsPerWake = 16

    private enum Watch {
        case exit(pid: Int32, pidfd: Int32, outputs: [Int32], done: OnceValue<ExitReason>)
        case output(fd: Int32, stream: OutputSink.Line.Stream, sink: OutputSink, buffer: [UInt8])
        case notify(fd: Int32, buffer: [UInt8], line: OnceValue<String>)
        case wake
    }

    private struct State {
        var watches: [Int32: Watch] = [:]
        var trackedPIDs: [Int32: Int32] = [:]  // pid -> pidfd
        var reapOrphans = false
    }

    private let epfd: Int32
    private let thread: SerialThread<Void>
    private var wakeFD: Int32 { thread.wakeFD }
    private let state = Mutex(State())
    private let logger = Logger(label: "kioskd.reactor")

    private init() {
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epfd >= 0, "cannot create the process reactor's epoll set")
        do {
            thread = try SerialThread()
        } catch {
            preconditionFailure("cannot create the process reactor's wake-up: \(error)")
        }
        state.withLock { $0.watches[wakeFD] = .wake }
        add(wakeFD)
        do {
            // The reactor lives as long as the process, and so does its thread.
            try thread.start(name: "kioskd-reactor") { [self] in loop() }
        } catch {
            preconditionFailure("cannot start the process reactor thread: \(error)")
        }
    }

    /// Makes this process a subreaper and reaps orphans that reparent to it. Only for a process
    /// that spawns exclusively through this reactor (the daemon): it reaps *every* child.
    func adoptOrphans() throws(SystemError) {
        try sys("prctl(PR_SET_CHILD_SUBREAPER)") { ksup_set_child_subreaper() }
        state.withLock { $0.reapOrphans = true }
        try sys("sigaction(SIGCHLD)") { ksup_install_sigchld_wakeup(wakeFD) }
    }

    /// Runs `body` on the reactor thread and returns its result.
    func perform<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            thread.enqueue { _ in c.resume(with: Result { try body() }) }
        }
    }

    // MARK: - Called on the reactor thread (from `perform`)

    /// Registers a freshly spawned child: its pidfd, output pipes and notify pipe.
    func track(pid: Int32, pidfd: Int32, stdout: Int32, stderr: Int32, sink: OutputSink, notify: (fd: Int32, line: OnceValue<String>)?, exit: OnceValue<ExitReason>) {
        state.withLock { s in
            s.watches[pidfd] = .exit(pid: pid, pidfd: pidfd, outputs: [stdout, stderr], done: exit)
            s.watches[stdout] = .output(fd: stdout, stream: .stdout, sink: sink, buffer: [])
            s.watches[stderr] = .output(fd: stderr, stream: .stderr, sink: sink, buffer: [])
            if let notify { s.watches[notify.fd] = .notify(fd: notify.fd, buffer: [], line: notify.line) }
            s.trackedPIDs[pid] = pidfd
        }
        for fd in [pidfd, stdout, stderr] + (notify.map { [$0.fd] } ?? []) {
            if fd != pidfd { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
            add(fd)
        }
    }

    private func add(_ fd: Int32) {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue
        event.data.fd = fd
        let rc = epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event)
        precondition(rc == 0, "epoll_ctl(ADD, \(fd)) failed: errno \(errno)")
    }

    private func remove(_ fd: Int32) {
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
        _ = state.withLock { $0.watches.removeValue(forKey: fd) }
    }

    private func loop() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let n = epoll_wait(epfd, &events, Int32(events.count), -1)
            if n < 0 {
                if errno == EINTR { continue }
                fatalError("epoll_wait failed: errno \(errno)")
            }
            // Output before exits: a crash's last lines should be in the ring when it is reported.
            let fds = (0..<Int(n)).map { events[$0].data.fd }
            let watches = state.withLock { s in fds.map { s.watches[$0] } }
            for case (let fd, let watch?) in zip(fds, watches) {
                if case .exit = watch { continue }
                handle(fd, watch)
            }
            for case (let fd, let watch?) in zip(fds, watches) {
                if case .exit = watch { handle(fd, watch) }
            }
        }
    }

    private func handle(_ fd: Int32, _ watch: Watch) {
        switch watch {
        case .wake:
            thread.runQueued(())
            if state.withLock({ $0.reapOrphans }) { reapChildren() }
        case .output(_, let stream, let sink, var buffer):
            if drain(fd, into: &buffer, emit: { sink.append($0, stream: stream) }) {
                state.withLock { $0.watches[fd] = .output(fd: fd, stream: stream, sink: sink, buffer: buffer) }
            } else {
                remove(fd)
                close(fd)
            }
        case .notify(_, var buffer, let line):
            let open = drain(fd, into: &buffer, emit: { line.set($0) })
            if !open || line.current != nil {
                remove(fd)
                close(fd)
            } else {
                state.withLock { $0.watches[fd] = .notify(fd: fd, buffer: buffer, line: line) }
            }
        case .exit(let pid, let pidfd, let outputs, let done):
            reap(pid: pid, pidfd: pidfd, outputs: outputs, done: done)
        }
    }

    private func reap(pid: Int32, pidfd: Int32, outputs: [Int32], done: OnceValue<ExitReason>) {
        var code: Int32 = 0, status: Int32 = 0, reaped: Int32 = 0
        guard ksup_wait_pidfd(pidfd, WEXITED | WNOHANG, &code, &status, &reaped) == 0, reaped != 0 else { return }
        // Take what the child wrote just before dying; a grandchild may keep the pipe open, so
        // don't wait for EOF.
        for out in outputs {
            if case .output(_, let stream, let sink, var buffer)? = state.withLock({ $0.watches[out] }) {
                _ = drain(out, into: &buffer, emit: { sink.append($0, stream: stream) })
                state.withLock { $0.watches[out] = .output(fd: out, stream: stream, sink: sink, buffer: buffer) }
            }
        }
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, pidfd, nil)
        state.withLock { s in
            s.watches.removeValue(forKey: pidfd)
            s.trackedPIDs.removeValue(forKey: pid)
        }
        let reason: ExitReason = code == CLD_EXITED ? .exited(status) : .signaled(status)
        done.set(reason)
    }

    /// Subreaper mode: reap every exited child. Ours go through their pidfd so their status
    /// reaches the supervisor; orphans of our descendants are reaped and logged.
    private func reapChildren() {
        while true {
            var pid: Int32 = 0
            guard ksup_peek_exited_child(&pid) == 0, pid > 0 else { return }
            let watch: Watch? = state.withLock { s in s.trackedPIDs[pid].flatMap { s.watches[$0] } }
            if case .exit(let pid, let pidfd, let outputs, let done)? = watch {
                reap(pid: pid, pidfd: pidfd, outputs: outputs, done: done)
            } else {
                var status: Int32 = 0
                _ = waitpid(pid, &status, 0)
                logger.debug("reaped orphaned descendant", metadata: ["pid": "\(pid)"])
            }
        }
    }

    /// Reads what is available, up to `maxReadsPerWake` reads (epoll reports the fd again for the
    /// rest); calls `emit` per complete line. Returns false at EOF or error.
    private func drain(_ fd: Int32, into buffer: inout [UInt8], emit: (String) -> Void) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<Self.maxReadsPerWake {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                var start = 0
                for i in 0..<n where chunk[i] == UInt8(ascii: "\n") {
                    buffer.append(contentsOf: chunk[start..<i])
                    emitLine(&buffer, emit)
                    start = i + 1
                }
                buffer.append(contentsOf: chunk[start..<n])
                while buffer.count >= Self.maxLineBytes {
                    var piece = Array(buffer.prefix(Self.maxLineBytes))
                    buffer.removeFirst(Self.maxLineBytes)
                    emitLine(&piece, emit)
                }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return true }
            if !buffer.isEmpty { emitLine(&buffer, emit) }
            return false
        }
        return true
    }

    private func emitLine(_ buffer: inout [UInt8], _ emit: (String) -> Void) {
        if buffer.last == UInt8(ascii: "\r") { buffer.removeLast() }
        emit(String(decoding: buffer, as: UTF8.self))
        buffer.removeAll(keepingCapacity: true)
    }
}
