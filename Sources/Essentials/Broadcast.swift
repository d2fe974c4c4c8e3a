import Synchronization

/// Fans values out to every subscriber. A subscriber that falls behind loses its oldest values
/// (bounded buffer) rather than slowing the publisher down.
public final class Broadcast<Element: Sendable>: Sendable {
    private struct State {
        var next = 0
        var subscribers: [Int: AsyncStream<Element>.Continuation] = [:]
        var finished = false
    }
    private let state = Mutex(State())
    private let bufferSize: Int

    public init(bufferSize: Int = 4096) { self.bufferSize = bufferSize }

    /// Values published from now on; a stream taken after `finish` ends at once.
    public func subscribe() -> AsyncStream<Element> {
        let (stream, continuation) = AsyncStream.makeStream(of: Element.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id: Int? = state.withLock { s in
            guard !s.finished else { return nil }
            s.next += 1
            s.subscribers[s.next] = continuation
            return s.next
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    public func publish(_ value: Element) {
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for s in subscribers { s.yield(value) }
    }

    /// Ends every stream after what was already published.
    public func finish() {
        let subscribers = state.withLock { s in
            s.finished = true
            defer { s.subscribers = [:] }
            return Array(s.subscribers.values)
        }
        for s in subscribers { s.finish() }
    }
}
