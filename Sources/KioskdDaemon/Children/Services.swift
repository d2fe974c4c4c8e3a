import Essentials
import Logging
import ServiceLifecycle
import Supervision

/// The supervision tree as a service: runs the root supervisor, stops it (children in reverse
/// order) on graceful shutdown, and fails the group if the root gives up.
struct SupervisorService: Service {
    let root: Supervisor

    func run() async throws {
        let outcome = await withGracefulShutdownHandler {
            await root.run()
        } onGracefulShutdown: {
            root.shutdown()
        }
        switch outcome {
        case .normal:
            return
        case .failedToStart(let child, let reason):
            throw DaemonError.failedToStart("'\(child)' failed to start: \(reason)")
        case .gaveUp(let why):
            throw DaemonError.gaveUp(why)
        }
    }
}

enum DaemonError: Error, CustomStringConvertible {
    case failedToStart(String)
    case gaveUp(String)
    case setup(key: String, message: String)

    var description: String {
        switch self {
        case .failedToStart(let why): "the supervision tree failed to start: \(why)"
        case .gaveUp(let why): "the root supervisor gave up: \(why)"
        case .setup(let key, let message): "\(key): \(message)"
        }
    }
}

/// Tells systemd what is going on: READY=1 once the tree is up, STATUS= as it changes,
/// WATCHDOG=1 only after a round trip through the root supervisor succeeds, STOPPING=1 first
/// thing at shutdown.
struct NotifierService: Service {
    let notifier: SystemdNotifier
    let root: Supervisor
    let events: EventBus
    let logger: Logger

    func run() async throws {
        let updates = events.subscribe()
        do {
            try await root.waitReady()
        } catch {
            return  // the supervisor service reports why
        }
        let status = Self.status(await root.snapshot())
        notifier.ready(status: status)
        logger.info("ready", metadata: ["status": "\(status)"])
        await withGracefulShutdownHandler {
            await cancelWhenGracefulShutdown {
                await withTaskGroup(of: Void.self) { group in
                    if let interval = notifier.watchdogInterval {
                        group.addTask { await watchdog(every: interval) }
                    }
                    group.addTask {
                        var last = ""
                        for await _ in updates {
                            let text = Self.status(await root.snapshot())
                            if text != last { notifier.status(text) }
                            last = text
                        }
                    }
                    await group.waitForAll()
                }
            }
        } onGracefulShutdown: {
            notifier.stopping()
        }
    }

    private func watchdog(every interval: Duration) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
                _ = try await withTimeout(interval, "the root supervisor to answer") { await root.snapshot() }
                notifier.watchdog()
            } catch is CancellationError {
                return
            } catch {
                logger.warning("watchdog: not pinging systemd: \(error)")
            }
        }
    }

    /// "3/3 programs running", plus what is not running.
    static func status(_ tree: TreeNode) -> String {
        let processes = tree.descendants.filter { $0.kind == "process" }
        let running = processes.filter { $0.status == "running" }
        var text = "\(running.count)/\(processes.count) programs running"
        let others = processes.filter { $0.status != "running" }.map { "\($0.id) \($0.status)" }
        if !others.isEmpty { text += " (" + others.joined(separator: ", ") + ")" }
        return text
    }
}
