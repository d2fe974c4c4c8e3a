/// Limits and defaults of the task service (config `tasks.*`): the one place they are written.
public struct TaskLimits: Sendable, Equatable {
    /// Sessions alive at once on this host (warm ones included): a hard cap whatever memory
    /// says; later tasks wait in `queued`.
    public var maxSessions: Int
    /// Tasks waiting at once; a create beyond it is answered 503 with Retry-After.
    public var maxQueued: Int
    /// Default `timeout_s`: how long a task may take to be running.
    public var startTimeout: Duration
    /// Default `max_lifetime_s`, counted from creation.
    public var maxLifetime: Duration
    /// Finished tasks and their events are deleted this long after they end.
    public var retention: Duration
    /// The longest a request waits (`?wait=`): API gateways cut requests at 29 s.
    public var waitLimit: Duration

    public init(maxSessions: Int = 8, maxQueued: Int = 64, startTimeout: Duration = .seconds(120), maxLifetime: Duration = .seconds(3600),
                retention: Duration = .seconds(7 * 86400), waitLimit: Duration = .seconds(25)) {
        self.maxSessions = maxSessions
        self.maxQueued = maxQueued
        self.startTimeout = startTimeout
        self.maxLifetime = maxLifetime
        self.retention = retention
        self.waitLimit = waitLimit
    }
}

/// Memory admission and the warm pool (config `capacity.*`, `sessions.warm`).
public struct CapacitySettings: Sendable, Equatable {
    /// A cap on the sessions' memory besides kioskd's cgroup limit and the machine's; nil: none.
    public var memory: UInt64?
    /// Kept out of the budget for the daemon, the OS and the page cache.
    public var reserve: UInt64
    /// A session's expected peak until sessions have been measured (one idle session measured
    /// ~370 MB PSS; a real page more).
    public var sessionEstimate: UInt64
    /// Host memory pressure (PSI some avg10, percent) that stops admission, and where it resumes.
    public var pressureHigh: Double
    public var pressureLow: Double
    /// Fresh sessions kept booted for tasks to take.
    public var warm: Int
    /// Sessions starting at once (booting, or running for less than 3 s): a burst is admitted
    /// a few at a time, each measured before the next.
    public var maxStarting: Int

    public init(memory: UInt64? = nil, reserve: UInt64 = 512 << 20, sessionEstimate: UInt64 = 512 << 20,
                pressureHigh: Double = 20, pressureLow: Double = 10, warm: Int = 0, maxStarting: Int = 2) {
        self.memory = memory
        self.reserve = reserve
        self.sessionEstimate = sessionEstimate
        self.pressureHigh = pressureHigh
        self.pressureLow = pressureLow
        self.warm = warm
        self.maxStarting = maxStarting
    }
}
