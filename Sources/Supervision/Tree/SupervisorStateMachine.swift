import Essentials
/// Every decision a supervisor makes, with no effects: inputs go in, actions come out.
///
/// Restarts are planned from the children's statuses rather than remembered as work in flight:
/// a plan (stops in reverse order, a backoff delay, starts in order: a start step spawns a child
/// with the siblings that start with it and waits for them all to be ready) is derived from
/// which children crashed, executed one step at a time, and may be dropped at any step boundary and
/// derived again. That keeps crashes during a restart, start failures and shutdown requests
/// arriving mid-plan simple and correct.
///
/// The intensity counts faults, not exits: a child that exits because a child it depends on died
/// (an X client when its X server goes) is part of that child's restart, whichever exit is
/// reported first.
public struct SupervisorStateMachine: Sendable {
    public typealias Instant = ContinuousClock.Instant

    /// How long after a dependent's crash the crash that caused it may still be reported. Exits
    /// are posted in no set order: when Xvfb is killed, the lockdown and Openbox often report
    /// first, while Xvfb's own exit waits for its leftovers to be swept, which can take the 1 s
    /// they get for SIGTERM, and longer on a loaded machine.
    public static let foldWindow: Duration = .seconds(5)

    public enum Input: Sendable {
        /// Begin the initial, ordered start.
        case start
        /// A child's readiness probe passed.
        case childReady(id: String, generation: Int, detail: String)
        /// A child is gone (exited, failed to launch, or failed its readiness and was stopped).
        case childExited(id: String, generation: Int, reason: ExitReason)
        case timerFired(token: Int)
        /// Stop everything in reverse order and finish normally.
        case stop
        /// Add a child at runtime (dynamic supervisor); answered with `.replyAdd`.
        case addChild(ChildSpec, request: Int)
        /// Stop a child and forget it; answered with `.replyRemove`.
        case removeChild(id: String, request: Int)
    }

    public enum Action: Sendable, Equatable {
        case startChild(id: String, generation: Int)
        case stopChild(id: String, generation: Int)
        case scheduleTimer(token: Int, after: Duration)
        case event(SupervisionEvent.Kind)
        /// The initial start completed: the supervisor is ready.
        case ready
        case replyAdd(request: Int, error: SupervisionError?)
        case replyRemove(request: Int, error: SupervisionError?)
        /// Nothing is running any more; the supervisor ends with this outcome.
        case finish(Outcome)
    }

    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        /// Stopped on request or by auto-shutdown.
        case normal(String)
        /// A child failed during the initial start.
        case failedToStart(child: String, reason: String)
        /// Restart intensity exceeded: escalate to the parent.
        case gaveUp(String)

        public var description: String {
            switch self {
            case .normal(let why): why
            case .failedToStart(let child, let reason): "child '\(child)' failed to start: \(reason)"
            case .gaveUp(let why): "gave up: \(why)"
            }
        }

        public var exitReason: ExitReason {
            switch self {
            case .normal: .normal
            case .failedToStart(let child, let reason): .failed("child '\(child)' failed to start: \(reason)")
            case .gaveUp(let why): .failed(why)
            }
        }
    }

    public enum Status: String, Sendable, Equatable {
        /// Should run but does not: waiting for its turn in a plan.
        case down
        case starting
        case running
        case stopping
        /// Ended and will not be restarted (a transient child that exited normally).
        case terminated
    }

    public struct Child: Sendable, Equatable {
        public let id: String
        public let restart: RestartType
        public let significant: Bool
        public let restartsAlone: Bool
        public let startsWithPrevious: Bool
        public internal(set) var status: Status = .down
        public internal(set) var generation = 0
        /// Consecutive failures, for the backoff.
        public internal(set) var failures = 0
        /// Total restarts, for the snapshot.
        public internal(set) var restarts = 0
        public internal(set) var readyAt: Instant?
        public internal(set) var lastExit: ExitReason?
        public internal(set) var readyDetail = ""
        /// Down because it failed (as opposed to stopped as a sibling, or never started).
        var crashed = false
        /// `startCount` when this incarnation started, and when the child last crashed: which
        /// crashes happened while which incarnations ran.
        var startSeq = 0
        var crashSeq: Int?
        var addRequest: Int?
        var removeRequest: Int?
    }

    enum Phase: Equatable {
        case idle
        case starting
        case running
        case shuttingDown(Outcome)
        case finished(Outcome)
    }

    enum Step: Equatable {
        case stop(String)
        case delay(Duration)
        /// Children spawned together (see `ChildSpec.startsWithPrevious`), in spec order.
        case start([String])
        case remove(String)
    }

    /// One counted restart: when, whose, and `startCount` at the time.
    struct Restart: Equatable {
        var at: Instant
        var child: String
        var seq: Int
    }

    /// What the current step waits for.
    enum Awaiting: Equatable {
        case exit(String)
        /// The children of the start step that are still starting.
        case ready(Set<String>)
        case timer(Int)
    }

    public let strategy: Strategy
    public let intensity: Intensity
    public let backoff: Backoff
    public let autoShutdown: AutoShutdown
    public private(set) var children: [Child]
    var phase: Phase = .idle
    var plan: [Step] = []
    var awaiting: Awaiting?
    var restartTimes: [Restart] = []
    var nextTimerToken = 0
    /// Children started so far: orders starts and crashes (see `Child.startSeq`).
    var startCount = 0
    /// A spent budget waiting for `foldWindow` before giving up (see `verdict`).
    var verdictTimer: Int?
    let random: @Sendable () -> Double

    public init(spec: SupervisorSpec, random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        strategy = spec.strategy
        intensity = spec.intensity
        backoff = spec.backoff
        autoShutdown = spec.autoShutdown
        children = spec.children.map { Child(id: $0.id, restart: $0.restart, significant: $0.significant, restartsAlone: $0.restartsAlone,
                                           startsWithPrevious: $0.startsWithPrevious) }
        self.random = random
    }

    public var isFinished: Bool {
        if case .finished = phase { return true }
        return false
    }

    public var outcome: Outcome? {
        if case .finished(let outcome) = phase { return outcome }
        return nil
    }

    public func child(_ id: String) -> Child? { children.first { $0.id == id } }

    // MARK: - Inputs

    public mutating func handle(_ input: Input, now: Instant) -> [Action] {
        var actions: [Action] = []
        switch input {
        case .start:
            guard phase == .idle else { return [] }
            phase = .starting
            plan = startSteps(Array(children.indices))
        case .childReady(let id, let generation, let detail):
            childReady(id, generation, detail, now, &actions)
        case .childExited(let id, let generation, let reason):
            childExited(id, generation, reason, now, &actions)
        case .timerFired(let token) where token == verdictTimer:
            verdictTimer = nil
            if phase == .running || phase == .starting, exceedsIntensity(now), let last = restartTimes.last {
                giveUp(after: last.child, &actions)
            }
        case .timerFired(let token):
            guard awaiting == .timer(token) else { return [] }
            awaiting = nil
        case .stop:
            beginShutdown(.normal("stop requested"), &actions)
        case .addChild(let spec, let request):
            addChild(spec, request, &actions)
        case .removeChild(let id, let request):
            removeChild(id, request, &actions)
        }
        advance(now, &actions)
        return actions
    }

    private mutating func childReady(_ id: String, _ generation: Int, _ detail: String, _ now: Instant, _ actions: inout [Action]) {
        guard let i = index(id), children[i].generation == generation, children[i].status == .starting else { return }
        children[i].status = .running
        children[i].readyAt = now
        children[i].readyDetail = detail
        actions.append(.event(.ready(child: id, detail: detail)))
        if let request = children[i].addRequest {
            children[i].addRequest = nil
            actions.append(.replyAdd(request: request, error: nil))
        }
        if case .ready(var ids) = awaiting, ids.remove(id) != nil {
            awaiting = ids.isEmpty ? nil : .ready(ids)
        }
    }

    private mutating func childExited(_ id: String, _ generation: Int, _ reason: ExitReason, _ now: Instant, _ actions: inout [Action]) {
        guard let i = index(id), children[i].generation == generation else { return }
        let was = children[i].status
        children[i].lastExit = reason
        switch was {
        case .down, .terminated:
            return  // already accounted for
        case .stopping:
            children[i].status = .down
            actions.append(.event(.stopped(child: id, reason: reason)))
            if awaiting == .exit(id) { awaiting = nil }
            if children[i].restart == .temporary, children[i].removeRequest == nil {
                // OTP forgets temporary children once they end, whoever ended them.
                children.remove(at: i)
            }
        case .starting:
            children[i].status = .down
            // A failed start ends its step (the initial start fails): a restart's next plan stops
            // what depends on the child; the siblings starting with it are running once ready.
            if case .ready(let ids) = awaiting, ids.contains(id) { awaiting = nil }
            actions.append(.event(.startFailed(child: id, reason: reason.description)))
            startFailed(i, reason, now, &actions)
        case .running:
            children[i].status = .down
            unexpectedExit(i, reason, now, &actions)
        }
    }

    private mutating func startFailed(_ i: Int, _ reason: ExitReason, _ now: Instant, _ actions: inout [Action]) {
        let id = children[i].id
        switch phase {
        case .idle, .finished, .shuttingDown:
            return
        case .starting:
            beginShutdown(.failedToStart(child: id, reason: reason.description), &actions)
        case .running:
            if let request = children[i].addRequest {
                // A dynamic start that fails is reported to the caller and forgotten (OTP start_child).
                children.remove(at: i)
                actions.append(.replyAdd(request: request, error: .failedToStart(child: id, reason: reason.description)))
                return
            }
            plan = []
            switch verdict(afterCrashOf: i, now) {
            case .withinBudget: break
            case .spent: giveUp(after: id, &actions)
            case .waitForCause: armVerdictTimer(&actions)
            }
        }
    }

    private mutating func unexpectedExit(_ i: Int, _ reason: ExitReason, _ now: Instant, _ actions: inout [Action]) {
        let child = children[i]
        if case .shuttingDown = phase {
            actions.append(.event(.exited(child: child.id, reason: reason, willRestart: false)))
            return
        }
        let restart: Bool
        switch child.restart {
        case .permanent: restart = true
        case .transient: restart = !reason.isNormal
        case .temporary: restart = false
        }
        if !restart {
            actions.append(.event(.exited(child: child.id, reason: reason, willRestart: false)))
            if child.restart == .temporary {
                children.remove(at: i)
            } else {
                children[i].status = .terminated
            }
            if child.significant { checkAutoShutdown(after: child.id, &actions) }
            return
        }
        if let readyAt = child.readyAt, now - readyAt >= backoff.resetAfter {
            children[i].failures = 0
        }
        let verdict = verdict(afterCrashOf: i, now)
        actions.append(.event(.exited(child: child.id, reason: reason, willRestart: verdict != .spent)))
        // Drop the rest of a restart plan in progress: the next one is derived with this crash in
        // it. The initial start runs to its end first, as OTP handles exits after init.
        if phase == .running { plan = [] }
        switch verdict {
        case .withinBudget: break
        case .spent: giveUp(after: child.id, &actions)
        case .waitForCause: armVerdictTimer(&actions)
        }
    }

    enum Verdict {
        case withinBudget
        case spent
        /// Spent, unless the crash of a child this one depends on is reported within `foldWindow`
        /// and takes this crash over.
        case waitForCause
    }

    /// Marks child `i` crashed, counts the crash once per fault, and says whether the budget is spent.
    private mutating func verdict(afterCrashOf i: Int, _ now: Instant) -> Verdict {
        children[i].crashed = true
        children[i].crashSeq = startCount
        guard recordFailure(i, now), exceedsIntensity(now) else { return .withinBudget }
        // A cause not yet reported could still take this crash over and bring the count down.
        let causeMayFollow = children.indices.contains { j in
            depends(i, on: j) && !depends(j, on: i) && children[j].status.isAlive
        }
        return causeMayFollow ? .waitForCause : .spent
    }

    /// Counts child `i`'s crash towards the intensity; returns false when it is part of a fault
    /// already counted.
    private mutating func recordFailure(_ i: Int, _ now: Instant) -> Bool {
        restartTimes.removeAll { now - $0.at > intensity.period }
        // A child it depends on crashed while this incarnation ran and is not back: this exit is
        // a consequence, and that child's restart restarts this one too.
        let consequence = children.indices.contains { j in
            guard depends(i, on: j), let crashed = children[j].crashSeq, crashed >= children[i].startSeq else { return false }
            return children[j].status == .down || children[j].status == .starting
        }
        if consequence { return false }
        // The reverse order: dependents that crashed during this incarnation, just before, and
        // are not back were its consequences reported first. Their counts become this one.
        let takenOver = restartTimes.indices.filter { n in
            let r = restartTimes[n]
            guard now - r.at <= Self.foldWindow, r.seq >= children[i].startSeq, let d = index(r.child) else { return false }
            return depends(d, on: i) && children[d].status != .running
        }
        for n in takenOver.reversed() {
            if let d = index(restartTimes[n].child) { children[d].failures = max(0, children[d].failures - 1) }
            restartTimes.remove(at: n)
        }
        children[i].failures += 1
        restartTimes.append(Restart(at: now, child: children[i].id, seq: startCount))
        return true
    }

    private func exceedsIntensity(_ now: Instant) -> Bool {
        restartTimes.filter { now - $0.at <= intensity.period }.count > intensity.maxRestarts
    }

    private mutating func armVerdictTimer(_ actions: inout [Action]) {
        guard verdictTimer == nil else { return }
        nextTimerToken += 1
        verdictTimer = nextTimerToken
        actions.append(.scheduleTimer(token: nextTimerToken, after: Self.foldWindow))
    }

    /// Whether child `i` depends on child `j`, so that `j`'s crash restarts `i` too: under
    /// rest_for_one on every child before it, under one_for_all on every other child, and never
    /// on a child that restarts alone.
    private func depends(_ i: Int, on j: Int) -> Bool {
        guard i != j, !children[j].restartsAlone else { return false }
        switch strategy {
        case .oneForOne: return false
        case .restForOne: return j < i
        case .oneForAll: return true
        }
    }

    private mutating func giveUp(after id: String, _ actions: inout [Action]) {
        let why = "restart intensity exceeded: more than \(intensity.maxRestarts) restarts in \(formatDuration(intensity.period)) (last: '\(id)')"
        actions.append(.event(.gaveUp(reason: why)))
        beginShutdown(.gaveUp(why), &actions)
    }

    private mutating func checkAutoShutdown(after id: String, _ actions: inout [Action]) {
        switch autoShutdown {
        case .never:
            return
        case .anySignificant:
            beginShutdown(.normal("significant child '\(id)' ended"), &actions)
        case .allSignificant:
            let stillUp = children.contains { $0.significant && $0.status != .terminated }
            if !stillUp { beginShutdown(.normal("all significant children ended"), &actions) }
        }
    }

    private mutating func addChild(_ spec: ChildSpec, _ request: Int, _ actions: inout [Action]) {
        switch phase {
        case .shuttingDown, .finished, .idle:
            actions.append(.replyAdd(request: request, error: .notRunning))
            return
        case .starting, .running:
            break
        }
        if index(spec.id) != nil {
            actions.append(.replyAdd(request: request, error: .duplicateChild(spec.id)))
            return
        }
        var child = Child(id: spec.id, restart: spec.restart, significant: spec.significant, restartsAlone: spec.restartsAlone,
                          startsWithPrevious: spec.startsWithPrevious)
        child.addRequest = request
        children.append(child)
    }

    private mutating func removeChild(_ id: String, _ request: Int, _ actions: inout [Action]) {
        guard let i = index(id), children[i].removeRequest == nil else {
            actions.append(.replyRemove(request: request, error: .noSuchChild(id)))
            return
        }
        if case .shuttingDown = phase {
            actions.append(.replyRemove(request: request, error: .notRunning))
            return
        }
        children[i].removeRequest = request
    }

    private mutating func beginShutdown(_ outcome: Outcome, _ actions: inout [Action]) {
        switch phase {
        case .shuttingDown, .finished:
            return
        case .idle:
            phase = .finished(outcome)
            actions.append(.finish(outcome))
            return
        case .starting, .running:
            break
        }
        phase = .shuttingDown(outcome)
        // A child being started is stopped too; an exit we already wait for stays awaited.
        if case .exit = awaiting {} else { awaiting = nil }
        plan = children.reversed().filter { $0.status.isAlive }.map { .stop($0.id) }
        for i in children.indices {
            if let request = children[i].addRequest {
                children[i].addRequest = nil
                actions.append(.replyAdd(request: request, error: .notRunning))
            }
            if let request = children[i].removeRequest, !children[i].status.isAlive {
                children[i].removeRequest = nil
                actions.append(.replyRemove(request: request, error: nil))
            }
        }
    }

    // MARK: - Executing the plan

    private mutating func advance(_ now: Instant, _ actions: inout [Action]) {
        while awaiting == nil {
            if plan.isEmpty {
                guard nextPlan(&actions) else { return }
                continue
            }
            execute(plan.removeFirst(), &actions)
        }
    }

    private mutating func execute(_ step: Step, _ actions: inout [Action]) {
        switch step {
        case .stop(let id):
            guard let i = index(id) else { return }
            switch children[i].status {
            case .starting, .running:
                children[i].status = .stopping
                actions.append(.event(.stopping(child: id)))
                actions.append(.stopChild(id: id, generation: children[i].generation))
                awaiting = .exit(id)
            case .stopping:
                awaiting = .exit(id)
            case .down, .terminated:
                return
            }
        case .delay(let duration):
            guard duration > .zero else { return }
            nextTimerToken += 1
            awaiting = .timer(nextTimerToken)
            actions.append(.scheduleTimer(token: nextTimerToken, after: duration))
        case .start(let ids):
            var started = Set<String>()
            for id in ids {
                guard let i = index(id), children[i].status == .down, children[i].removeRequest == nil else { continue }
                if phase != .starting, children[i].addRequest == nil { children[i].restarts += 1 }
                children[i].status = .starting
                children[i].crashed = false
                children[i].generation += 1
                startCount += 1
                children[i].startSeq = startCount
                actions.append(.event(.starting(child: id, generation: children[i].generation)))
                actions.append(.startChild(id: id, generation: children[i].generation))
                started.insert(id)
            }
            if !started.isEmpty { awaiting = .ready(started) }
        case .remove(let id):
            guard let i = index(id) else { return }
            let request = children[i].removeRequest
            children.remove(at: i)
            actions.append(.event(.removed(child: id)))
            if let request { actions.append(.replyRemove(request: request, error: nil)) }
        }
    }

    /// Derives the next plan when the current one is done. Returns false when there is nothing to do.
    private mutating func nextPlan(_ actions: inout [Action]) -> Bool {
        switch phase {
        case .idle, .finished:
            return false
        case .shuttingDown(let outcome):
            if let alive = children.lastIndex(where: { $0.status.isAlive }) {
                plan = [.stop(children[alive].id)]
                return true
            }
            phase = .finished(outcome)
            for i in children.indices {
                if let request = children[i].removeRequest {
                    children[i].removeRequest = nil
                    actions.append(.replyRemove(request: request, error: nil))
                }
            }
            actions.append(.event(.supervisorStopped(outcome: outcome)))
            actions.append(.finish(outcome))
            return false
        case .starting:
            phase = .running
            actions.append(.event(.supervisorReady))
            actions.append(.ready)
            return true
        case .running:
            break
        }

        // Removals first: a child being removed is not restarted.
        let removals = children.filter { $0.removeRequest != nil }
        if !removals.isEmpty {
            plan = removals.flatMap { [Step.stop($0.id), .remove($0.id)] }
            return true
        }

        let crashed = children.indices.filter { children[$0].crashed && children[$0].status == .down }
        let stops = children.indices.filter { i in children[i].status.isAlive && crashed.contains { depends(i, on: $0) } }
        let starting = Set(stops).union(children.indices.filter { children[$0].status == .down })
        guard !starting.isEmpty else { return false }

        let delay = crashed.map { backoff.delay(failures: children[$0].failures, random: random()) }.max() ?? .zero
        if !crashed.isEmpty {
            let ids = starting.sorted().map { children[$0].id }
            actions.append(.event(.restarting(children: ids, after: delay)))
        }
        plan = stops.reversed().map { .stop(children[$0].id) }
            + [.delay(delay)]
            + startSteps(starting.sorted())
        return true
    }

    /// The start steps for children `indices` (ascending): a child joins the step of the one
    /// before it in `indices` when it and every child between them start with their previous
    /// one, as they would in a start of every child.
    private func startSteps(_ indices: [Int]) -> [Step] {
        var steps: [[String]] = []
        for (n, i) in indices.enumerated() {
            if n > 0, (indices[n - 1] + 1...i).allSatisfy({ children[$0].startsWithPrevious }) {
                steps[steps.count - 1].append(children[i].id)
            } else {
                steps.append([children[i].id])
            }
        }
        return steps.map { .start($0) }
    }

    private func index(_ id: String) -> Int? { children.firstIndex { $0.id == id } }
}

extension SupervisorStateMachine.Status {
    var isAlive: Bool { self == .starting || self == .running || self == .stopping }
}
