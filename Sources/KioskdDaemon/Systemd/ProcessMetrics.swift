import Essentials

#if canImport(Glibc)
import Glibc
#endif

/// The daemon process's own figures in Prometheus' standard names (what client libraries' process
/// collectors export; swift-prometheus has none), read from /proc at each scrape:
/// `process_start_time_seconds` changing is a restart.
enum ProcessMetrics {
    static func exposition() -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ value: Double?) {
            guard let value else { return }
            out += "# TYPE \(name) \(type)\n\(name) \(value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value))\n"
        }
        metric("process_start_time_seconds", "gauge", startTime)
        let stat = Stat()
        metric("process_cpu_seconds_total", "counter", stat[14].flatMap { user in stat[15].map { (user + $0) / ticks } })
        let pages = readSmallFile("/proc/self/statm")?.split(separator: " ").dropFirst().first.flatMap { Double($0) }
        metric("process_resident_memory_bytes", "gauge", pages.map { $0 * Double(sysconf(Int32(_SC_PAGESIZE))) })
        metric("process_open_fds", "gauge", Double(directoryEntries("/proc/self/fd").count))
        var limit = rlimit()
        metric("process_max_fds", "gauge", getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Double(limit.rlim_cur) : nil)
        return out
    }

    /// Read once (at the first scrape): derived from the boot time, it would move with the clock
    /// (an NTP step, a resumed VM) and look like a restart.
    static let startTime: Double? = {
        let bootTime = readSmallFile("/proc/stat")?.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) }
        guard let bootTime, let started = Stat()[22] else { return nil }
        return bootTime + started / ticks
    }()

    private static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// /proc/self/stat, read once; fields numbered as proc(5) numbers them, counted after the
    /// command's closing parenthesis, since the command may hold spaces.
    private struct Stat {
        let fields = readSmallFile("/proc/self/stat")?.split(separator: ")").last?.split(separator: " ") ?? []

        subscript(n: Int) -> Double? { fields.count > n - 3 ? Double(fields[n - 3]) : nil }
    }
}
