/// Every task's deadlines, as a value: running within its start timeout, ended within its
/// lifetime. The service asks when the next one falls and what is due; one loop of the service
/// sleeps until then. Pure, so it is tested without a clock.
struct TaskDeadlines: Sendable, Equatable {
    typealias Instant = ContinuousClock.Instant

    enum Expiry: Sendable, Equatable {
        /// Not running `after` its creation: times out if still queued or starting.
        case notRunning(after: Duration)
        /// At its maximum lifetime: times out whatever its state.
        case lifetime(Duration)
    }

    private struct Entry: Sendable, Equatable {
        var startBy: Instant?
        var startTimeout: Duration
        var endBy: Instant
        var lifetime: Duration
    }

    private var entries: [String: Entry] = [:]

    /// A new task's deadlines. A start timeout at or past the lifetime is the lifetime's alone.
    mutating func arm(_ id: String, now: Instant, startTimeout: Duration, lifetime: Duration) {
        entries[id] = Entry(startBy: startTimeout < lifetime ? now + startTimeout : nil, startTimeout: startTimeout,
                            endBy: now + lifetime, lifetime: lifetime)
    }

    /// A final task has none left.
    mutating func remove(_ id: String) { entries[id] = nil }

    /// The earliest deadline still ahead, if any.
    var next: Instant? {
        entries.values.map { $0.startBy ?? $0.endBy }.min()
    }

    /// Takes the deadlines passed by `now`, earliest first. A start deadline once passed is
    /// dropped; a lifetime ends the entry.
    mutating func due(at now: Instant) -> [(id: String, expiry: Expiry)] {
        var out: [(Instant, String, Expiry)] = []
        for (id, e) in entries {
            if let startBy = e.startBy, startBy <= now {
                out.append((startBy, id, .notRunning(after: e.startTimeout)))
                entries[id]?.startBy = nil
            }
            if e.endBy <= now {
                out.append((e.endBy, id, .lifetime(e.lifetime)))
                entries[id] = nil
            }
        }
        return out.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map { ($0.1, $0.2) }
    }

    var count: Int { entries.count }
}
