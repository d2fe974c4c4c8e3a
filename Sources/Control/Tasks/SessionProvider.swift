import Essentials
import Kiosk
import Supervision

/// What the task service needs from the sessions: boot one (ready or an error naming what
/// failed), stop one, list them, and hear what happens in them. `SessionManager` is the real
/// one; unit tests use a fake.
public protocol SessionProvider: Sendable {
    var sessionEvents: Broadcast<(session: String, event: SessionEvent)> { get }
    func startSession(_ settings: SessionSettings) async throws -> SessionInfo
    func stopSession(_ id: String, reason: String) async
    func listSessions() async -> [SessionInfo]
}

extension SessionManager: SessionProvider {
    public nonisolated var sessionEvents: Broadcast<(session: String, event: SessionEvent)> { events }

    public func startSession(_ settings: SessionSettings) async throws -> SessionInfo {
        try await create(settings).info()
    }

    public func stopSession(_ id: String, reason: String) async {
        await stop(id, reason: reason)
    }

    public func listSessions() async -> [SessionInfo] {
        await list()
    }
}
