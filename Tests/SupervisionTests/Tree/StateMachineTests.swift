import Testing
@testable import Supervision

/// Drives a `SupervisorStateMachine` by hand: every input is given, every action checked.
struct Harness {
    var machine: SupervisorStateMachine
    var now = ContinuousClock.now

    init(_ strategy: Strategy, _ children: [(String, RestartType)], intensity: Intensity = .init(maxRestarts: 3, period: .seconds(10)),
         backoff: Backoff = Backoff(initial: .milliseconds(100), multiplier: 2, maximum: .seconds(1), jitter: 0, resetAfter: .seconds(5)),
         autoShutdown: AutoShutdown = .never, significant: Set<String> = [], alone: Set<String> = [], withPrevious: Set<String> = []) {
        let specs = children.map { id, restart in
            ChildSpec(id: id, kind: .task { _ in }, restart: restart, significant: significant.contains(id), restartsAlone: alone.contains(id),
                      startsWithPrevious: withPrevious.contains(id))
        }
        machine = SupervisorStateMachine(
            spec: SupervisorSpec(strategy: strategy, intensity: intensity, backoff: backoff, autoShutdown: autoShutdown, children: specs),
            random: { 0.5 })
    }

    mutating func send(_ input: SupervisorStateMachine.Input) -> [SupervisorStateMachine.Action] {
        machine.handle(input, now: now)
    }

    func generation(_ id: String) -> Int { machine.child(id)!.generation }

    /// Actions without the events, which most tests don't care about.
    static func effects(_ actions: [SupervisorStateMachine.Action]) -> [SupervisorStateMachine.Action] {
        actions.filter { if case .event = $0 { false } else { true } }
    }

    mutating func ready(_ id: String) -> [SupervisorStateMachine.Action] {
        Self.effects(send(.childReady(id: id, generation: generation(id), detail: "")))
    }

    mutating func exit(_ id: String, _ reason: ExitReason = .exited(1)) -> [SupervisorStateMachine.Action] {
        Self.effects(send(.childExited(id: id, generation: generation(id), reason: reason)))
    }

    /// Starts every child in order, checking the one-at-a-time, readiness-gated order.
    mutating func startAll() {
        var actions = Self.effects(send(.start))
        let ids = machine.children.map(\.id)
        for (n, id) in ids.enumerated() {
            #expect(actions == [.startChild(id: id, generation: 1)], "child \(id) starts only after \(n > 0 ? ids[n - 1] : "nothing") is ready")
            actions = ready(id)
        }
        #expect(actions == [.ready])
    }
}

extension Harness {
    /// One fault: the current incarnations of `dying` exit in that order, all at `now`, as X
    /// clients do when their X server is killed. The machine is answered as real children would
    /// answer it: a stop by the child's exit (a dying child's own exit is that answer), a start
    /// made before every exit is in by a failure (the display is gone), a later one by ready.
    /// `interleaved`: those answers come between the exits; otherwise after all of them. Timers
    /// fire only once every exit is in (the fold window outlasts the fault's reporting).
    mutating func fault(_ dying: [String], interleaved: Bool = false) {
        var answers: [SupervisorStateMachine.Input] = []
        var timers: [SupervisorStateMachine.Input] = []
        var unreported = dying
        let dyingGeneration = Dictionary(uniqueKeysWithValues: machine.children.map { ($0.id, $0.generation) })
        while true {
            let input: SupervisorStateMachine.Input
            if !unreported.isEmpty, !interleaved || answers.isEmpty {
                let id = unreported.removeFirst()
                input = .childExited(id: id, generation: dyingGeneration[id]!, reason: .exited(1))
            } else if !answers.isEmpty {
                input = answers.removeFirst()
            } else if !timers.isEmpty {
                input = timers.removeFirst()
            } else {
                return
            }
            for action in send(input) {
                switch action {
                case .startChild(let id, let g):
                    answers.append(unreported.isEmpty ? .childReady(id: id, generation: g, detail: "")
                                   : .childExited(id: id, generation: g, reason: .failed("cannot open display")))
                case .stopChild(let id, let g) where !(g == dyingGeneration[id] && unreported.contains(id)):
                    answers.append(.childExited(id: id, generation: g, reason: .signaled(15)))
                case .scheduleTimer(let token, _):
                    timers.append(.timerFired(token: token))
                default:
                    break
                }
            }
        }
    }

    /// Whose crashes the intensity holds, oldest first.
    var counted: [String] { machine.restartTimes.map(\.child) }
}

/// Every order of `items`.
func permutations<T>(_ items: [T]) -> [[T]] {
    guard items.count > 1 else { return [items] }
    return items.indices.flatMap { i in
        var rest = items
        let first = rest.remove(at: i)
        return permutations(rest).map { [first] + $0 }
    }
}

/// The session's shape: an X server, a window manager nothing depends on, the lockdown, the clients.
let sessionShape: [(String, RestartType)] = [("x", .permanent), ("wm", .permanent), ("lock", .permanent), ("app", .permanent)]

@Suite("Supervisor state machine")
struct StateMachineTests {
    @Test func startsChildrenInOrderEachAfterThePreviousIsReady() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)])
        h.startAll()
        #expect(h.machine.children.allSatisfy { $0.status == .running })
    }

    @Test func oneForOneRestartsOnlyTheFailedChildAtOnceTheFirstTime() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)])
        h.startAll()
        #expect(h.exit("b") == [.startChild(id: "b", generation: 2)])
        #expect(h.ready("b").isEmpty)
        #expect(h.machine.child("a")!.generation == 1)
        #expect(h.machine.child("c")!.generation == 1)
        #expect(h.machine.child("b")!.restarts == 1)
    }

    @Test func consecutiveFailuresBackOffExponentially() {
        var h = Harness(.oneForOne, [("a", .permanent)], intensity: .init(maxRestarts: 10, period: .seconds(60)))
        h.startAll()
        #expect(h.exit("a") == [.startChild(id: "a", generation: 2)])
        _ = h.ready("a")
        var expected: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)]
        var token = 0
        while !expected.isEmpty {
            let delay = expected.removeFirst()
            token += 1
            let next = h.generation("a") + 1
            #expect(h.exit("a") == [.scheduleTimer(token: token, after: delay)])
            #expect(Harness.effects(h.send(.timerFired(token: token))) == [.startChild(id: "a", generation: next)])
            _ = h.ready("a")
        }
    }

    @Test func stableRunningResetsTheBackoff() {
        var h = Harness(.oneForOne, [("a", .permanent)], intensity: .init(maxRestarts: 10, period: .seconds(60)))
        h.startAll()
        _ = h.exit("a")
        _ = h.ready("a")
        h.now = h.now + .seconds(6)  // longer than resetAfter (5 s)
        #expect(h.exit("a") == [.startChild(id: "a", generation: 3)], "a crash after a stable run restarts at once")
    }

    @Test func jitterSpreadsTheDelay() {
        let b = Backoff(initial: .milliseconds(100), multiplier: 2, maximum: .seconds(10), jitter: 0.25)
        #expect(b.delay(failures: 1, random: 0.9) == .zero)
        #expect(b.delay(failures: 2, random: 0.5) == .milliseconds(100))
        #expect(b.delay(failures: 2, random: 0) == .milliseconds(75))
        #expect(b.delay(failures: 3, random: 1) == .milliseconds(250))
        #expect(b.delay(failures: 40, random: 0.5) == .seconds(10), "capped")
    }

    @Test func restForOneRestartsTheFailedChildAndThoseAfterItInOrder() {
        var h = Harness(.restForOne, [("x", .permanent), ("wm", .permanent), ("vnc", .permanent), ("browser", .permanent)])
        h.startAll()
        // wm dies: browser then vnc stop (reverse order, one at a time), then wm, vnc, browser start.
        #expect(h.exit("wm") == [.stopChild(id: "browser", generation: 1)])
        #expect(h.exit("browser", .signaled(15)) == [.stopChild(id: "vnc", generation: 1)])
        #expect(h.exit("vnc", .signaled(15)) == [.startChild(id: "wm", generation: 2)])
        #expect(h.ready("wm") == [.startChild(id: "vnc", generation: 2)])
        #expect(h.ready("vnc") == [.startChild(id: "browser", generation: 2)])
        #expect(h.ready("browser").isEmpty)
        #expect(h.machine.child("x")!.generation == 1, "children before the failed one are untouched")
    }

    @Test func restForOneWithTheLastChildRestartsOnlyIt() {
        var h = Harness(.restForOne, [("a", .permanent), ("b", .permanent)])
        h.startAll()
        #expect(h.exit("b") == [.startChild(id: "b", generation: 2)])
    }

    @Test func oneForAllRestartsEveryChild() {
        var h = Harness(.oneForAll, [("a", .permanent), ("b", .permanent), ("c", .permanent)])
        h.startAll()
        #expect(h.exit("b") == [.stopChild(id: "c", generation: 1)])
        #expect(h.exit("c", .signaled(15)) == [.stopChild(id: "a", generation: 1)])
        #expect(h.exit("a", .signaled(15)) == [.startChild(id: "a", generation: 2)])
        #expect(h.ready("a") == [.startChild(id: "b", generation: 2)])
        #expect(h.ready("b") == [.startChild(id: "c", generation: 2)])
        #expect(h.ready("c").isEmpty)
    }

    @Test func transientRestartsOnlyAfterAnAbnormalExit() {
        var h = Harness(.oneForOne, [("t", .transient), ("u", .transient)])
        h.startAll()
        #expect(h.exit("t", .exited(0)).isEmpty)
        #expect(h.machine.child("t")!.status == .terminated)
        #expect(h.exit("u", .signaled(9)) == [.startChild(id: "u", generation: 2)])
    }

    @Test func temporaryIsNeverRestartedAndIsForgotten() {
        var h = Harness(.oneForOne, [("p", .permanent), ("tmp", .temporary)])
        h.startAll()
        #expect(h.exit("tmp", .exited(1)).isEmpty)
        #expect(h.machine.child("tmp") == nil)
    }

    @Test func permanentRestartsEvenAfterANormalExit() {
        var h = Harness(.oneForOne, [("p", .permanent)])
        h.startAll()
        #expect(h.exit("p", .exited(0)) == [.startChild(id: "p", generation: 2)])
    }

    @Test func exceedingTheIntensityGivesUpAndStopsEverythingInReverse() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)],
                        intensity: .init(maxRestarts: 2, period: .seconds(10)), backoff: .none)
        h.startAll()
        #expect(h.exit("b") == [.startChild(id: "b", generation: 2)])
        _ = h.ready("b")
        #expect(h.exit("b") == [.startChild(id: "b", generation: 3)])
        _ = h.ready("b")
        let all = h.send(.childExited(id: "b", generation: 3, reason: .exited(1)))
        #expect(all.contains { if case .event(.gaveUp) = $0 { true } else { false } })
        #expect(all.contains(.event(.exited(child: "b", reason: .exited(1), willRestart: false))), "the exit that gives up says so")
        #expect(Harness.effects(all) == [.stopChild(id: "c", generation: 1)])
        #expect(h.exit("c", .signaled(15)) == [.stopChild(id: "a", generation: 1)])
        let last = h.exit("a", .signaled(15))
        guard case .finish(.gaveUp(let why))? = last.last else {
            Issue.record("expected finish(gaveUp), got \(last)")
            return
        }
        #expect(why.contains("more than 2 restarts in 10 s"))
    }

    @Test func restartsOutsideThePeriodDoNotCount() {
        var h = Harness(.oneForOne, [("a", .permanent)], intensity: .init(maxRestarts: 1, period: .seconds(10)),
                        backoff: Backoff(initial: .zero, multiplier: 1, maximum: .zero, jitter: 0, resetAfter: .seconds(1000)))
        h.startAll()
        for _ in 0..<5 {
            let next = h.generation("a") + 1
            #expect(h.exit("a") == [.startChild(id: "a", generation: next)])
            _ = h.ready("a")
            h.now = h.now + .seconds(11)
        }
        #expect(!h.machine.isFinished)
    }

    @Test func intensityZeroGivesUpOnTheFirstFailure() {
        var h = Harness(.oneForOne, [("a", .permanent)], intensity: .init(maxRestarts: 0, period: .seconds(1)))
        h.startAll()
        let actions = h.exit("a")
        #expect(actions.last.map { if case .finish(.gaveUp) = $0 { true } else { false } } == true)
    }

    @Test func aFailedInitialStartStopsTheStartedChildrenAndFails() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)])
        _ = h.send(.start)
        _ = h.ready("a")
        // b fails its readiness: a is stopped, c never starts.
        #expect(h.exit("b", .failed("not ready within 1 s")) == [.stopChild(id: "a", generation: 1)])
        let last = h.exit("a", .signaled(15))
        #expect(last == [.finish(.failedToStart(child: "b", reason: "not ready within 1 s"))])
        #expect(h.machine.child("c")!.generation == 0)
    }

    @Test func aFailedRestartCountsAndRetriesWithBackoff() {
        var h = Harness(.restForOne, [("a", .permanent), ("b", .permanent)], intensity: .init(maxRestarts: 5, period: .seconds(60)))
        h.startAll()
        #expect(h.exit("a") == [.stopChild(id: "b", generation: 1)])
        #expect(h.exit("b", .signaled(15)) == [.startChild(id: "a", generation: 2)])
        // The restart fails before ready: plan again with a delay, a still first.
        #expect(h.exit("a", .failed("exited before it was ready")) == [.scheduleTimer(token: 1, after: .milliseconds(100))])
        #expect(Harness.effects(h.send(.timerFired(token: 1))) == [.startChild(id: "a", generation: 3)])
        #expect(h.ready("a") == [.startChild(id: "b", generation: 2)])
    }

    @Test func aCrashDuringARestartPlanIsFoldedIntoTheNextPlan() {
        var h = Harness(.restForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)])
        h.startAll()
        #expect(h.exit("b") == [.stopChild(id: "c", generation: 1)])
        // While c is being stopped, a crashes: once c is down, the plan restarts from a.
        #expect(h.exit("a").isEmpty)
        #expect(h.exit("c", .signaled(15)) == [.startChild(id: "a", generation: 2)], "one merged plan, from a")
        #expect(h.ready("a") == [.startChild(id: "b", generation: 2)])
        #expect(h.ready("b") == [.startChild(id: "c", generation: 2)])
    }

    @Test func staleEventsOfAnOldGenerationAreIgnored() {
        var h = Harness(.oneForOne, [("a", .permanent)])
        h.startAll()
        _ = h.exit("a")
        #expect(h.send(.childExited(id: "a", generation: 1, reason: .exited(1))).isEmpty)
        #expect(h.send(.childReady(id: "a", generation: 1, detail: "")).isEmpty)
        #expect(h.send(.timerFired(token: 99)).isEmpty)
    }

    @Test func stopStopsInReverseOrderAndFinishesNormally() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)])
        h.startAll()
        #expect(Harness.effects(h.send(.stop)) == [.stopChild(id: "c", generation: 1)])
        #expect(h.exit("c", .signaled(15)) == [.stopChild(id: "b", generation: 1)])
        #expect(h.exit("b", .signaled(15)) == [.stopChild(id: "a", generation: 1)])
        #expect(h.exit("a", .signaled(15)) == [.finish(.normal("stop requested"))])
    }

    @Test func stopDuringStartStopsTheStartingChildToo() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)])
        _ = h.send(.start)
        _ = h.ready("a")
        #expect(Harness.effects(h.send(.stop)) == [.stopChild(id: "b", generation: 1)])
        #expect(h.ready("b").isEmpty, "a late ready of a stopping child changes nothing")
        #expect(h.exit("b", .signaled(15)) == [.stopChild(id: "a", generation: 1)])
        #expect(h.exit("a", .signaled(15)) == [.finish(.normal("stop requested"))])
    }

    @Test func stopDuringABackoffDelayCancelsTheRestart() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent)], intensity: .init(maxRestarts: 10, period: .seconds(60)))
        h.startAll()
        _ = h.exit("b")
        _ = h.ready("b")
        #expect(h.exit("b") == [.scheduleTimer(token: 1, after: .milliseconds(100))])
        #expect(Harness.effects(h.send(.stop)) == [.stopChild(id: "a", generation: 1)])
        #expect(h.send(.timerFired(token: 1)).isEmpty)
        #expect(h.exit("a", .signaled(15)) == [.finish(.normal("stop requested"))])
    }

    @Test func anySignificantChildEndingShutsTheSupervisorDown() {
        var h = Harness(.oneForOne, [("main", .transient), ("helper", .permanent)], autoShutdown: .anySignificant, significant: ["main"])
        h.startAll()
        #expect(h.exit("main", .exited(0)) == [.stopChild(id: "helper", generation: 1)])
        #expect(h.exit("helper", .signaled(15)) == [.finish(.normal("significant child 'main' ended"))])
    }

    @Test func allSignificantWaitsForTheLastSignificantChild() {
        var h = Harness(.oneForOne, [("a", .transient), ("b", .temporary), ("c", .permanent)],
                        autoShutdown: .allSignificant, significant: ["a", "b"])
        h.startAll()
        #expect(h.exit("a", .exited(0)).isEmpty)
        #expect(h.exit("b", .exited(0)) == [.stopChild(id: "c", generation: 1)])
    }

    @Test func significantChildrenThatRestartDoNotShutDown() {
        var h = Harness(.oneForOne, [("a", .transient)], autoShutdown: .anySignificant, significant: ["a"])
        h.startAll()
        #expect(h.exit("a", .exited(3)) == [.startChild(id: "a", generation: 2)])
    }

    @Test func dynamicChildrenAreAddedStartedAndRemoved() {
        var h = Harness(.oneForOne, [])
        #expect(Harness.effects(h.send(.start)) == [.ready])
        let spec = ChildSpec(id: "s1", kind: .task { _ in }, restart: .temporary)
        #expect(Harness.effects(h.send(.addChild(spec, request: 1))) == [.startChild(id: "s1", generation: 1)])
        #expect(h.ready("s1") == [.replyAdd(request: 1, error: nil)])
        #expect(Harness.effects(h.send(.addChild(spec, request: 2))) == [.replyAdd(request: 2, error: .duplicateChild("s1"))])
        #expect(Harness.effects(h.send(.removeChild(id: "s1", request: 3))) == [.stopChild(id: "s1", generation: 1)])
        #expect(h.exit("s1", .signaled(15)) == [.replyRemove(request: 3, error: nil)])
        #expect(h.machine.children.isEmpty)
        #expect(Harness.effects(h.send(.removeChild(id: "nope", request: 4))) == [.replyRemove(request: 4, error: .noSuchChild("nope"))])
    }

    @Test func aDynamicChildThatFailsToStartIsReportedAndNotKept() {
        var h = Harness(.oneForOne, [])
        _ = h.send(.start)
        _ = h.send(.addChild(ChildSpec(id: "s", kind: .task { _ in }, restart: .transient), request: 7))
        let actions = h.exit("s", .failed("boom"))
        #expect(actions == [.replyAdd(request: 7, error: .failedToStart(child: "s", reason: "boom"))])
        #expect(h.machine.children.isEmpty)
        #expect(!h.machine.isFinished, "a failed dynamic start is the caller's problem, not a restart")
    }

    @Test func temporaryChildrenExitingDoNotCountTowardsTheIntensity() {
        var h = Harness(.oneForOne, [], intensity: .init(maxRestarts: 1, period: .seconds(60)))
        _ = h.send(.start)
        for n in 1...5 {
            _ = h.send(.addChild(ChildSpec(id: "s\(n)", kind: .task { _ in }, restart: .temporary), request: n))
            _ = h.ready("s\(n)")
            _ = h.exit("s\(n)", .exited(1))
        }
        #expect(!h.machine.isFinished)
    }

    @Test func addingAfterShutdownIsRefused() {
        var h = Harness(.oneForOne, [("a", .permanent)])
        h.startAll()
        _ = h.send(.stop)
        let spec = ChildSpec(id: "late", kind: .task { _ in })
        #expect(Harness.effects(h.send(.addChild(spec, request: 1))) == [.replyAdd(request: 1, error: .notRunning)])
    }

    @Test func invalidSpecsAreRejectedWithTheReason() {
        let bad = ChildSpec(id: "x", kind: .task { _ in }, restart: .permanent, significant: true)
        #expect(throws: SupervisionError.invalidSpec("child 'x': significant children must be transient or temporary, not permanent")) {
            try SupervisorSpec(strategy: .oneForOne, children: [bad]).validate()
        }
        let dup = ChildSpec(id: "a", kind: .task { _ in })
        #expect(throws: SupervisionError.duplicateChild("a")) {
            try SupervisorSpec(strategy: .oneForOne, children: [dup, dup]).validate()
        }
        let relative = ChildSpec(id: "r", kind: .process(ProcessSpec(executable: "sleep")))
        #expect(throws: SupervisionError.self) { try relative.validate() }
    }

    @Test func eventsDescribeEveryTransition() {
        var h = Harness(.oneForOne, [("a", .permanent)], intensity: .init(maxRestarts: 10, period: .seconds(60)))
        var kinds = h.send(.start).compactMap { if case .event(let k) = $0 { k } else { nil } }
        #expect(kinds == [.starting(child: "a", generation: 1)])
        kinds = h.send(.childReady(id: "a", generation: 1, detail: "42")).compactMap { if case .event(let k) = $0 { k } else { nil } }
        #expect(kinds == [.ready(child: "a", detail: "42"), .supervisorReady])
        kinds = h.send(.childExited(id: "a", generation: 1, reason: .signaled(9))).compactMap { if case .event(let k) = $0 { k } else { nil } }
        #expect(kinds == [.exited(child: "a", reason: .signaled(9), willRestart: true), .restarting(children: ["a"], after: .zero), .starting(child: "a", generation: 2)])
    }

    // MARK: - One fault, one restart

    @Test(arguments: permutations(["x", "wm", "lock", "app"]), [false, true])
    func aFaultCountsOnceWhateverOrderItsExitsArriveIn(order: [String], interleaved: Bool) {
        // Budget 2: a first fault, then this one, and the tree stays up.
        var h = Harness(.restForOne, sessionShape, intensity: .init(maxRestarts: 2, period: .seconds(60)), alone: ["wm"])
        h.startAll()
        h.fault(["x", "wm", "lock", "app"])
        h.fault(order, interleaved: interleaved)
        #expect(!h.machine.isFinished, "\(order): \(String(describing: h.machine.outcome))")
        #expect(h.counted == ["x", "x"], "each fault is x's restart, whoever reported first")
        for child in h.machine.children {
            #expect(child.status == .running && child.generation >= 3, "\(child.id) restarted with x")
            if child.id != "x" { #expect(child.failures == 0, "\(child.id): a consequence does not back it off") }
        }

        // Budget 1: the same second fault spends it, and the reason names x.
        var over = Harness(.restForOne, sessionShape, intensity: .init(maxRestarts: 1, period: .seconds(60)), alone: ["wm"])
        over.startAll()
        over.fault(["x", "wm", "lock", "app"])
        over.fault(order, interleaved: interleaved)
        guard case .gaveUp(let why)? = over.machine.outcome else {
            Issue.record("\(order): expected to give up, got \(String(describing: over.machine.outcome))")
            return
        }
        #expect(why.hasSuffix("(last: 'x')"), "\(why)")
    }

    @Test(arguments: permutations(["a", "b", "c"]), [false, true])
    func oneForAllCountsAFaultOnceToo(order: [String], interleaved: Bool) {
        var h = Harness(.oneForAll, [("a", .permanent), ("b", .permanent), ("c", .permanent)],
                        intensity: .init(maxRestarts: 1, period: .seconds(60)))
        h.startAll()
        h.fault(order, interleaved: interleaved)
        h.fault(order, interleaved: interleaved)
        // Every child depends on every other: the first exit reported names the fault.
        #expect(h.counted == [order[0], order[0]])
        guard case .gaveUp? = h.machine.outcome else {
            Issue.record("two faults spend a budget of one: \(String(describing: h.machine.outcome))")
            return
        }
        var once = Harness(.oneForAll, [("a", .permanent), ("b", .permanent), ("c", .permanent)],
                           intensity: .init(maxRestarts: 1, period: .seconds(60)))
        once.startAll()
        once.fault(order, interleaved: interleaved)
        #expect(!once.machine.isFinished && once.machine.children.allSatisfy { $0.status == .running && $0.generation == 2 })
    }

    @Test func oneForOneCountsEveryExit() {
        var h = Harness(.oneForOne, [("a", .permanent), ("b", .permanent), ("c", .permanent)],
                        intensity: .init(maxRestarts: 2, period: .seconds(10)), backoff: .none)
        h.startAll()
        _ = h.exit("a")
        _ = h.exit("b")
        let third = h.send(.childExited(id: "c", generation: 1, reason: .exited(1)))
        #expect(third.contains(.event(.exited(child: "c", reason: .exited(1), willRestart: false))), "three faults in one instant are three restarts")
        #expect(h.counted == ["a", "b", "c"])
    }

    @Test func aDependentsCrashWhoseCauseNeverComesGivesUpAfterTheWindow() {
        var h = Harness(.restForOne, [("x", .permanent), ("lock", .permanent)], intensity: .init(maxRestarts: 0, period: .seconds(10)))
        h.startAll()
        let all = h.send(.childExited(id: "lock", generation: 1, reason: .exited(1)))
        #expect(all.contains(.event(.exited(child: "lock", reason: .exited(1), willRestart: true))), "not yet: x's exit may be on its way")
        #expect(Harness.effects(all) == [.scheduleTimer(token: 1, after: SupervisorStateMachine.foldWindow), .startChild(id: "lock", generation: 2)])
        h.now = h.now + SupervisorStateMachine.foldWindow
        #expect(Harness.effects(h.send(.timerFired(token: 1))) == [.stopChild(id: "lock", generation: 2)], "x stayed up: the budget is spent")
        #expect(h.exit("lock", .signaled(15)) == [.stopChild(id: "x", generation: 1)])
        _ = h.exit("x", .signaled(15))
        guard case .gaveUp(let why)? = h.machine.outcome else {
            Issue.record("expected to give up, got \(String(describing: h.machine.outcome))")
            return
        }
        #expect(why.hasSuffix("(last: 'lock')"))
    }

    @Test func aCauseReportedWithinTheWindowTakesTheCrashOver() {
        var h = Harness(.restForOne, [("x", .permanent), ("wm", .permanent), ("lock", .permanent)],
                        intensity: .init(maxRestarts: 1, period: .seconds(10)), alone: ["wm"])
        h.startAll()
        #expect(h.exit("lock") == [.startChild(id: "lock", generation: 2)])
        // Two crashes spend a budget of one, unless x's exit follows and takes them over.
        h.now = h.now + .milliseconds(1)
        #expect(h.exit("wm") == [.scheduleTimer(token: 1, after: SupervisorStateMachine.foldWindow)])
        h.now = h.now + .milliseconds(300)
        #expect(h.exit("x").isEmpty, "the lockdown's start is still pending")
        #expect(h.counted == ["x"])
        #expect(h.exit("lock", .failed("cannot open display")) == [.startChild(id: "x", generation: 2)], "folded, and no backoff for it")
        #expect(h.counted == ["x"])
        h.now = h.now + .milliseconds(700)
        #expect(Harness.effects(h.send(.timerFired(token: 1))).isEmpty, "within budget: no give-up")
        #expect(h.ready("x") == [.startChild(id: "wm", generation: 2)])
        #expect(!h.machine.isFinished)
    }

    @Test func aDependentsOwnCrashCountsWhenItsCauseIsLaterOrItCameBack() {
        // Outside the window: two faults.
        var late = Harness(.restForOne, [("x", .permanent), ("lock", .permanent)], intensity: .init(maxRestarts: 5, period: .seconds(60)))
        late.startAll()
        _ = late.exit("lock")
        late.now = late.now + SupervisorStateMachine.foldWindow + .milliseconds(1)
        _ = late.exit("x")
        #expect(late.counted == ["lock", "x"])

        // Back up before its cause crashed: its crash was its own.
        var back = Harness(.restForOne, [("x", .permanent), ("lock", .permanent)], intensity: .init(maxRestarts: 5, period: .seconds(60)))
        back.startAll()
        _ = back.exit("lock")
        _ = back.ready("lock")
        _ = back.exit("x")
        #expect(back.counted == ["lock", "x"])

        // Restarted after its cause: a new incarnation's crash is a new fault.
        var again = Harness(.restForOne, [("x", .permanent), ("lock", .permanent)], intensity: .init(maxRestarts: 5, period: .seconds(60)))
        again.startAll()
        _ = again.exit("x")
        _ = again.exit("lock", .signaled(15))
        _ = again.ready("x")
        _ = again.ready("lock")
        _ = again.exit("lock")
        #expect(again.counted == ["x", "lock"])
    }

    @Test func aFailedRestartAfterItsCauseIsBackCounts() {
        var h = Harness(.restForOne, [("x", .permanent), ("lock", .permanent)], intensity: .init(maxRestarts: 5, period: .seconds(60)))
        h.startAll()
        _ = h.exit("x")
        _ = h.exit("lock", .signaled(15))
        _ = h.ready("x")
        _ = h.exit("lock", .failed("not ready within 1 s"))
        #expect(h.counted == ["x", "lock"])
        // Later, while x is down again, the lockdown's failing start is x's.
        h.now = h.now + SupervisorStateMachine.foldWindow + .milliseconds(1)
        _ = h.exit("x")
        _ = h.exit("lock", .failed("cannot open display"))
        #expect(h.counted == ["x", "lock", "x"])
    }

    @Test func aChildThatRestartsAloneTakesNoSiblingWithIt() {
        var h = Harness(.restForOne, sessionShape, alone: ["wm"])
        h.startAll()
        #expect(h.exit("wm") == [.startChild(id: "wm", generation: 2)], "nothing after the window manager depends on it")
        _ = h.ready("wm")
        // An earlier sibling's crash still restarts it, in order.
        #expect(h.exit("x") == [.stopChild(id: "app", generation: 1)])
        #expect(h.exit("app", .signaled(15)) == [.stopChild(id: "lock", generation: 1)])
        #expect(h.exit("lock", .signaled(15)) == [.stopChild(id: "wm", generation: 2)])
        #expect(h.exit("wm", .signaled(15)) == [.startChild(id: "x", generation: 2)])
        #expect(h.ready("x") == [.startChild(id: "wm", generation: 3)])

        var all = Harness(.oneForAll, [("a", .permanent), ("b", .permanent), ("c", .permanent)], alone: ["a"])
        all.startAll()
        #expect(all.exit("a") == [.startChild(id: "a", generation: 2)])
        _ = all.ready("a")
        #expect(all.exit("b") == [.stopChild(id: "c", generation: 1)])
        #expect(all.exit("c", .signaled(15)) == [.stopChild(id: "a", generation: 2)])
        #expect(all.exit("a", .signaled(15)) == [.startChild(id: "a", generation: 3)])
    }
}
