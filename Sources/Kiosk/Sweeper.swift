import FoundationEssentials
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// What the sweeper removed.
public struct SweepReport: Sendable, Equatable {
    public var processes = 0
    public var directories: [String] = []
    public var displays: [Int] = []
}

/// Removes what an earlier run of the daemon left when it died without stopping its sessions
/// (SIGKILL, OOM, power): processes still carrying a session marker under our sessions
/// directory, session directories, and the X sockets of the displays its records name (only
/// if provably dead: the display allocator's rules).
struct Sweeper {
    let host: SessionHost

    func sweep() async -> SweepReport {
        var report = SweepReport()
        let prefix = SessionLayout.markerVariable + "=" + host.sessionsDir + "/"
        report.processes = (try? await blocking { ProcessTree.killAll(environmentEntryPrefix: prefix) }) ?? 0

        for name in entries(host.recordsDir) where name.hasSuffix(".json") {
            let path = host.recordsDir + "/" + name
            if let text = readTextFile(path), let record = try? JSONDecoder().decode(SessionRecord.self, from: Data(text.utf8)),
               await host.displays.removeIfStale(record.display) {
                report.displays.append(record.display)
            }
            unlink(path)
        }
        for name in entries(host.sessionsDir) {
            let path = host.sessionsDir + "/" + name
            removeTree(path)
            report.directories.append(path)
        }
        if report != SweepReport() {
            host.logger.warning("removed leftovers of an earlier run", metadata: [
                "processes": "\(report.processes)", "directories": "\(report.directories)", "displays": "\(report.displays)",
            ])
        }
        return report
    }

    private func entries(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let entry = readdir(d) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
