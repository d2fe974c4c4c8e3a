/// The one way kioskd races work against work or against the clock.
///
/// Runs the branches concurrently; the first to finish wins, with its value or its error, and
/// the others are cancelled (and awaited: nothing outlives the call). Cancelling the caller
/// cancels every branch, so the first to notice wins, usually with `CancellationError`.
public func race<T: Sendable>(_ branches: @Sendable () async throws -> T...) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        for branch in branches { group.addTask { try await branch() } }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// The body's result, or `TimeoutError` once `duration` has passed (the body is then cancelled).
public func withTimeout<T: Sendable>(
    _ duration: Duration, _ what: @autoclosure () -> String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let description = what()
    return try await race(body) {
        try await Task.sleep(for: duration)
        throw TimeoutError(duration: duration, what: description)
    }
}

/// The same bound for a body that may not honour cancellation (a call blocked on a peer that
/// vanished without a reset): at the deadline the body is cancelled and left to end on its own,
/// its result dropped, and the caller gets `TimeoutError` at once instead of waiting with it.
public func withAbandoningTimeout<T: Sendable>(
    _ duration: Duration, _ what: @autoclosure () -> String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let done = OnceValue<Result<T, any Error>>()
    // Unstructured on purpose: this call must be able to return while the body still runs.
    let work = Task {
        do { _ = done.set(.success(try await body())) } catch { _ = done.set(.failure(error)) }
    }
    do {
        return try await withTimeout(duration, what()) { try await done.wait() }.get()
    } catch {
        if done.current == nil { work.cancel() }
        throw error
    }
}

public struct TimeoutError: Error, CustomStringConvertible {
    public let duration: Duration
    public let what: String

    public var description: String { "timed out after \(formatDuration(duration)) waiting for \(what)" }
}

/// "250 ms", "1.5 s", "30 s": durations in messages people read.
public func formatDuration(_ d: Duration) -> String {
    let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    if s >= 1 { return s == s.rounded() ? "\(Int(s)) s" : "\((s * 10).rounded() / 10) s" }
    return "\(Int((s * 1000).rounded())) ms"
}
