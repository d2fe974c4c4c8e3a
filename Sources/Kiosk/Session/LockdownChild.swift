import Display
import Essentials
import Logging
import Supervision
import Synchronization

/// The session's lockdown as a supervised child ("lockdown", after the window manager), and
/// the handle the rest of the session uses to reach whichever incarnation is running.
///
/// Ready once every grab is placed and the XTEST self-test has seen one combination of each
/// purpose arrive at the grabber. The browser watch repeats the self-test against the running
/// browser (`verifyAgainstBrowser`) before the session counts as ready.
public final class LockdownChild: Sendable {
    public static let id = "lockdown"

    let options: Lockdown.Options
    let report: @Sendable (LockdownEvent) -> Void
    let logger: Logger
    private let current = Mutex<Lockdown?>(nil)

    public init(options: Lockdown.Options, logger: Logger, report: @escaping @Sendable (LockdownEvent) -> Void) {
        self.options = options
        self.logger = logger
        self.report = report
    }

    public func childSpec() -> ChildSpec {
        ChildSpec(id: Self.id, kind: .task { context in try await self.run(context) },
                  restart: .permanent, shutdown: .timeout(.seconds(2)), readiness: .signaled, readyTimeout: .seconds(10))
    }

    private func run(_ context: TaskChildContext) async throws {
        let lockdown = try await Lockdown.start(options, report: report)
        current.withLock { $0 = lockdown }
        do {
            let tested = try await lockdown.selfTest()
            if !lockdown.unmapped.isEmpty {
                logger.warning("lockdown: combinations this keymap cannot produce", metadata: ["unmapped": "\(lockdown.unmapped)"])
            }
            context.markReady("\(lockdown.grabCount) grabs, \(lockdown.keysymsRemoved) action keysyms off the keymap; self-test received \(tested.joined(separator: " "))")
            throw try await lockdown.ended()
        } catch {
            // Wait for the connection to close: a new incarnation's grabs would otherwise meet
            // this one's (BadAccess). Shielded, because this task may be cancelled.
            lockdown.stop()
            _ = try? await shielded { try await lockdown.ended() }
            current.withLock { if $0 === lockdown { $0 = nil } }
            throw error
        }
    }

    private var running: Lockdown {
        get throws(LockdownError) {
            guard let lockdown = current.withLock({ $0 }) else { throw .connectionLost(display: options.display) }
            return lockdown
        }
    }

    /// Repeats the self-test with the browser up: its window must be mapped first, and the
    /// windows must be the same afterwards. Returns the combinations tested.
    func verifyAgainstBrowser() async throws -> String {
        let lockdown = try running
        let before = try await withTimeout(.seconds(10), "the browser's window to appear") { try await lockdown.firstWindows() }
        let tested = try await lockdown.selfTest()
        let after = try await lockdown.clientWindows()
        guard after == before else {
            throw LockdownCheckError(description: "top-level windows changed during the lockdown self-test: \(before) → \(after)")
        }
        return tested.joined(separator: " ")
    }

    /// Releases whatever keys and buttons are down; reports it when there was any.
    public func releaseHeldInput() async throws -> LockdownEvent {
        let event = try await running.releaseHeldInput()
        if case .inputReleased(let keys, let buttons) = event, !(keys.isEmpty && buttons.isEmpty) { report(event) }
        return event
    }

    func windows() async throws -> [UInt] {
        try await running.clientWindows()
    }

    /// For x11vnc's "viewer gone" line, which arrives on the reactor thread: a synchronous
    /// callback, so the release runs as a task of its own (short: one X round trip).
    @Sendable func viewerGone() {
        Task {
            do {
                _ = try await releaseHeldInput()
            } catch {
                logger.warning("could not release held input after a viewer left", metadata: ["reason": "\(error)"])
            }
        }
    }
}

struct LockdownCheckError: Error, CustomStringConvertible {
    let description: String
}
