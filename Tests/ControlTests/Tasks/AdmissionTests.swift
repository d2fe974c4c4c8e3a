@testable import Control
import Testing

/// Admission as values: requests, measurements and ends in, actions out; no sessions, no clock.
@Suite struct AdmissionTests {
    static let mib: UInt64 = 1 << 20

    /// `young`: sessions starting at once; unbounded unless a test is about it.
    func machine(max: Int = 8, queue: Int = 4, budget: UInt64 = 1000 * mib, estimate: UInt64 = 300 * mib, warm: Int = 0,
                 young: Int = 100) -> Admission {
        Admission(.init(maxSessions: max, maxQueued: queue, budget: budget, initialEstimate: estimate, pressureHigh: 20, pressureLow: 10,
                        warm: warm, warmShape: "default", maxYoung: young, provenAfter: .seconds(3), settleAfter: .seconds(30)))
    }

    static let settled = Duration.seconds(31)

    /// Warm ids the tests can predict: w1, w2, …
    final class Names {
        var n = 0
        func next() -> String { n += 1; return "w\(n)" }
    }

    @Test func tasksStartWhileTheirCostFitsThenWaitInOrder() {
        var a = machine()
        let names = Names()
        for id in ["a", "b", "c", "d"] {
            #expect(a.refusal() == nil)
            a.enqueue(id, shape: "default")
        }
        #expect(a.next(newWarmID: names.next) == [.start(task: "a", warm: nil), .start(task: "b", warm: nil), .start(task: "c", warm: nil)],
                "3 × 300 MiB fit in 1000 MiB; a fourth would not")
        #expect(a.queued == 1 && a.active == 3 && a.committed == 900 * Self.mib)
        #expect(a.next(newWarmID: names.next).isEmpty, "nothing changed, nothing to do")
        a.released("b", peak: 200 * Self.mib)
        #expect(a.next(newWarmID: names.next) == [.start(task: "d", warm: nil)], "an ended session lets the head start")
    }

    @Test func theHardCapHoldsWhateverMemorySays() {
        var a = machine(max: 2, budget: 100_000 * Self.mib)
        for id in ["a", "b", "c"] { a.enqueue(id, shape: "default") }
        #expect(a.next(newWarmID: Names().next).count == 2)
        #expect(a.slotsFree == 0 && a.queued == 1)
    }

    @Test func aSessionGrowingPastTheEstimateRaisesEverySessionsCostAndHoldsTheQueue() {
        var a = machine()
        let names = Names()
        a.enqueue("a", shape: "default")
        a.enqueue("b", shape: "default")
        #expect(a.next(newWarmID: names.next).count == 2)
        a.measured("a", usage: 450 * Self.mib, peak: 450 * Self.mib)
        a.enqueue("c", shape: "default")
        #expect(a.next(newWarmID: names.next).isEmpty, "each is now expected to reach 562.5 MiB: no room for a third")
        #expect(a.used == 450 * Self.mib && a.committed == 1125 * Self.mib)
    }

    @Test func aLowerLearnedEstimateLetsMoreStartThanTheConfiguredOne() {
        var a = machine(estimate: 300 * Self.mib)
        let names = Names()
        for id in ["a", "b", "c", "d", "e", "f"] { a.enqueue(id, shape: "default") }
        #expect(a.next(newWarmID: names.next).count == 3, "3 × 300 MiB")
        for id in ["a", "b", "c"] {
            a.running(id, for: Self.settled)
            a.measured(id, usage: 100 * Self.mib, peak: 100 * Self.mib)
        }
        #expect(a.estimate == 125 * Self.mib)
        #expect(a.next(newWarmID: names.next) == [.start(task: "d", warm: nil), .start(task: "e", warm: nil), .start(task: "f", warm: nil)],
                "what the sessions really use leaves room for more")
    }

    @Test func theEstimateIsLearnedFromPeaksWithAQuarterForGrowth() {
        var a = machine(estimate: 300 * Self.mib)
        let names = Names()
        #expect(a.estimate == 300 * Self.mib, "configured until something is measured")
        a.enqueue("a", shape: "default")
        _ = a.next(newWarmID: names.next)
        a.running("a", for: Self.settled)
        a.measured("a", usage: 120 * Self.mib, peak: 160 * Self.mib)
        #expect(a.estimate == 200 * Self.mib, "a settled running session's peak counts at once")
        a.released("a", peak: 400 * Self.mib)
        #expect(a.estimate == 500 * Self.mib, "the ended session's peak, a quarter more")
        for i in 0..<Admission.learnFrom {
            a.enqueue("t\(i)", shape: "default")
            _ = a.next(newWarmID: names.next)
            a.running("t\(i)", for: Self.settled)
            a.measured("t\(i)", usage: 80 * Self.mib, peak: 80 * Self.mib)
            a.released("t\(i)")
        }
        #expect(a.estimate == 100 * Self.mib, "only the last \(Admission.learnFrom) are remembered")
    }

    @Test func aSessionStillStartingCanRaiseTheEstimateButNotLowerIt() {
        var a = machine(estimate: 300 * Self.mib)
        let names = Names()
        for id in ["young", "grown", "ended"] { a.enqueue(id, shape: "default") }
        _ = a.next(newWarmID: names.next)
        a.running("young", for: .seconds(29))
        a.measured("young", usage: 100 * Self.mib, peak: 100 * Self.mib)
        #expect(a.estimate == 300 * Self.mib, "a page still loading has not reached its peak")
        a.released("ended", peak: 50 * Self.mib)
        #expect(a.estimate == 300 * Self.mib, "nor has a task that ended young")
        a.measured("grown", usage: 400 * Self.mib, peak: 400 * Self.mib)
        #expect(a.estimate == 500 * Self.mib, "but it can outgrow the estimate at once")
        a.running("grown", for: Self.settled)
        a.measured("grown", usage: 200 * Self.mib, peak: 200 * Self.mib)
        #expect(a.estimate == 500 * Self.mib, "its peak stays its peak")
    }

    @Test func aBurstStartsAFewAtATimeEachMeasuredBeforeTheNext() {
        var a = machine(budget: 10_000 * Self.mib, estimate: 300 * Self.mib, young: 2)
        let names = Names()
        for id in ["a", "b", "c", "d", "e"] { a.enqueue(id, shape: "default") }
        #expect(a.next(newWarmID: names.next) == [.start(task: "a", warm: nil), .start(task: "b", warm: nil)])
        a.running("a", for: .seconds(2))
        #expect(a.next(newWarmID: names.next).isEmpty, "running, but its page may still be loading")
        a.running("a", for: .seconds(3))
        a.measured("a", usage: 900 * Self.mib, peak: 900 * Self.mib)
        #expect(a.next(newWarmID: names.next) == [.start(task: "c", warm: nil)], "a is proven, and measured: its 900 MiB raise the estimate")
        #expect(a.estimate == 1125 * Self.mib && a.young == 2)
    }

    @Test func aBootingWarmSessionIsYoungToo() {
        var a = machine(warm: 2, young: 1)
        let names = Names()
        #expect(a.next(newWarmID: names.next) == [.bootWarm("w1")], "one at a time")
        a.warmBooted("w1")
        #expect(a.next(newWarmID: names.next) == [.bootWarm("w2")])
    }

    @Test func aTaskLimitBelowTheEstimateIsItsCost() {
        var a = machine(budget: 1000 * Self.mib, estimate: 600 * Self.mib)
        a.enqueue("a", shape: "default", limit: 400 * Self.mib)
        a.enqueue("b", shape: "default", limit: 400 * Self.mib)
        #expect(a.next(newWarmID: Names().next).count == 2, "each can never use more than its limit")
    }

    @Test func theQueueIsBoundedAndFIFO() {
        var a = machine(max: 1, queue: 2)
        let names = Names()
        a.enqueue("a", shape: "default")
        _ = a.next(newWarmID: names.next)
        a.enqueue("b", shape: "default")
        a.enqueue("c", shape: "default")
        #expect(a.refusal() == .queueFull(limit: 2))
        a.withdraw("b")
        #expect(a.refusal() == nil && !a.isQueued("b"))
        a.enqueue("d", shape: "default")
        a.released("a")
        #expect(a.next(newWarmID: names.next) == [.start(task: "c", warm: nil)], "oldest first")
    }

    @Test func aTaskLargerThanTheBudgetIsRefusedNotQueuedForever() {
        let a = machine(budget: 200 * Self.mib, estimate: 300 * Self.mib)
        #expect(a.refusal() == .tooLarge(needs: 300 * Self.mib, budget: 200 * Self.mib))
        #expect(a.refusal(limit: 150 * Self.mib) == nil, "a limit within the budget can run")
    }

    @Test func pressureStopsAdmissionWithHysteresis() {
        var a = machine()
        let names = Names()
        a.observe(pressure: 25)
        a.enqueue("a", shape: "default")
        #expect(a.next(newWarmID: names.next).isEmpty && a.pressured)
        #expect(!a.wouldStart(shape: "default"))
        a.observe(pressure: 15)
        #expect(a.next(newWarmID: names.next).isEmpty && a.pressured, "between the thresholds it stays shut")
        a.observe(pressure: 9.5)
        #expect(a.next(newWarmID: names.next) == [.start(task: "a", warm: nil)] && !a.pressured)
        a.observe(pressure: 15)
        #expect(!a.pressured, "and between them it stays open")
    }

    @Test func drainingRefusesNewTasksAndEmptiesThePoolButQueuedOnesStillStart() {
        var a = machine(max: 2, warm: 1)
        let names = Names()
        #expect(a.next(newWarmID: names.next) == [.bootWarm("w1")])
        a.warmBooted("w1")
        a.enqueue("a", shape: "other")
        a.enqueue("b", shape: "other")
        #expect(a.next(newWarmID: names.next) == [.start(task: "a", warm: nil), .giveUpWarm("w1")],
                "the cap is reached: the warm session makes way for the queue")
        a.drain()
        #expect(a.refusal() == .draining)
        a.released("w1")
        #expect(a.next(newWarmID: names.next) == [.start(task: "b", warm: nil)], "no refill while draining")
    }

    @Test func aTaskOfTheWarmShapeTakesAReadyWarmSessionAndThePoolRefills() {
        var a = machine(warm: 2)
        let names = Names()
        #expect(a.next(newWarmID: names.next) == [.bootWarm("w1"), .bootWarm("w2")])
        a.warmBooted("w1")
        a.enqueue("x", shape: "default")
        let actions = a.next(newWarmID: names.next)
        #expect(actions.first == .start(task: "x", warm: "w1"), "\(actions)")
        #expect(a.active == 1 && a.warmReady == 0)
        #expect(actions.dropFirst().allSatisfy { if case .bootWarm = $0 { true } else { false } }, "the pool refills behind it")
    }

    @Test func aTaskOfAnotherShapeStartsColdAndTheWarmSessionGivesWayOnlyWhenNeeded() {
        var a = machine(budget: 700 * Self.mib, warm: 1)
        let names = Names()
        _ = a.next(newWarmID: names.next)
        a.warmBooted("w1")
        a.enqueue("big", shape: "1920x1080")
        #expect(a.next(newWarmID: names.next) == [.start(task: "big", warm: nil)], "300 + 300 fit in 700: no need to give up")
        a.enqueue("next", shape: "1920x1080")
        #expect(a.next(newWarmID: names.next) == [.giveUpWarm("w1")], "300 + 300 + 300 do not: the warm session goes, the task waits for it")
        #expect(a.next(newWarmID: names.next).isEmpty, "a leaving session still holds its memory until it has ended")
        a.released("w1")
        #expect(a.next(newWarmID: names.next) == [.start(task: "next", warm: nil)])
    }

    @Test func pressureGivesUpTheWarmPoolFirstAndStopsRefilling() {
        var a = machine(warm: 2)
        let names = Names()
        _ = a.next(newWarmID: names.next)
        a.warmBooted("w1")
        a.observe(pressure: 30)
        #expect(a.next(newWarmID: names.next) == [.giveUpWarm("w2"), .giveUpWarm("w1")], "booting first, then the youngest")
        a.released("w1")
        a.released("w2")
        #expect(a.next(newWarmID: names.next).isEmpty)
        a.observe(pressure: 0)
        #expect(a.next(newWarmID: names.next) == [.bootWarm("w3"), .bootWarm("w4")])
    }

    @Test func aWarmSessionsIdlePeakDoesNotTeachTheEstimate() {
        var a = machine(warm: 1)
        let names = Names()
        _ = a.next(newWarmID: names.next)
        a.measured("w1", usage: 90 * Self.mib, peak: 90 * Self.mib)
        a.released("w1", peak: 90 * Self.mib)
        #expect(a.estimate == 300 * Self.mib)
    }

    @Test func wouldStartSaysWhetherANewTaskWaits() {
        var a = machine(max: 1, warm: 0)
        #expect(a.wouldStart(shape: "default"))
        a.enqueue("a", shape: "default")
        _ = a.next(newWarmID: Names().next)
        #expect(!a.wouldStart(shape: "default"), "the one slot is taken")
    }
}
