import Essentials

/// The host's memory as admission sees it: how much there is and how pressed it is.
public enum HostMemory {
    /// MemTotal from /proc/meminfo, in bytes.
    public static func total(meminfo: String = "/proc/meminfo") -> UInt64? {
        guard let text = readSmallFile(meminfo) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kib = UInt64(fields[1]) else { return nil }
            return kib * 1024
        }
        return nil
    }

    /// PSI `some avg10` of a pressure file (percent of the last 10 s in which some task stalled
    /// on memory); nil where PSI is off.
    public static func pressure(_ path: String = "/proc/pressure/memory") -> Double? {
        guard let text = readSmallFile(path), let some = text.split(separator: "\n").first(where: { $0.hasPrefix("some ") }) else { return nil }
        for field in some.split(separator: " ") where field.hasPrefix("avg10=") {
            return Double(field.dropFirst("avg10=".count))
        }
        return nil
    }

    /// What the sessions may use together: the smallest of kioskd's own cgroup limit, the
    /// machine's memory and the configured cap, less the reserve kept for the daemon and the OS.
    public static func budget(cgroupLimit: UInt64?, memTotal: UInt64?, configured: UInt64?, reserve: UInt64) -> UInt64 {
        let ceiling = [cgroupLimit, memTotal, configured].compactMap { $0 }.min() ?? 0
        return ceiling > reserve ? ceiling - reserve : 0
    }
}
