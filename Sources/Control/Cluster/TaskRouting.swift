/// Where a task's session runs, as the listeners need to know it: a viewer's or an agent's
/// connection is served here, or relayed to the host that owns the task.
public enum TaskOwner: Sendable, Equatable {
    /// This host (always, outside cluster mode), or nobody yet: served here, where the usual
    /// refusals apply (not running, unknown task).
    case local
    /// Another live host: `address` is its internal listener (`host:port`).
    case remote(host: String, address: String)
}

/// Finds a task's owner. Outside cluster mode every task is local.
public protocol TaskRouting: Sendable {
    func owner(of taskID: String) async -> TaskOwner
}

public struct LocalRouting: TaskRouting {
    public init() {}
    public func owner(of taskID: String) async -> TaskOwner { .local }
}
