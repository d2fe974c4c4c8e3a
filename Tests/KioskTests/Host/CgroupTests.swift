import Essentials
import KioskdTestSupport
import Logging
import Supervision
import Testing
@testable import Kiosk

#if canImport(Glibc)
import Glibc
#endif

/// The host's session cgroups: detection, groups with limits, the sweep. Real cgroups: needs
/// root and a writable cgroup v2 hierarchy (this host: hybrid, /sys/fs/cgroup/unified).
@Suite("Session cgroups", .serialized)
struct CgroupTests {
    let logger = Logger(label: "test")

    @Test func membershipLinesParse() {
        let m = CgroupMembership(parsing: "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/35a3\n2:cpu,cpuacct:/x\n0::/\n")
        #expect(m.unified == "/")
        #expect(m.v1 == ["name=systemd": "/", "pids": "/", "memory": "/process_api/35a3", "cpu": "/x", "cpuacct": "/x"])
        #expect(CgroupMembership(parsing: "0::/system.slice/kioskd.service\n").unified == "/system.slice/kioskd.service")
        #expect(cgroupDirectory("/sys/fs/cgroup/unified", "/") == "/sys/fs/cgroup/unified")
        #expect(cgroupTag("/run/kioskd") == cgroupTag("/run/kioskd") && cgroupTag("/run/kioskd") != cgroupTag("/run/kioskd2"))
        #expect(parseMemoryLimit("9223372036854771712\n") == nil && parseMemoryLimit("max\n") == nil && parseMemoryLimit("268435456\n") == 268_435_456)
        #expect(keyedValue("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill") == 3)
    }

    @Test func thisHostGivesSessionsGroupsWithTheirLimits() async throws {
        let tag = try makeTempDir("kioskd-cgroup-tag")
        defer { KioskdTestSupport.removeTree(tag) }
        let cgroups = try requireCgroups(SessionCgroups.detect(tag: tag, logger: logger))
        defer { cgroups.removeParents() }
        let group = try #require(try cgroups.create("d1", limits: SessionLimits(memoryMax: 64 << 20, pidsMax: 50)))
        #expect(group.directories.allSatisfy { access($0 + "/cgroup.procs", F_OK) == 0 })
        if cgroups.mode == .hybrid {
            let memory = try #require(group.directories.first { $0.hasPrefix("/sys/fs/cgroup/memory/") })
            #expect(try readText(memory + "/memory.limit_in_bytes") == "\(64 << 20)\n")
            if access(memory + "/memory.memsw.limit_in_bytes", F_OK) == 0 {
                #expect(try readText(memory + "/memory.memsw.limit_in_bytes") == "\(64 << 20)\n", "no swap past the limit")
            }
            // Under the test process's own v1 memory group: sessions count in the daemon's budget.
            let own = try #require(try readText("/proc/self/cgroup").split(separator: "\n").first { $0.contains(":memory:") }?.split(separator: ":").last)
            #expect(memory.hasPrefix("/sys/fs/cgroup/memory" + (own == "/" ? "" : own) + "/kioskd-"), "\(memory)")
            if let pids = group.directories.first(where: { $0.hasPrefix("/sys/fs/cgroup/pids/") }) {
                #expect(try readText(pids + "/pids.max") == "50\n")
            }
        }
        #expect(group.memory() == MemoryReading(current: 0, peak: 0, oomKills: 0))
        #expect(!group.isPopulated)
        // Display numbers are unique among live sessions: an empty group of the same name is a
        // leftover, and replaced.
        #expect(try cgroups.create("d1", limits: SessionLimits()) != nil)
        #expect(group.remove().isEmpty)
        #expect(group.directories.allSatisfy { access($0, F_OK) != 0 })
    }

    @Test func theSweepOfARestartedDaemonKillsAndRemovesALeftoverGroup() async throws {
        let tag = try makeTempDir("kioskd-cgroup-tag")
        defer { KioskdTestSupport.removeTree(tag) }
        let first = try requireCgroups(SessionCgroups.detect(tag: tag, logger: logger))
        let group = try #require(try first.create("d7", limits: SessionLimits()))
        // A process that left its session, its group and the cookie's environment: only the
        // cgroup still holds it.
        let sleeper = try await spawnEscapee(in: group)
        #expect(isMember(sleeper, of: group))

        // The daemon "restarts" with the same tag and finds its earlier run's group.
        let second = SessionCgroups.detect(tag: tag, logger: logger)
        #expect(await second.sweep() == 1)
        try await waitExited([sleeper])
        #expect(group.directories.allSatisfy { access($0, F_OK) != 0 }, "every hierarchy's directory is gone")
        // Another daemon's groups are not its business.
        let other = try makeTempDir("kioskd-cgroup-tag")
        defer { KioskdTestSupport.removeTree(other) }
        let stranger = SessionCgroups.detect(tag: other, logger: logger)
        let kept = try #require(try stranger.create("d7", limits: SessionLimits()))
        #expect(await second.sweep() == 0)
        #expect(access(kept.group, F_OK) == 0)
        kept.remove()
        stranger.removeParents()
        second.removeParents()
    }

    @Test func withoutAWritableHierarchyDetectionSaysWhy() async throws {
        let dir = try makeTempDir("kioskd-cgroup-ro")
        defer { KioskdTestSupport.removeTree(dir) }
        // A hybrid layout whose mount is read-only (root ignores file modes, not a read-only mount).
        let fs = dir + "/fs"
        for d in [fs, fs + "/unified", fs + "/memory"] { #expect(mkdir(d, 0o755) == 0) }
        for f in [fs + "/unified/cgroup.procs", fs + "/memory/cgroup.procs"] { try writeFile(f, [], mode: 0o644, owner: nil) }
        try writeFile(dir + "/cgroup", Array("4:memory:/\n0::/\n".utf8), mode: 0o644, owner: nil)
        _ = try await runTool("/usr/bin/mount", ["--bind", fs, fs])
        defer { _ = umount(fs) }
        _ = try await runTool("/usr/bin/mount", ["-o", "remount,bind,ro", fs])

        let readOnly = SessionCgroups.detect(tag: dir, logger: logger, roots: CgroupRoots(mount: fs, membership: dir + "/cgroup"))
        #expect(readOnly.mode == .unavailable(reason: "cannot create the cgroup \(fs)/unified/kioskd-\(cgroupTag(dir)): Read-only file system"))
        #expect(try readOnly.create("d1", limits: SessionLimits()) == nil)
        #expect(await readOnly.sweep() == 0)

        let none = SessionCgroups.detect(tag: dir, logger: logger, roots: CgroupRoots(mount: dir + "/nothing", membership: dir + "/cgroup"))
        #expect(none.mode == .unavailable(reason: "no cgroup v2 hierarchy: \(dir)/nothing is not a cgroup2 mount and has no unified/"))
    }
}

/// The host's cgroups, or a failure naming what the test needs.
func requireCgroups(_ cgroups: SessionCgroups) throws -> SessionCgroups {
    if case .unavailable(let why) = cgroups.mode {
        throw TestFailure("session cgroups are unavailable here (\(why)): these tests need root and a writable cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
    }
    return cgroups
}

/// Starts `sleep` in `group` the way an escaping process would: a clean environment (no cookie,
/// no session marker), a session of its own, its parent gone. Returns its pid. `setsid --wait`:
/// the spawned child already leads a session, so setsid forks, and without waiting its parent
/// would exit before the shell printed the pid.
func spawnEscapee(in group: SessionCgroup) async throws -> Int32 {
    var logger = Logger(label: "test.escapee")
    logger.logLevel = .critical
    let spec = ProcessSpec(executable: "/usr/bin/env", arguments: ["-i", "/usr/bin/setsid", "--wait", "/bin/sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"],
                           cgroups: group.directories)
    let (exit, output) = try await runProgram(spec, timeout: .seconds(10), logger: logger)
    guard exit == .exited(0), let pid = output.last.flatMap({ Int32($0) }), isAlive(pid) else {
        throw TestFailure("the escapee did not start: \(exit), \(output)")
    }
    return pid
}

/// True when every directory of the group (each hierarchy) lists `pid`.
func isMember(_ pid: Int32, of group: SessionCgroup) -> Bool {
    group.directories.allSatisfy { dir in
        ((try? readText(dir + "/cgroup.procs")) ?? "").split(separator: "\n").contains { Int32($0) == pid }
    }
}
