/// Which tasks may start, decided as values (the shape of `SupervisorStateMachine`): a task
/// starts only when a session slot is free under `max_sessions`, its expected memory fits in
/// what the budget leaves, and host memory pressure is below the threshold. Otherwise it waits
/// in a bounded FIFO queue; beyond the queue it is refused. The warm pool lives in the same
/// budget and is the first thing given up when a task needs room or pressure rises.
///
/// No clock, no I/O: the task service feeds it requests, measurements and ends, and carries
/// out the actions `next()` returns.
public struct Admission: Sendable, Equatable {
    public struct Settings: Sendable, Equatable {
        /// Sessions alive at once, warm ones included: a hard cap whatever memory says.
        public var maxSessions: Int
        /// Tasks waiting at once; a create beyond it is refused (503, Retry-After).
        public var maxQueued: Int
        /// Bytes the sessions may use together (the host's budget minus the reserve).
        public var budget: UInt64
        /// A session's expected peak before any has been measured.
        public var initialEstimate: UInt64
        /// Host memory pressure (PSI `some avg10`, percent) at which admission stops, and below
        /// which it resumes: apart, so a value hovering at one threshold does not flap.
        public var pressureHigh: Double
        public var pressureLow: Double
        /// Fresh sessions kept booted for tasks to take, and their shape (a task takes one only
        /// if its own shape is the same).
        public var warm: Int
        public var warmShape: String
        /// Young sessions at once: booting, or their task running for less than `provenAfter`.
        /// A session's memory is known only once its page has loaded, so a burst is admitted a
        /// few at a time, each batch measured before the next (boots share the CPU anyway).
        public var maxYoung: Int
        public var provenAfter: Duration
        /// A task running this long has reached its peak: only then may its peak lower the
        /// estimate (any session raises it at once).
        public var settleAfter: Duration

        public init(maxSessions: Int, maxQueued: Int, budget: UInt64, initialEstimate: UInt64,
                    pressureHigh: Double = 20, pressureLow: Double = 10, warm: Int = 0, warmShape: String = "",
                    maxYoung: Int = 2, provenAfter: Duration = .seconds(3), settleAfter: Duration = .seconds(30)) {
            self.maxSessions = maxSessions
            self.maxQueued = maxQueued
            self.budget = budget
            self.initialEstimate = initialEstimate
            self.pressureHigh = pressureHigh
            self.pressureLow = pressureLow
            self.warm = warm
            self.warmShape = warmShape
            self.maxYoung = maxYoung
            self.provenAfter = provenAfter
            self.settleAfter = settleAfter
        }
    }

    /// Why a task cannot even wait.
    public enum Refusal: Sendable, Equatable {
        case draining
        case queueFull(limit: Int)
        /// Its expected memory is more than the whole budget: it could never start here.
        case tooLarge(needs: UInt64, budget: UInt64)
    }

    public enum Action: Sendable, Equatable {
        /// Start the task: on the ready warm session `warm` (same shape), or cold.
        case start(task: String, warm: String?)
        /// Boot a warm session under this id.
        case bootWarm(String)
        /// Stop a warm session: its room is needed, or pressure is high, or kioskd drains.
        case giveUpWarm(String)
    }

    /// Something holding a session slot and memory: a task's session (from admission until it
    /// has ended) or a warm session.
    struct Holder: Sendable, Equatable {
        enum Kind: Sendable, Equatable { case task, warm(ready: Bool), leaving }
        var kind: Kind
        var shape: String
        /// Its own memory limit, if it has one: it never costs more.
        var limit: UInt64?
        /// The latest measurement of its usage and peak.
        var usage: UInt64 = 0
        var peak: UInt64 = 0
        /// How long its task has been running, as last told; nil: not running (yet).
        var age: Duration?
        /// Admission order, so the youngest warm session is given up first.
        var order: Int
    }

    struct Waiting: Sendable, Equatable {
        var id: String
        var shape: String
        /// The task's own memory limit, if lower than the estimate: it can never use more.
        var limit: UInt64?
    }

    public private(set) var settings: Settings
    private(set) var holders: [String: Holder] = [:]
    private(set) var queue: [Waiting] = []
    /// Peaks of the sessions that ended most recently, newest last.
    private(set) var recentPeaks: [UInt64] = []
    public private(set) var pressure: Double = 0
    public private(set) var pressured = false
    public private(set) var draining = false
    private var admitted = 0
    /// How many ended sessions the estimate learns from.
    static let learnFrom = 16

    public init(_ settings: Settings) {
        self.settings = settings
    }

    // MARK: - Questions

    /// A session's expected peak, a quarter more for growth over the largest peak learned from:
    /// the recently ended task sessions and the settled running ones (running for a while: a
    /// page still loading has not reached its peak). Before any of those, the configured one.
    /// A session that is not settled yet can only raise it.
    public var estimate: UInt64 {
        let tasks = holders.values.filter { $0.kind == .task }
        let settled = tasks.filter(isSettled).map(\.peak), young = tasks.filter { !isSettled($0) }.map(\.peak)
        let grown = young.max() ?? 0
        guard let learned = (recentPeaks + settled).max(), learned > 0 else {
            return max(settings.initialEstimate, grown + grown / 4)
        }
        let top = max(learned, grown)
        return top + top / 4
    }

    /// Memory set aside: for each holder the estimate (what it is expected to grow to, as
    /// learned now) or its measured usage, whichever is larger.
    public var committed: UInt64 {
        committed(Array(holders.values))
    }

    private func committed(_ counted: [Holder]) -> UInt64 {
        counted.reduce(0) { $0 + max(cost(limit: $1.limit), $1.usage) }
    }

    /// Measured usage of every session.
    public var used: UInt64 { holders.values.reduce(0) { $0 + $1.usage } }

    public var queued: Int { queue.count }
    /// Tasks holding a session (warm sessions not counted).
    public var active: Int { holders.values.filter { $0.kind == .task }.count }
    public var warmReady: Int { holders.values.filter { $0.kind == .warm(ready: true) }.count }
    public var sessions: Int { holders.count }
    public var slotsFree: Int { max(0, settings.maxSessions - holders.count) }

    /// A task of this shape created now would start at once (a warm session or a free slot
    /// with room), not wait.
    public func wouldStart(shape: String) -> Bool {
        guard !draining, queue.isEmpty else { return false }
        if readyWarm(shape) != nil { return true }
        return fitsCold(cost(limit: nil))
    }

    public func isQueued(_ id: String) -> Bool { queue.contains { $0.id == id } }
    /// Tasks in the queue, head first, and tasks holding a session.
    public var queuedIDs: [String] { queue.map(\.id) }
    public var taskIDs: [String] { holders.filter { $0.value.kind == .task }.map(\.key).sorted() }
    public func holds(_ id: String) -> Bool { holders[id] != nil }
    /// A warm session (booting, ready or being given up), not a task's.
    public func isWarm(_ id: String) -> Bool { holders[id].map { $0.kind != .task } ?? false }
    /// A warm session given up (while it booted, perhaps).
    public func holdsLeaving(_ id: String) -> Bool { holders[id]?.kind == .leaving }

    /// Why a new task cannot wait here (nil: it can).
    public func refusal(limit: UInt64? = nil) -> Refusal? {
        if draining { return .draining }
        let needs = cost(limit: limit)
        if needs > settings.budget { return .tooLarge(needs: needs, budget: settings.budget) }
        if queue.count >= settings.maxQueued { return .queueFull(limit: settings.maxQueued) }
        return nil
    }

    // MARK: - Inputs

    /// Queues a task (call only when `refusal` said nil); `next()` starts it when it fits.
    public mutating func enqueue(_ id: String, shape: String, limit: UInt64? = nil) {
        guard !isQueued(id), holders[id] == nil else { return }
        queue.append(Waiting(id: id, shape: shape, limit: limit))
    }

    /// A queued task left the queue without starting (timed out, cancelled).
    public mutating func withdraw(_ id: String) {
        queue.removeAll { $0.id == id }
    }

    /// A holder's session has ended (or never came to be): its slot and memory are free, and its
    /// peak teaches the estimate if it had settled, or if it raises it (a warm session's idle
    /// peak, or a task's that ended young, would teach it wrong).
    public mutating func released(_ id: String, peak: UInt64? = nil) {
        guard let holder = holders.removeValue(forKey: id) else { return }
        let measured = max(peak ?? 0, holder.peak)
        if holder.kind == .task, measured > 0, isSettled(holder) || measured + measured / 4 > estimate {
            recentPeaks.append(measured)
            if recentPeaks.count > Self.learnFrom { recentPeaks.removeFirst(recentPeaks.count - Self.learnFrom) }
        }
    }

    /// The latest reading of a holder's session.
    public mutating func measured(_ id: String, usage: UInt64, peak: UInt64) {
        guard var holder = holders[id] else { return }
        holder.usage = usage
        holder.peak = max(holder.peak, peak, usage)
        holders[id] = holder
    }

    /// The task holding `id` has been running for `age`.
    public mutating func running(_ id: String, for age: Duration) {
        guard holders[id]?.kind == .task else { return }
        holders[id]?.age = age
    }

    /// A warm session has booted and can be taken.
    public mutating func warmBooted(_ id: String) {
        guard let holder = holders[id], holder.kind == .warm(ready: false) else { return }
        holders[id]?.kind = .warm(ready: true)
    }

    /// Host memory pressure (PSI some avg10, percent), with hysteresis.
    public mutating func observe(pressure: Double) {
        self.pressure = pressure
        if !pressured, pressure >= settings.pressureHigh { pressured = true }
        if pressured, pressure < settings.pressureLow { pressured = false }
    }

    /// From now on nothing new is admitted and the warm pool empties; queued tasks still start.
    public mutating func drain() {
        draining = true
    }

    // MARK: - Decisions

    /// What to do now: start the queue's head while it fits (FIFO: a large head is not
    /// overtaken), give up warm sessions that stand in its way or that pressure or a drain
    /// condemns, and refill the pool when nothing waits. `newWarmID` names a warm session.
    public mutating func next(newWarmID: () -> String) -> [Action] {
        var actions: [Action] = []
        while let head = queue.first {
            if let warm = readyWarm(head.shape) {
                queue.removeFirst()
                // The warm session's measurements go with it to the task.
                var holder = holders.removeValue(forKey: warm)!
                holder.kind = .task
                holders[head.id] = holder
                actions.append(.start(task: head.id, warm: warm))
                continue
            }
            let needs = cost(limit: head.limit)
            if !pressured, fitsCold(needs) {
                queue.removeFirst()
                admitted += 1
                holders[head.id] = Holder(kind: .task, shape: head.shape, limit: head.limit, order: admitted)
                actions.append(.start(task: head.id, warm: nil))
                continue
            }
            // Make room: the youngest warm sessions go first, only as many as the head needs.
            while !pressured, !fitsCold(needs, ignoringLeaving: true), let victim = youngestWarm() {
                holders[victim]?.kind = .leaving
                actions.append(.giveUpWarm(victim))
            }
            break
        }
        if pressured || draining {
            while let victim = youngestWarm() {
                holders[victim]?.kind = .leaving
                actions.append(.giveUpWarm(victim))
            }
        } else if queue.isEmpty {
            let needs = cost(limit: nil)
            while warmCount < settings.warm, fitsCold(needs) {
                admitted += 1
                let id = newWarmID()
                holders[id] = Holder(kind: .warm(ready: false), shape: settings.warmShape, limit: nil, order: admitted)
                actions.append(.bootWarm(id))
            }
        }
        return actions
    }

    // MARK: - Helpers

    private func cost(limit: UInt64?) -> UInt64 {
        min(estimate, limit ?? .max)
    }

    private func isSettled(_ h: Holder) -> Bool { (h.age ?? .zero) >= settings.settleAfter }

    /// Booting (a task's or a warm one), or running for less than `provenAfter`.
    private func isYoung(_ h: Holder) -> Bool {
        switch h.kind {
        case .task: (h.age ?? .zero) < settings.provenAfter
        case .warm(let ready): !ready
        case .leaving: false
        }
    }

    /// Sessions booting or just started now.
    public var young: Int { holders.values.filter(isYoung).count }

    /// A slot is free and `needs` fits in what is left; leaving warm sessions still count
    /// (their memory is freed only when they have ended) unless asked to look past them.
    private func fitsCold(_ needs: UInt64, ignoringLeaving: Bool = false) -> Bool {
        let counted = ignoringLeaving ? holders.values.filter { $0.kind != .leaving } : Array(holders.values)
        let committed = committed(counted)
        return counted.count < settings.maxSessions && young < settings.maxYoung
            && committed <= settings.budget && needs <= settings.budget - committed
    }

    private var warmCount: Int {
        holders.values.filter { if case .warm = $0.kind { true } else { false } }.count
    }

    private func readyWarm(_ shape: String) -> String? {
        holders.filter { $0.value.kind == .warm(ready: true) && $0.value.shape == shape }.min { $0.value.order < $1.value.order }?.key
    }

    /// Not-yet-ready warm sessions before ready ones, then the youngest.
    private func youngestWarm() -> String? {
        holders.filter { if case .warm = $0.value.kind { true } else { false } }
            .max { a, b in
                let ra = a.value.kind == .warm(ready: true), rb = b.value.kind == .warm(ready: true)
                return ra != rb ? ra && !rb : a.value.order < b.value.order
            }?.key
    }
}
