import Metrics
import NIOConcurrencyHelpers

/// Viewers (or agents) per task, bounded; and the bridge's metrics.
///
/// A lock rather than an actor: a viewer's place is given back from its relay's event loop, in
/// the same call that closes the viewer, so a client that has seen its connection close finds
/// the place free, whatever the VNC side is still doing.
final class ViewerRegistry: Sendable {
    private let counts = NIOLockedValueBox<[String: Int]>([:])
    let limit: Int
    /// Records the places held over all tasks (a gauge: viewers, agents, relayed connections).
    private let record: @Sendable (Int) -> Void

    init(limit: Int, record: @escaping @Sendable (Int) -> Void = { Gauge(label: "kioskd_bridge_viewers").record($0) }) {
        self.limit = limit
        self.record = record
    }

    func count(_ task: String) -> Int { counts.withLockedValue { $0[task, default: 0] } }

    /// Takes a place for a viewer; nil when the task is full.
    func join(_ task: String) -> ViewerSlot? {
        let total: Int? = counts.withLockedValue { counts in
            guard counts[task, default: 0] < limit else { return nil }
            counts[task, default: 0] += 1
            return counts.values.reduce(0, +)
        }
        guard let total else { return nil }
        record(total)
        return ViewerSlot { self.leave(task) }
    }

    private func leave(_ task: String) {
        let total = counts.withLockedValue { counts in
            counts[task, default: 1] -= 1
            if counts[task] == 0 { counts[task] = nil }
            return counts.values.reduce(0, +)
        }
        record(total)
    }
}

/// One viewer's place; given back once, by whichever comes first: the relay's end on its event
/// loop, or the serving task after it.
final class ViewerSlot: Sendable {
    private let leave: NIOLockedValueBox<(@Sendable () -> Void)?>

    init(leave: @escaping @Sendable () -> Void) { self.leave = NIOLockedValueBox(leave) }

    func release() {
        leave.withLockedValue { leave in
            let once = leave
            leave = nil
            return once
        }?()
    }
}
