import Essentials
import Logging
import Synchronization

/// Where a child's stdout/stderr lines go: a bounded ring of recent lines (kept whatever the
/// rate), the log (rate-limited per child, so a flood cannot drown the journal or stall the
/// reactor), and log-line readiness waiters.
public final class OutputSink: Sendable {
    public struct Line: Sendable, Equatable {
        public enum Stream: String, Sendable { case stdout, stderr }
        public let stream: Stream
        public let text: String
    }

    private struct State {
        var ring: [Line] = []
        var head = 0
        var windowStart: ContinuousClock.Instant = .now
        var loggedInWindow = 0
        var dropped = 0
        var watchers: [(needle: String, value: OnceValue<String>)] = []
    }

    private let state = Mutex(State())
    private let capacity: Int
    private let logRate: Int
    private let level: Logger.Level
    private let onLine: (@Sendable (String) -> Void)?
    private let logger: Logger

    init(capacity: Int, logRate: Int, level: Logger.Level = .info, onLine: (@Sendable (String) -> Void)? = nil, logger: Logger) {
        self.capacity = capacity
        self.logRate = logRate
        self.level = level
        self.onLine = onLine
        self.logger = logger
    }

    /// Last lines, oldest first.
    /// What to show of a failed program's output: the line that says why first (its last
    /// FATAL line, else its last line with "error"), then the last `last` lines. A program's
    /// dying words are often a crash reporter's noise after the one line that explains.
    public static func explanation(_ lines: [String], last: Int = 3) -> [String] {
        let tail = Array(lines.suffix(last))
        let why = lines.last { $0.contains("FATAL") || $0.contains("Fatal") }
            ?? lines.last { $0.lowercased().contains("error") }
        guard let why, !tail.contains(why) else { return tail }
        return [why] + tail
    }

    public var recentLines: [Line] {
        state.withLock { s in
            s.ring.count < capacity ? s.ring : Array(s.ring[s.head...] + s.ring[..<s.head])
        }
    }

    /// Resolves with the first line containing `needle` from now on.
    func watch(for needle: String) -> OnceValue<String> {
        let value = OnceValue<String>()
        state.withLock { $0.watchers.append((needle, value)) }
        return value
    }

    func append(_ text: String, stream: Line.Stream) {
        let now = ContinuousClock.now
        let (log, droppedBefore, matched) = state.withLock { s -> (Bool, Int, [OnceValue<String>]) in
            let line = Line(stream: stream, text: text)
            if s.ring.count < capacity {
                s.ring.append(line)
            } else {
                s.ring[s.head] = line
                s.head = (s.head + 1) % capacity
            }
            var matched: [OnceValue<String>] = []
            if !s.watchers.isEmpty {
                s.watchers.removeAll { w in
                    guard text.contains(w.needle) else { return false }
                    matched.append(w.value)
                    return true
                }
            }
            if now - s.windowStart >= .seconds(1) {
                s.windowStart = now
                s.loggedInWindow = 0
                let dropped = s.dropped
                s.dropped = 0
                s.loggedInWindow += 1
                return (true, dropped, matched)
            }
            if s.loggedInWindow < logRate {
                s.loggedInWindow += 1
                return (true, 0, matched)
            }
            s.dropped += 1
            return (false, 0, matched)
        }
        for m in matched { m.set(text) }
        onLine?(text)
        if droppedBefore > 0 {
            logger.warning("output rate limit: \(droppedBefore) lines not logged (kept in the ring)")
        }
        if log {
            // Many programs write ordinary output to stderr: the stream is metadata, not a level.
            logger.log(level: level, "\(text)", metadata: ["stream": "\(stream.rawValue)"])
        }
    }
}
