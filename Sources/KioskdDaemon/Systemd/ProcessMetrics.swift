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
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        // /proc/self/stat: the fields after the command's closing parenthesis, from state (3).
        let fields = readSmallFile("/proc/self/stat").flatMap { $0.split(separator: ")").last }.map { $0.split(separator: " ") } ?? []
        func field(_ n: Int) -> Double? { fields.count > n - 3 ? Double(fields[n - 3]) : nil }
        let bootTime = readSmallFile("/proc/stat")?.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) }
        metric("process_start_time_seconds", "gauge", bootTime.flatMap { boot in field(22).map { boot + $0 / ticks } })
        metric("process_cpu_seconds_total", "counter", field(14).flatMap { user in field(15).map { (user + $0) / ticks } })
        let pages = readSmallFile("/proc/self/statm")?.split(separator: " ").dropFirst().first.flatMap { Double($0) }
        metric("process_resident_memory_bytes", "gauge", pages.map { $0 * Double(sysconf(Int32(_SC_PAGESIZE))) })
        metric("process_open_fds", "gauge", Double(directoryEntries("/proc/self/fd").count))
        var limit = rlimit()
        metric("process_max_fds", "gauge", getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Double(limit.rlim_cur) : nil)
        return out
    }
}
