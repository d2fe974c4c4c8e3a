/// Suspends until the calling task is cancelled: how a service whose work runs elsewhere (a
/// session's tree, a server's event loop) waits for its stop.
public func untilCancelled() async {
    _ = try? await OnceValue<Void>().wait()
}

/// Runs `body` to its end even when the caller is cancelled, and waits for it: for the clean-up
/// a stop must finish (a cancelled task's every wait would end at once). The one unstructured
/// task kioskd starts for this, and it never outlives its caller.
public func shielded<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await Task { try await body() }.value
}
