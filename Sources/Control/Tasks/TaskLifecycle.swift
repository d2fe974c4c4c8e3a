import Store

/// What can happen to a task. Who sends each: the service (begin, ready, timeOut, interrupt,
/// fail when its session fails) and the API (complete, fail, cancel).
public enum TaskCommand: String, Sendable, CaseIterable {
    case begin, ready, complete, fail, cancel, timeOut = "time_out", interrupt
}

/// The task lifecycle as a pure function:
///
///     queued ─begin→ starting ─ready→ running ─complete→ completed
///        │              │                │
///        └──────────────┴────────────────┴─ fail → failed · cancel → cancelled
///                                             time_out → timed_out · interrupt → interrupted
///
/// Final states accept nothing: a second stop, or a complete after a cancel, is a conflict the
/// API answers with 409 and the state the task is in.
public enum TaskLifecycle {
    public static func next(_ state: TaskState, _ command: TaskCommand) -> TaskState? {
        switch (state, command) {
        case (.queued, .begin): .starting
        case (.starting, .ready): .running
        case (.running, .complete): .completed
        case (.queued, .fail), (.starting, .fail), (.running, .fail): .failed
        case (.queued, .cancel), (.starting, .cancel), (.running, .cancel): .cancelled
        case (.queued, .timeOut), (.starting, .timeOut), (.running, .timeOut): .timedOut
        case (.queued, .interrupt), (.starting, .interrupt), (.running, .interrupt): .interrupted
        default: nil
        }
    }

    /// The states a command is accepted in.
    public static func sources(of command: TaskCommand) -> Set<TaskState> {
        Set(TaskState.allCases.filter { next($0, command) != nil })
    }
}
