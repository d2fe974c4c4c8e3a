import Control
import Store
import Testing

@Suite struct TaskLifecycleTests {
    /// The whole table: every state × every command.
    @Test func everyStateAndCommandHasItsOutcome() {
        let expected: [TaskState: [TaskCommand: TaskState]] = [
            .queued: [.begin: .starting, .fail: .failed, .cancel: .cancelled, .timeOut: .timedOut, .interrupt: .interrupted],
            .starting: [.ready: .running, .fail: .failed, .cancel: .cancelled, .timeOut: .timedOut, .interrupt: .interrupted],
            .running: [.complete: .completed, .fail: .failed, .cancel: .cancelled, .timeOut: .timedOut, .interrupt: .interrupted],
        ]
        for state in TaskState.allCases {
            for command in TaskCommand.allCases {
                #expect(TaskLifecycle.next(state, command) == expected[state]?[command], "\(state) + \(command)")
            }
        }
        #expect(TaskState.allCases.filter(\.isFinal).allSatisfy { s in TaskCommand.allCases.allSatisfy { TaskLifecycle.next(s, $0) == nil } },
                "final states accept nothing")
        #expect(TaskLifecycle.sources(of: .complete) == [.running])
        #expect(TaskLifecycle.sources(of: .cancel) == TaskState.unfinished)
    }
}
