import Essentials
import Supervision

/// Memory of processes from /proc, for hosts without a usable cgroup: PSS (proportional set
/// size) shares each page among the processes mapping it, so the sum over a session's
/// processes does not count Chromium's shared pages once per process as RSS would.
enum ProcessMemory {
    /// The summed PSS of every process whose environment holds `entry` (a session's marker).
    static func pss(ofProcessesWith entry: String) -> UInt64 {
        ProcessTree.processes(withEnvironmentEntry: entry).reduce(0) { $0 + (pss($1) ?? 0) }
    }

    /// One process's PSS in bytes; nil once it is gone.
    static func pss(_ pid: Int32) -> UInt64? {
        guard let text = readSmallFile("/proc/\(pid)/smaps_rollup") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
            // "Pss:              12345 kB"
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kib = UInt64(fields[1]) else { return nil }
            return kib * 1024
        }
        return nil
    }
}
