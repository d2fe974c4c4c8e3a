import CSupport

#if canImport(Glibc)
import Essentials
import Glibc
#endif

/// Finds and kills every process that belongs to one supervised child, whatever it did to hide:
/// members of its process group or session, and descendants that left both (setsid, double
/// fork: Chromium's crashpad handler does) but still carry the child's environment cookie —
/// the way Jenkins' ProcessTreeKiller finds build leftovers. /proc is the truth, not bookkeeping.
public enum ProcessTree {
    /// The environment variable that marks a child's whole tree.
    public static let cookieVariable = "KIOSKD_SUPERVISED_ID"

    public struct Member: Sendable, Equatable {
        public let pid: Int32
        let startTime: UInt64
    }

    /// Live (non-zombie) processes of the tree of `leader`, found by pgid, session or cookie.
    /// Only processes started no earlier than the leader are considered for the cookie check.
    public static func members(leader: Int32, leaderStart: UInt64, cookie: String) -> [Member] {
        let needle = Array("\(cookieVariable)=\(cookie)\0".utf8)
        return liveProcesses().compactMap { pid, stat in
            if stat.pgrp == leader || stat.session == leader { return Member(pid: pid, startTime: stat.startTime) }
            if stat.startTime >= leaderStart, environ(of: pid, contains: needle) { return Member(pid: pid, startTime: stat.startTime) }
            return nil
        }
    }

    /// Every live (non-zombie) process but this one, with its stat.
    static func liveProcesses() -> [(pid: Int32, stat: Stat)] {
        directoryEntries("/proc").compactMap { name in
            guard let pid = Int32(name), pid != getpid(), let stat = readStat(pid), stat.state != "Z" else { return nil }
            return (pid, stat)
        }
    }

    struct Stat {
        let state: Character
        let pgrp: Int32
        let session: Int32
        let startTime: UInt64
    }

    static func readStat(_ pid: Int32) -> Stat? {
        guard let text = readSmallFile("/proc/\(pid)/stat"),
              let close = text.lastIndex(of: ")") else { return nil }
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 20, let state = fields[0].first,
              let pgrp = Int32(fields[2]), let session = Int32(fields[3]),
              let start = UInt64(fields[19]) else { return nil }
        return Stat(state: state, pgrp: pgrp, session: session, startTime: start)
    }

    static func environ(of pid: Int32, contains needle: [UInt8]) -> Bool {
        guard let bytes = readSmallFileBytes("/proc/\(pid)/environ", limit: 1 << 20) else { return false }
        guard bytes.count >= needle.count else { return false }
        // Entries are NUL-separated: match at the start or right after a NUL.
        var i = 0
        while i + needle.count <= bytes.count {
            if bytes[i] == needle[0], bytes[i..<(i + needle.count)].elementsEqual(needle) { return true }
            guard let next = bytes[i...].firstIndex(of: 0) else { return false }
            i = next + 1
        }
        return false
    }

    /// Signals the whole tree: the process group, then every cookie-carrying straggler.
    /// pidfds pin each process between finding and signalling it, so a reused PID is never hit.
    @discardableResult
    static func signal(leader: Int32, leaderStart: UInt64, cookie: String, _ sig: Int32) -> [PinnedProcess] {
        if leader > 1 { _ = kill(-leader, sig) }
        let pinned = members(leader: leader, leaderStart: leaderStart, cookie: cookie).compactMap(PinnedProcess.init)
        for p in pinned { _ = ksup_pidfd_send_signal(p.pidfd, sig) }
        return pinned
    }

    /// SIGTERM, up to `grace` for everything to go, then SIGKILL until /proc shows nothing left.
    /// Blocks: call it off the cooperative pool (`terminate` does).
    static func terminateBlocking(leader: Int32, leaderStart: UInt64, cookie: String, grace: Duration?) -> Int {
        var killed = 0
        if let grace {
            let pinned = signal(leader: leader, leaderStart: leaderStart, cookie: cookie, SIGTERM)
            PinnedProcess.waitAll(pinned, timeout: grace)
        }
        // Bounded: a fork bomb outpacing us must not hang the stop forever.
        for _ in 0..<64 {
            let pinned = signal(leader: leader, leaderStart: leaderStart, cookie: cookie, SIGKILL)
            if pinned.isEmpty { break }
            killed += pinned.count
            PinnedProcess.waitAll(pinned, timeout: .milliseconds(200))
        }
        return killed
    }

    /// Live processes whose environment holds exactly `entry` (e.g. `KIOSKD_SESSION=/run/…/d3`).
    public static func processes(withEnvironmentEntry entry: String) -> [Int32] {
        let needle = Array((entry + "\0").utf8)
        return liveProcesses().compactMap { pid, _ in environ(of: pid, contains: needle) ? pid : nil }
    }

    /// SIGKILLs every process whose environment has an entry starting with `entryPrefix`
    /// (e.g. `KIOSKD_SESSION=/run/kioskd/sessions/`): what a previous run of the daemon left.
    /// Returns how many were killed. Blocks for at most a few seconds.
    public static func killAll(environmentEntryPrefix entryPrefix: String) -> Int {
        let needle = Array(entryPrefix.utf8)
        var killed = 0
        for _ in 0..<64 {
            let pinned = liveProcesses().compactMap { pid, stat in
                environ(of: pid, contains: needle) ? PinnedProcess(Member(pid: pid, startTime: stat.startTime)) : nil
            }
            if pinned.isEmpty { break }
            for p in pinned { _ = ksup_pidfd_send_signal(p.pidfd, SIGKILL) }
            killed += pinned.count
            PinnedProcess.waitAll(pinned, timeout: .milliseconds(500))
        }
        return killed
    }

    static func terminate(leader: Int32, leaderStart: UInt64, cookie: String, grace: Duration?) async -> Int {
        (try? await blocking { terminateBlocking(leader: leader, leaderStart: leaderStart, cookie: cookie, grace: grace) }) ?? 0
    }
}

/// A process held by a pidfd, checked to still be the one that was found.
struct PinnedProcess {
    let pid: Int32
    let pidfd: Int32

    init?(_ member: ProcessTree.Member) {
        let fd = ksup_pidfd_open(member.pid)
        guard fd >= 0 else { return nil }
        guard let stat = ProcessTree.readStat(member.pid), stat.startTime == member.startTime, stat.state != "Z" else {
            close(fd)
            return nil
        }
        pid = member.pid
        pidfd = fd
    }

    /// Waits until every process has exited or `timeout` passes; closes the pidfds.
    static func waitAll(_ processes: [PinnedProcess], timeout: Duration) {
        defer { for p in processes { close(p.pidfd) } }
        var pending = processes.map { pollfd(fd: $0.pidfd, events: Int16(POLLIN), revents: 0) }
        let deadline = ContinuousClock.now + timeout
        while !pending.isEmpty {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return }
            let ms = Int32(min(left.seconds * 1000 + 1, 60_000))
            let n = poll(&pending, nfds_t(pending.count), ms)
            if n < 0 && errno != EINTR { return }
            pending.removeAll { $0.revents != 0 }
            for i in pending.indices { pending[i].revents = 0 }
        }
    }
}
