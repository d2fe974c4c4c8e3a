@testable import Control
import Testing

/// The deadlines as values: no clock, instants made from one origin.
@Suite struct TaskDeadlinesTests {
    let t0 = ContinuousClock.now

    @Test func aStartDeadlineFallsFirstThenTheLifetime() {
        var d = TaskDeadlines()
        d.arm("a", now: t0, startTimeout: .seconds(120), lifetime: .seconds(3600))
        #expect(d.next == t0 + .seconds(120))
        #expect(d.due(at: t0 + .seconds(119)).isEmpty, "nothing before its time")
        let start = d.due(at: t0 + .seconds(120))
        #expect(start.map(\.id) == ["a"] && start.first?.expiry == .notRunning(after: .seconds(120)))
        #expect(d.next == t0 + .seconds(3600), "the start deadline is taken once")
        #expect(d.due(at: t0 + .seconds(121)).isEmpty)
        let end = d.due(at: t0 + .seconds(3600))
        #expect(end.first?.expiry == .lifetime(.seconds(3600)))
        #expect(d.next == nil && d.count == 0, "a lifetime ends the entry")
    }

    @Test func aStartTimeoutAtOrPastTheLifetimeIsTheLifetimesAlone() {
        var d = TaskDeadlines()
        d.arm("a", now: t0, startTimeout: .seconds(60), lifetime: .seconds(60))
        d.arm("b", now: t0, startTimeout: .seconds(90), lifetime: .seconds(60))
        #expect(d.next == t0 + .seconds(60))
        let due = d.due(at: t0 + .seconds(60))
        #expect(due.map(\.id) == ["a", "b"])
        #expect(due.allSatisfy { $0.expiry == .lifetime(.seconds(60)) })
    }

    @Test func passedDeadlinesComeEarliestFirstAndBothAtOnceWhenLate() {
        var d = TaskDeadlines()
        d.arm("late", now: t0 + .seconds(5), startTimeout: .seconds(10), lifetime: .seconds(20))
        d.arm("early", now: t0, startTimeout: .seconds(10), lifetime: .seconds(20))
        #expect(d.next == t0 + .seconds(10))
        let due = d.due(at: t0 + .seconds(100))
        #expect(due.map(\.id) == ["early", "late", "early", "late"], "\(due)")
        #expect(due.map(\.expiry) == [.notRunning(after: .seconds(10)), .notRunning(after: .seconds(10)),
                                      .lifetime(.seconds(20)), .lifetime(.seconds(20))])
        #expect(d.count == 0)
    }

    @Test func aFinishedTaskHasNoneLeft() {
        var d = TaskDeadlines()
        d.arm("a", now: t0, startTimeout: .seconds(1), lifetime: .seconds(2))
        d.arm("b", now: t0, startTimeout: .seconds(3), lifetime: .seconds(4))
        d.remove("a")
        #expect(d.next == t0 + .seconds(3))
        #expect(d.due(at: t0 + .seconds(10)).allSatisfy { $0.id == "b" })
    }
}
