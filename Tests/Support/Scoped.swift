/// `body`, with `background` (a server, a recorder) running beside it. Once the body ends,
/// however it ends, the background is cancelled and awaited: nothing started here outlives the
/// call, so a serialized suite's next test never meets the last one's server.
public func withBackground<T>(_ background: @escaping @Sendable () async throws -> Void,
                              _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await background() }
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        group.cancelAll()
        // Ending by cancellation is the background's only way out here; what it throws doing so
        // says nothing about the test.
        try? await group.waitForAll()
        return try result.get()
    }
}
