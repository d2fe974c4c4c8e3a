/// Which cgroups a process is in, as /proc/PID/cgroup says: the v2 path (the `0::` line) and
/// each v1 controller's path. Pure parsing, so the layouts of other hosts can be tested.
struct CgroupMembership: Equatable {
    /// The v2 (unified) group, e.g. `/system.slice/kioskd.service`.
    var unified: String?
    /// v1 hierarchies by controller (`memory`, `pids`, `name=systemd`).
    var v1: [String: String] = [:]

    init(parsing text: String) {
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            if fields[0] == "0" && fields[1].isEmpty {
                unified = path
            } else {
                for controller in fields[1].split(separator: ",") { v1[String(controller)] = path }
            }
        }
    }
}

/// A directory below a mount point for a cgroup path (`/` is the mount itself).
func cgroupDirectory(_ mount: String, _ path: String) -> String {
    path == "/" ? mount : mount + path
}

/// A stable short name for what keeps one daemon's groups apart from another's (its runtime
/// directory): the same every run, so a restarted daemon finds an earlier run's groups. FNV-1a,
/// not Swift's `Hasher`, which is seeded per process.
public func cgroupTag(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    return String(String(hash, radix: 16).suffix(12))
}

/// A limit file's value: nil for unlimited (v2 `max`, v1's page-rounded LONG_MAX) or unreadable.
func parseMemoryLimit(_ text: String?) -> UInt64? {
    guard let text = text?.trimmingWhitespace, let value = UInt64(text) else { return nil }
    return value >= 1 << 62 ? nil : value
}

/// The number after `key` in a flat keyed file (`oom_kill 3` in memory.events or
/// memory.oom_control, `populated 1` in cgroup.events).
func keyedValue(_ text: String?, _ key: String) -> UInt64? {
    guard let text else { return nil }
    for line in text.split(separator: "\n") {
        let f = line.split(separator: " ")
        if f.count == 2, f[0] == key { return UInt64(f[1]) }
    }
    return nil
}
