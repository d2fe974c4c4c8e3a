import Kiosk
import Supervision

/// What the task service needs from the sessions: boot one (ready or an error naming what
/// failed), stop one, list them, and hear what happens in them. `SessionManager` is the real
/// one; unit tests use a fake.
public protocol SessionProvider: Sendable {
    var sessionEvents: Broadcast<(session: String, event: SessionEvent)> { get }
    func create(_ settings: SessionSettings) async throws -> SessionInfo
    func stop(_ id: String, reason: String) async
    func list() async -> [SessionInfo]
}

extension SessionManager: SessionProvider {
    public nonisolated var sessionEvents: Broadcast<(session: String, event: SessionEvent)> { events }

    public func create(_ settings: SessionSettings) async throws -> SessionInfo {
        let session: Session = try await create(settings)
        return await session.info()
    }

    public func stop(_ id: String, reason: String) async {
        let _: SessionEnd? = await stop(id, reason: reason)
    }
}
