import Essentials
import FoundationEssentials
import Logging
import Supervision
import Synchronization
import WSClient

/// An error CDP answered with, or the connection's end while a command was waiting.
public struct CDPError: Error, CustomStringConvertible, Equatable {
    public let description: String
}

/// One CDP event: a method, its params and, for flattened target sessions, the session id.
public struct CDPEvent: Sendable {
    public let method: String
    public let params: JSONValue
    public let sessionID: String?
}

/// A Chrome DevTools Protocol connection over a WebSocket. Commands are matched to answers by
/// id; events arrive on `events`. Flattened sessions (`Target.attachToTarget` with
/// `flatten: true`) share the one connection.
public final class CDPConnection: Sendable {
    private struct State {
        var nextID = 1
        /// Each command's answer, by id, until it arrives or the connection ends.
        var pending: [Int: OnceValue<Result<JSONValue, CDPError>>] = [:]
        var closed: String?
    }
    private let state = Mutex(State())
    private let writer: WebSocketOutboundWriter
    private let eventSink: AsyncStream<CDPEvent>.Continuation
    /// Every event the browser sends, in order; ends when the connection does.
    public let events: AsyncStream<CDPEvent>

    /// Messages may be big (screenshots, DOM snapshots); Chromium never fragments them.
    static let maxMessage = 32 << 20

    init(writer: WebSocketOutboundWriter) {
        self.writer = writer
        (events, eventSink) = AsyncStream.makeStream(of: CDPEvent.self, bufferingPolicy: .bufferingNewest(1024))
    }

    /// Connects to a CDP WebSocket URL (e.g. the browser's, `browserDebuggerURL`) and runs
    /// `body` with the connection; the connection closes when `body` returns.
    public static func connect<T: Sendable>(url: String, logger: Logger, _ body: @escaping @Sendable (CDPConnection) async throws -> T) async throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let config = WebSocketClientConfiguration(maxFrameSize: maxMessage)
        try await WebSocketClient.connect(url: url, configuration: config, logger: logger) { inbound, outbound, _ in
            let cdp = CDPConnection(writer: outbound)
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        for try await message in inbound.messages(maxSize: maxMessage) {
                            if case .text(let text) = message { cdp.receive(text) }
                        }
                        cdp.close("the browser closed the CDP connection")
                    } catch {
                        cdp.close("the CDP connection failed: \(error)")
                    }
                }
                let outcome: Result<T, any Error>
                do { outcome = .success(try await body(cdp)) } catch { outcome = .failure(error) }
                result.withLock { $0 = outcome }
                cdp.close("the CDP connection was closed")
                group.cancelAll()
            }
        }
        guard let outcome = result.withLock({ $0 }) else { throw CDPError(description: "the CDP connection closed before it was used") }
        return try outcome.get()
    }

    /// Sends a command and waits for its answer; CDP's own errors are thrown as `CDPError`.
    @discardableResult
    public func send(_ method: String, _ params: JSONValue = [:], session: String? = nil) async throws -> JSONValue {
        var message: [String: JSONValue] = ["method": .string(method), "params": params]
        if let session { message["sessionId"] = .string(session) }
        // Registered before it is sent: the answer can only come after.
        let answer = OnceValue<Result<JSONValue, CDPError>>()
        let id: Int = try state.withLock { s in
            if let why = s.closed { throw CDPError(description: why) }
            defer { s.nextID += 1 }
            s.pending[s.nextID] = answer
            return s.nextID
        }
        defer { _ = state.withLock { $0.pending.removeValue(forKey: id) } }
        message["id"] = .number(Double(id))
        let text = String(decoding: try JSONEncoder().encode(JSONValue.object(message)), as: UTF8.self)
        do {
            try await writer.write(.text(text))
        } catch {
            throw CDPError(description: "cannot send \(method): \(error)")
        }
        // Cancellable: a cancelled caller stops waiting; a late answer finds no one and is dropped.
        return try await answer.wait().get()
    }

    private struct Envelope: Decodable {
        struct Failure: Decodable {
            let code: Int?
            let message: String
        }
        let id: Int?
        let result: JSONValue?
        let error: Failure?
        let method: String?
        let params: JSONValue?
        let sessionId: String?
    }

    private func receive(_ text: String) {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(text.utf8)) else { return }
        if let id = envelope.id {
            guard let answer = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
            if let failure = envelope.error {
                answer.set(.failure(CDPError(description: failure.message + (failure.code.map { " (\($0))" } ?? ""))))
            } else {
                answer.set(.success(envelope.result ?? .null))
            }
        } else if let method = envelope.method {
            eventSink.yield(CDPEvent(method: method, params: envelope.params ?? .null, sessionID: envelope.sessionId))
        }
    }

    private func close(_ why: String) {
        let waiting = state.withLock { s -> [OnceValue<Result<JSONValue, CDPError>>] in
            if s.closed == nil { s.closed = why }
            defer { s.pending = [:] }
            return Array(s.pending.values)
        }
        for answer in waiting { answer.set(.failure(CDPError(description: why))) }
        eventSink.finish()
    }
}

/// The browser-wide CDP WebSocket endpoint (`ws://127.0.0.1:P/devtools/browser/<id>`), from
/// /json/version; nil while nothing answers there. The id changes with every browser launch.
public func browserDebuggerURL(cdpPort: Int) async -> String? {
    let answer = try? await blocking { httpGet(host: "127.0.0.1", port: cdpPort, path: "/json/version") }
    guard let answer, answer.status == 200,
          let version = try? JSONDecoder().decode(JSONValue.self, from: Data(answer.body)) else { return nil }
    return version["webSocketDebuggerUrl"]?.string
}
