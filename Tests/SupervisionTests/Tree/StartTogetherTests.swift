import Testing
@testable import Supervision

/// Siblings that start with the previous one (`ChildSpec.startsWithPrevious`): spawned in one
/// step, waited for together; stops, restarts and the budget keep the spec's order.
@Suite("Supervisor state machine: siblings started together")
struct StartTogetherTests {
    typealias Action = SupervisorStateMachine.Action

    @Test func siblingsThatStartWithThePreviousOneAreSpawnedAtOnce() {
        var h = Harness(.oneForOne, [("vnc", .permanent), ("browser", .permanent), ("watch", .permanent)], withPrevious: ["browser", "watch"])
        #expect(Harness.effects(h.send(.start)) == [
            .startChild(id: "vnc", generation: 1), .startChild(id: "browser", generation: 1), .startChild(id: "watch", generation: 1),
        ])
    }

    @Test func theSupervisorIsReadyOnlyOnceEveryOneOfThemIs() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)], withPrevious: ["b", "c"])
        _ = h.send(.start)
        #expect(h.ready("c").isEmpty)
        #expect(h.ready("a").isEmpty)
        #expect(h.ready("b") == [.ready])
    }

    @Test func aSiblingThatNeedsAnEarlierOneWaitsForItsWholeStep() {
        // websockify connects to x11vnc's socket: it starts once x11vnc is ready, with the browser.
        var h = Harness(.oneForOne, [("vnc", .permanent), ("ws", .permanent), ("browser", .permanent), ("watch", .permanent)],
                        withPrevious: ["browser"])
        #expect(Harness.effects(h.send(.start)) == [.startChild(id: "vnc", generation: 1)])
        #expect(h.ready("vnc") == [.startChild(id: "ws", generation: 1), .startChild(id: "browser", generation: 1)])
        #expect(h.ready("browser").isEmpty, "the step waits for ws too")
        #expect(h.ready("ws") == [.startChild(id: "watch", generation: 1)])
        #expect(h.ready("watch") == [.ready])
    }

    @Test func aFailureDuringATogetherStartStopsTheStartedInReverseAndFails() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent), ("d", .permanent)], withPrevious: ["b", "c"])
        _ = h.send(.start)
        _ = h.ready("a")
        // b fails while c is still starting: c is stopped, then a; d never starts.
        #expect(h.exit("b", .failed("not ready within 1 s")) == [.stopChild(id: "c", generation: 1)])
        #expect(h.ready("c").isEmpty, "a late ready of a stopping child changes nothing")
        #expect(h.exit("c", .signaled(15)) == [.stopChild(id: "a", generation: 1)])
        #expect(h.exit("a", .signaled(15)) == [.finish(.failedToStart(child: "b", reason: "not ready within 1 s"))])
        #expect(h.machine.child("d")!.generation == 0)
        #expect(h.machine.children.allSatisfy { $0.status == .down })
    }

    @Test func stopsStayInReverseOrderOneAtATime() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)], withPrevious: ["b", "c"])
        _ = h.send(.start)
        for id in ["a", "b", "c"] { _ = h.ready(id) }
        #expect(Harness.effects(h.send(.stop)) == [.stopChild(id: "c", generation: 1)])
        #expect(h.exit("c", .signaled(15)) == [.stopChild(id: "b", generation: 1)])
        #expect(h.exit("b", .signaled(15)) == [.stopChild(id: "a", generation: 1)])
        #expect(h.exit("a", .signaled(15)) == [.finish(.normal("stop requested"))])
    }

    @Test func aStopDuringATogetherStartStopsEveryStartingChildInReverse() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)], withPrevious: ["b", "c"])
        _ = h.send(.start)
        _ = h.ready("b")
        #expect(Harness.effects(h.send(.stop)) == [.stopChild(id: "c", generation: 1)])
        #expect(h.exit("c", .signaled(15)) == [.stopChild(id: "b", generation: 1)])
        #expect(h.exit("b", .signaled(15)) == [.stopChild(id: "a", generation: 1)])
        #expect(h.exit("a", .signaled(15)) == [.finish(.normal("stop requested"))])
    }

    @Test func restForOneRestartsTheRestByPositionAndStartsItTogether() {
        var h = Harness(.restForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent), ("d", .permanent)], withPrevious: ["c", "d"])
        _ = h.send(.start)
        _ = h.ready("a")
        for id in ["b", "c", "d"] { _ = h.ready(id) }
        #expect(h.exit("c") == [.stopChild(id: "d", generation: 1)])
        #expect(h.exit("d", .signaled(15)) == [.startChild(id: "c", generation: 2), .startChild(id: "d", generation: 2)])
        _ = h.ready("d")
        _ = h.ready("c")
        #expect(h.exit("b") == [.stopChild(id: "d", generation: 2)])
        #expect(h.exit("d", .signaled(15)) == [.stopChild(id: "c", generation: 2)])
        #expect(h.exit("c", .signaled(15)) == [
            .startChild(id: "b", generation: 2), .startChild(id: "c", generation: 3), .startChild(id: "d", generation: 3),
        ])
        #expect(h.machine.child("a")!.generation == 1)
        #expect(h.counted == ["c", "b"])
    }

    @Test func oneForOneRestartsOnlyTheCrashedSibling() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent)], withPrevious: ["b"])
        _ = h.send(.start)
        _ = h.ready("a")
        _ = h.ready("b")
        #expect(h.exit("a") == [.startChild(id: "a", generation: 2)])
        #expect(h.machine.child("b")!.generation == 1)
    }

    @Test func aFailedRestartEndsItsStepStopsItsDependentsAndBacksOff() {
        var h = Harness(.restForOne, [("a", .permanent), ("b", .permanent)], intensity: .init(maxRestarts: 5, period: .seconds(60)),
                        withPrevious: ["b"])
        _ = h.send(.start)
        _ = h.ready("a")
        _ = h.ready("b")
        #expect(h.exit("a") == [.stopChild(id: "b", generation: 1)])
        #expect(h.exit("b", .signaled(15)) == [.startChild(id: "a", generation: 2), .startChild(id: "b", generation: 2)])
        // a fails while b, which depends on it, is still starting: b is stopped at once, not
        // waited for; both start again after the backoff, as they would one after the other.
        #expect(h.exit("a", .failed("not ready")) == [.stopChild(id: "b", generation: 2)])
        #expect(h.exit("b", .signaled(15)) == [.scheduleTimer(token: 1, after: .milliseconds(100))])
        #expect(Harness.effects(h.send(.timerFired(token: 1))) == [.startChild(id: "a", generation: 3), .startChild(id: "b", generation: 3)])
        #expect(h.counted == ["a", "a"])
        #expect(h.machine.child("a")!.failures == 2)
    }

    @Test func aCrashOfAReadySiblingDuringTheStartRestartsItOnceTheStartIsDone() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent)], withPrevious: ["b"])
        _ = h.send(.start)
        _ = h.ready("a")
        #expect(h.exit("a").isEmpty, "the initial start runs to its end first")
        #expect(h.ready("b") == [.ready, .startChild(id: "a", generation: 2)])
    }
}
