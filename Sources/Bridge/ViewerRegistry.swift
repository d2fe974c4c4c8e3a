import Metrics

/// Viewers per task, bounded; and the bridge's metrics.
actor ViewerRegistry {
    private var counts: [String: Int] = [:]
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func count(_ task: String) -> Int { counts[task, default: 0] }

    /// Takes a place for a viewer; false when the task is full.
    func join(_ task: String) -> Bool {
        guard counts[task, default: 0] < limit else { return false }
        counts[task, default: 0] += 1
        Gauge(label: "kioskd_bridge_viewers").record(counts.values.reduce(0, +))
        return true
    }

    func leave(_ task: String) {
        counts[task, default: 1] -= 1
        if counts[task] == 0 { counts[task] = nil }
        Gauge(label: "kioskd_bridge_viewers").record(counts.values.reduce(0, +))
    }
}
