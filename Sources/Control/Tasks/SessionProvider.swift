import Essentials
import Kiosk
import Supervision

/// What the task service needs from the sessions: boot one (ready or an error naming what
/// failed), give a warm one to a task, stop one, list them, measure them, and hear what
/// happens in them. `SessionManager` is the real one; unit tests use a fake.
public protocol SessionProvider: Sendable {
    var sessionEvents: Broadcast<(session: String, event: SessionEvent)> { get }
    func startSession(_ settings: SessionSettings) async throws -> SessionInfo
    /// The warm session `id` opens the task's page and answers to the task's id too.
    func adoptSession(_ id: String, by task: String, url: String) async throws -> SessionInfo
    func stopSession(_ id: String, reason: String) async
    func listSessions() async -> [SessionInfo]
    /// Each live session's memory, by session id.
    func sessionMemory() async -> [String: MemoryReading]
}

extension SessionManager: SessionProvider {
    public nonisolated var sessionEvents: Broadcast<(session: String, event: SessionEvent)> { events }

    public func startSession(_ settings: SessionSettings) async throws -> SessionInfo {
        try await create(settings).info()
    }

    public func adoptSession(_ id: String, by task: String, url: String) async throws -> SessionInfo {
        try await adopt(id, by: task, url: url).info()
    }

    public func sessionMemory() async -> [String: MemoryReading] {
        await memory()
    }

    public func stopSession(_ id: String, reason: String) async {
        await stop(id, reason: reason)
    }

    public func listSessions() async -> [SessionInfo] {
        await list()
    }
}
