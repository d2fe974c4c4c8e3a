/// Every decision a supervisor makes, with no effects: inputs go in, actions come out.
///
/// Restarts are planned from the children's statuses rather than remembered as work in flight:
/// a plan (stops in reverse order, a backoff delay, starts in order) is derived from which
/// children crashed, executed one step at a time, and may be dropped at any step boundary and
/// derived again. That keeps crashes during a restart, start failures and shutdown requests
/// arriving mid-plan simple and correct.
public struct SupervisorStateMachine: Sendable {
    public typealias Instant = ContinuousClock.Instant

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
        case start(String)
        case remove(String)
    }

    /// What the current step waits for.
    enum Awaiting: Equatable {
        case exit(String)
        case ready(String)
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
    var restartTimes: [Instant] = []
    var nextTimerToken = 0
    let random: @Sendable () -> Double

    public init(spec: SupervisorSpec, random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        strategy = spec.strategy
        intensity = spec.intensity
        backoff = spec.backoff
        autoShutdown = spec.autoShutdown
        children = spec.children.map { Child(id: $0.id, restart: $0.restart, significant: $0.significant) }
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
            plan = children.map { .start($0.id) }
        case .childReady(let id, let generation, let detail):
            childReady(id, generation, detail, now, &actions)
        case .childExited(let id, let generation, let reason):
            childExited(id, generation, reason, now, &actions)
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
        if awaiting == .ready(id) { awaiting = nil }
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
            if awaiting == .ready(id) { awaiting = nil }
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
            children[i].crashed = true
            recordFailure(i, now)
            plan = []
            if exceedsIntensity(now) {
                giveUp(after: id, &actions)
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
        children[i].crashed = true
        recordFailure(i, now)
        let givingUp = exceedsIntensity(now)
        actions.append(.event(.exited(child: child.id, reason: reason, willRestart: !givingUp)))
        // Drop the rest of a restart plan in progress: the next one is derived with this crash in
        // it. The initial start runs to its end first, as OTP handles exits after init.
        if phase == .running { plan = [] }
        if givingUp { giveUp(after: child.id, &actions) }
    }

    private mutating func recordFailure(_ i: Int, _ now: Instant) {
        children[i].failures += 1
        restartTimes.append(now)
        restartTimes.removeAll { now - $0 > intensity.period }
    }

    private func exceedsIntensity(_ now: Instant) -> Bool {
        restartTimes.count > intensity.maxRestarts
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
        var child = Child(id: spec.id, restart: spec.restart, significant: spec.significant)
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
        case .start(let id):
            guard let i = index(id), children[i].status == .down, children[i].removeRequest == nil else { return }
            if phase != .starting, children[i].addRequest == nil { children[i].restarts += 1 }
            children[i].status = .starting
            children[i].crashed = false
            children[i].generation += 1
            actions.append(.event(.starting(child: id, generation: children[i].generation)))
            actions.append(.startChild(id: id, generation: children[i].generation))
            awaiting = .ready(id)
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
        var stops: [Int] = []
        if let first = crashed.first {
            switch strategy {
            case .oneForOne:
                stops = []
            case .restForOne:
                stops = children.indices.filter { $0 > first && children[$0].status.isAlive }
            case .oneForAll:
                stops = children.indices.filter { children[$0].status.isAlive }
            }
        }
        let starting = Set(stops).union(children.indices.filter { children[$0].status == .down })
        guard !starting.isEmpty else { return false }

        let delay = crashed.map { backoff.delay(failures: children[$0].failures, random: random()) }.max() ?? .zero
        if !crashed.isEmpty {
            let ids = starting.sorted().map { children[$0].id }
            actions.append(.event(.restarting(children: ids, after: delay)))
        }
        plan = stops.reversed().map { .stop(children[$0].id) }
            + [.delay(delay)]
            + starting.sorted().map { .start(children[$0].id) }
        return true
    }

    private func index(_ id: String) -> Int? { children.firstIndex { $0.id == id } }
}

extension SupervisorStateMachine.Status {
    var isAlive: Bool { self == .starting || self == .running || self == .stopping }
}

func formatDuration(_ d: Duration) -> String {
    let s = d.seconds
    if s >= 1 { return s == s.rounded() ? "\(Int(s)) s" : "\((s * 10).rounded() / 10) s" }
    return "\(Int((s * 1000).rounded())) ms"
}
