/// The body's result, or `TimeoutError` once `duration` has passed (the body is then cancelled).
public func withTimeout<T: Sendable>(
    _ duration: Duration, _ what: @autoclosure () -> String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let description = what()
    return try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: duration)
            throw TimeoutError(duration: duration, what: description)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

public struct TimeoutError: Error, CustomStringConvertible {
    public let duration: Duration
    public let what: String

    public var description: String { "timed out after \(formatDuration(duration)) waiting for \(what)" }
}
