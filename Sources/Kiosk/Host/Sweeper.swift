import Essentials
import FoundationEssentials
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// What the sweeper removed.
public struct SweepReport: Sendable, Equatable {
    public var processes = 0
    /// Session cgroups killed and removed.
    public var cgroups = 0
    public var directories: [String] = []
    public var displays: [Int] = []
    /// Orphaned MIT-SHM segments of the session user removed.
    public var sharedMemory = 0
}

/// Removes what an earlier run of the daemon left when it died without stopping its sessions
/// (SIGKILL, OOM, power): its session cgroups with whatever is in them, processes still
/// carrying a session marker under our sessions directory, session directories, and the X
/// sockets of the displays its records name (only if provably dead: the display allocator's
/// rules).
struct Sweeper {
    let host: SessionHost

    func sweep() async -> SweepReport {
        var report = SweepReport()
        // First: cgroup.kill reaches even what carries no marker.
        report.cgroups = await host.cgroups?.sweep() ?? 0
        let prefix = SessionLayout.markerVariable + "=" + host.sessionsDir + "/"
        report.processes = (try? await blocking { ProcessTree.killAll(environmentEntryPrefix: prefix) }) ?? 0

        for name in directoryEntries(host.recordsDir) where name.hasSuffix(".json") {
            let path = host.recordsDir + "/" + name
            if let text = readSmallFile(path), let record = try? JSONDecoder().decode(SessionRecord.self, from: Data(text.utf8)),
               await host.displays.removeIfStale(record.display) {
                report.displays.append(record.display)
            }
            unlink(path)
        }
        for name in directoryEntries(host.sessionsDir) {
            let path = host.sessionsDir + "/" + name
            removeTree(path)
            report.directories.append(path)
        }
        report.sharedMemory = SharedMemory.removeOrphans(uid: host.user?.uid ?? geteuid())
        if report != SweepReport() {
            host.logger.warning("removed leftovers of an earlier run", metadata: [
                "processes": "\(report.processes)", "cgroups": "\(report.cgroups)", "directories": "\(report.directories)", "displays": "\(report.displays)",
                "shared_memory_segments": "\(report.sharedMemory)",
            ])
        }
        return report
    }
}
