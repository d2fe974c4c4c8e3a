import Essentials
/// When a child that ended is started again (OTP restart types).
public enum RestartType: String, Sendable, CaseIterable {
    /// Always restarted.
    case permanent
    /// Restarted only after an abnormal exit.
    case transient
    /// Never restarted; removed from its supervisor once it ends.
    case temporary
}

/// How a child is stopped (OTP shutdown specs).
public enum Shutdown: Sendable, Equatable {
    /// SIGKILL at once (a task child is cancelled and not waited for).
    case brutalKill
    /// SIGTERM to the whole group, wait this long, then SIGKILL (a task: cancel, wait, abandon).
    case timeout(Duration)
    /// Wait as long as it takes: for nested supervisors, which stop their own children.
    case infinity
}

/// What a child runs.
public enum ChildKind: Sendable {
    /// An external program.
    case process(ProcessSpec)
    /// An async function in this process. Returning is a normal exit, throwing an abnormal one;
    /// it is stopped by cancellation.
    case task(@Sendable (TaskChildContext) async throws -> Void)
    /// A nested supervisor. It is ready when all its children are; it ends abnormally when it
    /// gives up, which is how failures escalate.
    case supervisor(SupervisorSpec)
}

/// One child of a supervisor.
public struct ChildSpec: Sendable {
    public var id: String
    public var kind: ChildKind
    public var restart: RestartType
    public var shutdown: Shutdown
    /// A significant child that ends (and is not restarted) can end its supervisor: see `AutoShutdown`.
    public var significant: Bool
    /// None of its siblings depends on it: its crash restarts only itself, under any strategy.
    /// It still restarts with the rest when a sibling it depends on crashes (rest_for_one: one
    /// before it; one_for_all: any).
    public var restartsAlone: Bool
    /// It does not need the sibling before it to be ready: it is spawned together with that
    /// sibling (and with the run of siblings that sibling starts with), and the start goes on
    /// once all of them are ready. A sibling that needs an earlier one up keeps this false.
    /// Stops, restarts and the strategy still follow the order of the spec.
    ///
    /// A flag on the child rather than a start order on the supervisor or a `startsAfter` id:
    /// a start step stays one group of siblings, so the plan is still a list (start steps in
    /// spec order, stops in reverse) and not a graph to schedule.
    public var startsWithPrevious: Bool
    /// Passing this probe is what "started" means. `nil`: started as soon as it runs.
    public var readiness: ReadinessProbe?
    public var readyTimeout: Duration

    public init(
        id: String,
        kind: ChildKind,
        restart: RestartType = .permanent,
        shutdown: Shutdown? = nil,
        significant: Bool = false,
        restartsAlone: Bool = false,
        startsWithPrevious: Bool = false,
        readiness: ReadinessProbe? = nil,
        readyTimeout: Duration = .seconds(10)
    ) {
        self.id = id
        self.kind = kind
        self.restart = restart
        if let shutdown {
            self.shutdown = shutdown
        } else if case .supervisor = kind {
            self.shutdown = .infinity
        } else {
            self.shutdown = .timeout(.seconds(5))
        }
        self.significant = significant
        self.restartsAlone = restartsAlone
        self.startsWithPrevious = startsWithPrevious
        self.readiness = readiness
        self.readyTimeout = readyTimeout
    }

    /// Rules OTP enforces when a spec is given; checked before anything starts.
    func validate() throws(SupervisionError) {
        if id.isEmpty { throw .invalidSpec("a child id must not be empty") }
        if significant && restart == .permanent {
            throw .invalidSpec("child '\(id)': significant children must be transient or temporary, not permanent")
        }
        if case .timeout(let t) = shutdown, t < .zero {
            throw .invalidSpec("child '\(id)': shutdown timeout must not be negative")
        }
        if readyTimeout <= .zero { throw .invalidSpec("child '\(id)': ready timeout must be positive") }
        if case .process(let p) = kind { try p.validate(childID: id) }
        if case .supervisor(let s) = kind { try s.validate() }
    }
}

/// What an in-process child gets: a way to say it is ready.
public struct TaskChildContext: Sendable {
    let readySignal: OnceValue<String>

    /// Marks the child ready (when its spec has `.signaled` readiness); later calls do nothing.
    public func markReady(_ detail: String = "") { readySignal.set(detail) }
}

public enum SupervisionError: Error, Equatable, CustomStringConvertible {
    case invalidSpec(String)
    case duplicateChild(String)
    case noSuchChild(String)
    case failedToStart(child: String, reason: String)
    case notRunning
    case gaveUp(String)

    public var description: String {
        switch self {
        case .invalidSpec(let why): "invalid supervision spec: \(why)"
        case .duplicateChild(let id): "a child with id '\(id)' already exists"
        case .noSuchChild(let id): "no child with id '\(id)'"
        case .failedToStart(let child, let reason): "child '\(child)' failed to start: \(reason)"
        case .notRunning: "the supervisor is not running"
        case .gaveUp(let why): "supervisor gave up: \(why)"
        }
    }
}
