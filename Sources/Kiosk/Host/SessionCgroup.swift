import Essentials
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a session's processes use, from its cgroup (or, without one, the sum of their PSS).
public struct MemoryReading: Sendable, Equatable {
    /// Bytes in use now, the working set: what is charged less the inactive file cache, which
    /// the kernel reclaims before it kills (the figure `docker stats` and the kubelet use). A
    /// first session on a cold page cache is charged for the browser's files: ~600 MiB
    /// charged against ~160 MiB in use, measured.
    public var current: UInt64
    /// The most charged at once since the group was made, cache included (the kernel's figure).
    public var peak: UInt64
    /// Processes the kernel killed at the group's limit.
    public var oomKills: Int

    public init(current: UInt64, peak: UInt64, oomKills: Int) {
        self.current = current
        self.peak = peak
        self.oomKills = oomKills
    }
}

/// One session's cgroup: the directories its processes join at spawn, and what the daemon
/// reads and does through them.
public struct SessionCgroup: Sendable {
    /// Where memory is accounted: the v2 group itself, or the v1 memory twin on a hybrid host.
    enum Accounting: Sendable {
        case v2(String)
        case v1(String)
    }

    /// Every directory a process of the session joins (ProcessSpec.cgroups): the v2 group, and
    /// on a hybrid host its v1 memory (and pids) twins.
    public var directories: [String]
    /// The v2 group: membership, cgroup.kill, cgroup.events.
    let group: String
    let accounting: Accounting
    private let seenPeak = PeakTracker()

    init(group: String, twins: [String], accounting: Accounting) {
        self.group = group
        directories = [group] + twins
        self.accounting = accounting
    }

    public func memory() -> MemoryReading {
        switch accounting {
        case .v1(let dir):
            let charged = number(dir + "/memory.usage_in_bytes")
            let current = charged - min(charged, keyedValue(readSmallFile(dir + "/memory.stat"), "total_inactive_file") ?? 0)
            return MemoryReading(current: current, peak: max(charged, number(dir + "/memory.max_usage_in_bytes")),
                                 oomKills: Int(keyedValue(readSmallFile(dir + "/memory.oom_control"), "oom_kill") ?? 0))
        case .v2(let dir):
            let charged = number(dir + "/memory.current")
            let current = charged - min(charged, keyedValue(readSmallFile(dir + "/memory.stat"), "inactive_file") ?? 0)
            // memory.peak came with Linux 5.19; before it the peak is what this daemon saw.
            let peak = readSmallFile(dir + "/memory.peak").flatMap { UInt64($0.trimmingWhitespace) } ?? seenPeak.raise(to: charged)
            return MemoryReading(current: current, peak: max(charged, peak),
                                 oomKills: Int(keyedValue(readSmallFile(dir + "/memory.events"), "oom_kill") ?? 0))
        }
    }

    /// True while any process is in the group.
    public var isPopulated: Bool {
        keyedValue(readSmallFile(group + "/cgroup.events"), "populated") != 0
    }

    /// SIGKILLs every process in the group at once, wherever it forked or setsid'd to.
    public func kill() {
        do {
            try writeCgroupFile(group + "/cgroup.kill", "1")
        } catch {
            // cgroup.kill came with Linux 5.14 (Amazon Linux 2 runs 5.10): kill what the group lists.
            for _ in 0..<16 {
                let pids = (readSmallFile(group + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { Int32($0) }
                if pids.isEmpty { return }
                for pid in pids { _ = Glibc.kill(pid, SIGKILL) }
            }
        }
    }

    /// Waits for `populated 0` (the last process gone), checking every 10 ms; false at the timeout.
    public func waitEmpty(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while isPopulated {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// Removes every directory of the group (it must be empty); returns those that remain.
    @discardableResult
    public func remove() -> [String] {
        directories.filter { rmdir($0) != 0 && errno != ENOENT }
    }

    private func number(_ path: String) -> UInt64 {
        readSmallFile(path).flatMap { UInt64($0.trimmingWhitespace) } ?? 0
    }
}

/// The highest usage seen, for kernels without memory.peak.
private final class PeakTracker: Sendable {
    private let peak = Mutex<UInt64>(0)

    func raise(to value: UInt64) -> UInt64 {
        peak.withLock { p in
            p = max(p, value)
            return p
        }
    }
}

/// Writes a control file of a cgroup (a limit, `+memory`, a pid): one write, as the kernel
/// takes it.
func writeCgroupFile(_ path: String, _ text: String) throws(FileError) {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileError(action: "open", path: path, errno: errno) }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    var n: Int
    repeat {
        n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    } while n < 0 && errno == EINTR
    guard n == bytes.count else { throw FileError(action: "write '\(text)' to", path: path, errno: n < 0 ? errno : EIO) }
}
