/// Limits and defaults of the task service (config `tasks.*`): the one place they are written.
public struct TaskLimits: Sendable, Equatable {
    /// Sessions running at once on this host; later tasks wait in `queued`.
    public var maxSessions: Int
    /// Default `timeout_s`: how long a task may take to be running.
    public var startTimeout: Duration
    /// Default `max_lifetime_s`, counted from creation.
    public var maxLifetime: Duration
    /// Finished tasks and their events are deleted this long after they end.
    public var retention: Duration
    /// The longest a request waits (`?wait=`): API gateways cut requests at 29 s.
    public var waitLimit: Duration

    public init(maxSessions: Int = 8, startTimeout: Duration = .seconds(120), maxLifetime: Duration = .seconds(3600),
                retention: Duration = .seconds(7 * 86400), waitLimit: Duration = .seconds(25)) {
        self.maxSessions = maxSessions
        self.startTimeout = startTimeout
        self.maxLifetime = maxLifetime
        self.retention = retention
        self.waitLimit = waitLimit
    }
}
