import Essentials
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One incarnation of a child, whatever it runs.
protocol RunningChild: Sendable {
    var processID: Int32? { get }
    /// Set once the child, and everything it started, is gone.
    var gone: OnceValue<ExitReason> { get }
    /// Passes when the probe does; with no probe, when the child's own start is done.
    /// `launch`: when this incarnation was launched (coarse wall clock, as files are stamped).
    func awaitReady(_ probe: ReadinessProbe?, since launch: timespec) async throws -> String
    /// Stops by the shutdown spec; returns once the child is gone.
    func stop(_ shutdown: Shutdown) async -> ExitReason
}

extension ProcessInstance: RunningChild {
    var processID: Int32? { pid }
    var gone: OnceValue<ExitReason> { fullyGone }

    func awaitReady(_ probe: ReadinessProbe?, since launch: timespec) async throws -> String {
        guard let probe else { return "" }
        return try await awaitReadiness(probe, since: launch, instance: self, taskReady: nil, logWatch: logWatch)
    }
}

/// An async function run as a child. It is stopped by cancellation; one that ignores
/// cancellation past its shutdown timeout is abandoned (a task cannot be killed) and reported.
final class TaskChild: RunningChild {
    let gone = OnceValue<ExitReason>()
    let readySignal = OnceValue<String>()
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)
    private let logger: Logger

    init(body: @escaping @Sendable (TaskChildContext) async throws -> Void, logger: Logger) {
        self.logger = logger
        let context = TaskChildContext(readySignal: readySignal)
        let gone = self.gone
        // Its own task, not one of the supervisor's group: a body that ignores cancellation
        // must be abandonable, or it would hold its supervisor forever. `runChild` awaits `gone`.
        task.withLock {
            $0 = Task {
                do {
                    try await body(context)
                    gone.set(.normal)
                } catch is CancellationError {
                    gone.set(.normal)
                } catch {
                    gone.set(.failed("task threw: \(error)"))
                }
            }
        }
    }

    var processID: Int32? { nil }

    func awaitReady(_ probe: ReadinessProbe?, since launch: timespec) async throws -> String {
        guard let probe else { return "" }
        return try await awaitReadiness(probe, since: launch, instance: nil, taskReady: readySignal, logWatch: nil)
    }

    func stop(_ shutdown: Shutdown) async -> ExitReason {
        task.withLock { $0?.cancel() }
        let limit: Duration? = switch shutdown {
        case .brutalKill: .zero
        case .timeout(let t): t
        case .infinity: nil
        }
        guard let limit else { return (try? await gone.wait()) ?? .normal }
        if let reason = try? await withTimeout(limit, "the task child to stop", { try await self.gone.wait() }) {
            return reason
        }
        logger.error("task child ignored cancellation for \(formatDuration(limit)); abandoned")
        gone.set(.failed("abandoned: did not stop within \(formatDuration(limit))"))
        return gone.current!
    }
}

/// A nested supervisor run as a child. A brutal kill cancels it, which kills its children at once.
final class SupervisorChild: RunningChild {
    let supervisor: Supervisor
    let gone = OnceValue<ExitReason>()
    private let task: Task<Void, Never>

    init(supervisor: Supervisor) {
        self.supervisor = supervisor
        let gone = self.gone
        // Like a process: it runs on its own, and `runChild` awaits `gone`.
        task = Task {
            let outcome = await supervisor.run()
            gone.set(outcome.exitReason)
        }
    }

    var processID: Int32? { nil }

    /// All of its children are ready (then the probe, if any, must pass too).
    func awaitReady(_ probe: ReadinessProbe?, since launch: timespec) async throws -> String {
        try await supervisor.waitReady()
        guard let probe else { return "" }
        return try await awaitReadiness(probe, since: launch, instance: nil, taskReady: nil, logWatch: nil)
    }

    func stop(_ shutdown: Shutdown) async -> ExitReason {
        if shutdown == .brutalKill { task.cancel() } else { supervisor.shutdown() }
        return (try? await gone.wait()) ?? .normal
    }
}

/// What the supervisor keeps of a running incarnation: how to ask it to stop, and what it runs
/// (for the snapshot).
final class ChildHandle: Sendable {
    let stopRequested = OnceValue<Void>()
    private let running = Mutex<(any RunningChild)?>(nil)

    var child: (any RunningChild)? { running.withLock { $0 } }

    func attach(_ child: any RunningChild) { running.withLock { $0 = child } }
}

/// Drives one incarnation: launch, readiness (raced against exit, stop and the timeout), run
/// until exit or stop. Every outcome is reported to the supervisor exactly once, as ready
/// and/or exited, only after the child is completely gone.
func runChild(
    spec: ChildSpec,
    generation: Int,
    handle: ChildHandle,
    launch: @Sendable () async throws -> any RunningChild,
    post: @escaping @Sendable (SupervisorStateMachine.Input) -> Void,
    publish: @escaping @Sendable (SupervisionEvent.Kind) -> Void
) async {
    let id = spec.id
    let launchedAt = coarseNow()
    let child: any RunningChild
    do {
        child = try await launch()
    } catch {
        post(.childExited(id: id, generation: generation, reason: .failed("\(error)")))
        return
    }
    handle.attach(child)
    if let pid = child.processID { publish(.spawned(child: id, pid: pid)) }

    enum Start: Sendable {
        case ready(String)
        case exited(ExitReason)
        case stop
        case failed(String)
    }
    let probe = spec.readiness
    let timeout = spec.readyTimeout
    // Every branch but the clock throws only when cancelled; the caller's cancellation is a stop.
    let start = (try? await race(
        { () async throws -> Start in
            do { return .ready(try await child.awaitReady(probe, since: launchedAt)) } catch let e as ProbeFailure {
                return .failed("readiness probe failed: \(e)")
            } catch let e as SupervisionError {
                return .failed("\(e)")
            }
        },
        { .exited(try await child.gone.wait()) },
        { try await handle.stopRequested.wait(); return .stop },
        {
            try await Task.sleep(for: timeout)
            return .failed("not ready within \(formatDuration(timeout)) (waiting for \(probe?.summary ?? "start"))")
        }
    )) ?? .stop

    switch start {
    case .ready(let detail):
        post(.childReady(id: id, generation: generation, detail: detail))
    case .exited(let reason):
        post(.childExited(id: id, generation: generation, reason: .failed("exited before it was ready: \(reason)\(lastOutput(child))")))
        return
    case .failed(let why):
        _ = await child.stop(spec.shutdown)
        post(.childExited(id: id, generation: generation, reason: .failed(why + lastOutput(child))))
        return
    case .stop:
        post(.childExited(id: id, generation: generation, reason: await child.stop(shutdownNow(spec))))
        return
    }

    enum End: Sendable {
        case exited(ExitReason)
        case stop
    }
    let end = (try? await race(
        { () async throws -> End in .exited(try await child.gone.wait()) },
        { try await handle.stopRequested.wait(); return .stop }
    )) ?? .stop
    let reason: ExitReason
    switch end {
    case .exited(let r): reason = r
    case .stop: reason = await child.stop(shutdownNow(spec))
    }
    post(.childExited(id: id, generation: generation, reason: reason))
}

/// A cancelled supervisor (its stop exceeded its bound) kills at once; otherwise the spec decides.
private func shutdownNow(_ spec: ChildSpec) -> Shutdown {
    Task.isCancelled ? .brutalKill : spec.shutdown
}

/// The lines that say why a process failed, then the last it wrote.
private func lastOutput(_ child: any RunningChild) -> String {
    guard let process = child as? ProcessInstance else { return "" }
    let lines = OutputSink.explanation(process.output.recentLines.map(\.text))
    guard !lines.isEmpty else { return "" }
    return "; last output: " + lines.map { "\"\($0.prefix(300))\"" }.joined(separator: " | ")
}
