import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One log record per line on stderr. Under journald each line starts with its syslog priority
/// (`<6>`), which journald turns into the record's PRIORITY; elsewhere lines carry a timestamp
/// and the level in words. Newlines inside a message are escaped so a record never splits.
public struct LogOutput: LogHandler {
    public enum Style: Sendable { case journal, text }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let style: Style

    public init(label: String, style: Style, level: Logger.Level) {
        self.label = label
        self.style = style
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let line = Self.format(style: style, level: event.level, label: label, message: "\(event.message)", metadata: merged, time: Self.wallTime())
        Self.write(line)
    }

    static func format(style: Style, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, time: timespec) -> String {
        let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\(quoted("\($0.value)"))" }.joined(separator: " ")
        let text = escaped(message) + (fields.isEmpty ? "" : " " + fields)
        switch style {
        case .journal:
            return "<\(priority(level))>\(text)\n"
        case .text:
            return "\(timestamp(time)) \(level.rawValue.uppercased().padding(8)) \(label): \(text)\n"
        }
    }

    /// syslog priorities (sd-daemon.h): what journald reads from the prefix.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func escaped(_ s: String) -> String {
        guard s.contains(where: { $0 == "\n" || $0 == "\r" }) else { return s }
        return s.replacingAll("\r", with: "\\r").replacingAll("\n", with: "\\n")
    }

    static func quoted(_ s: String) -> String {
        let e = escaped(s)
        return e.contains(" ") || e.isEmpty ? "\"\(e.replacingAll("\"", with: "\\\""))\"" : e
    }

    static func timestamp(_ ts: timespec) -> String {
        var t = ts.tv_sec
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let ms = Int(ts.tv_nsec / 1_000_000)
        let msText = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(msText)Z"
    }

    static func wallTime() -> timespec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts
    }

    /// Lines from many threads must not interleave: one write(2) per record, under a lock.
    private static let lock = Mutex(())

    static func write(_ line: String) {
        lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                offset += n
            }
        }
    }

    /// journald sets JOURNAL_STREAM to the device:inode of the stream it gave us as stderr.
    public static func stderrIsJournal(environment: [String: String]) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// Bootstraps swift-log once for the process.
    public static func bootstrap(format: LogFormat, level: LogLevel, environment: [String: String]) {
        let style: Style = switch format {
        case .journal: .journal
        case .text: .text
        case .auto: stderrIsJournal(environment: environment) ? .journal : .text
        }
        let swiftLevel = Logger.Level(rawValue: level.rawValue) ?? .info
        LoggingSystem.bootstrap { label in LogOutput(label: label, style: style, level: swiftLevel) }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }

    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
