import Synchronization

/// A value set once and awaited by any number of tasks (an exit status, a readiness line).
/// Waiting is cancellable, so it can lose a race in a task group without hanging it.
public final class OnceValue<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var nextID = 0
        var waiters: [Int: CheckedContinuation<Value?, Never>] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// Sets the value; returns false (and changes nothing) if it was already set.
    @discardableResult
    public func set(_ value: Value) -> Bool {
        let waiters: [CheckedContinuation<Value?, Never>]? = state.withLock { s in
            guard s.value == nil else { return nil }
            s.value = value
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        guard let waiters else { return false }
        for w in waiters { w.resume(returning: value) }
        return true
    }

    public var current: Value? { state.withLock { $0.value } }

    /// The value once set; throws `CancellationError` if the waiting task is cancelled first.
    public func wait() async throws -> Value {
        let id = state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
        let result: Value? = await withTaskCancellationHandler {
            await withCheckedContinuation { c in
                let immediate: Value?? = state.withLock { s in
                    if let v = s.value { return .some(v) }
                    if Task.isCancelled { return .some(nil) }
                    s.waiters[id] = c
                    return nil
                }
                if let immediate { c.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(returning: nil)
        }
        guard let result else { throw CancellationError() }
        return result
    }
}
