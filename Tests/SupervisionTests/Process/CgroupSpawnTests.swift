import CSupport
import Essentials
import KioskdTestSupport
import Logging
import Testing
@testable import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Placement at spawn: a child is in its cgroups from its first instruction after exec.
/// Needs root and the v2 hierarchy this host mounts at /sys/fs/cgroup/unified (or a pure v2
/// /sys/fs/cgroup); fails naming what is missing.
@Suite("Cgroups at spawn", .serialized)
struct CgroupSpawnTests {
    let logger = Logger(label: "test")

    /// A fresh v2 group beside the test process's own, removed by the caller.
    func makeGroup() throws -> (directory: String, path: String) {
        let membership = try readText("/proc/self/cgroup")
        guard let own = membership.split(separator: "\n").first(where: { $0.hasPrefix("0::") }).map({ String($0.dropFirst(3)) }) else {
            throw TestFailure("/proc/self/cgroup has no cgroup v2 line")
        }
        let mount = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified"
        guard access(mount + "/cgroup.procs", F_OK) == 0 else {
            throw TestFailure("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: these tests need one")
        }
        let path = (own == "/" ? "" : own) + "/kioskd-spawn-test-" + randomHex(4)
        guard mkdir(mount + path, 0o755) == 0 else {
            throw TestFailure("cannot create the cgroup \(mount + path) (errno \(errno)): these tests need root and a writable cgroup v2 hierarchy")
        }
        return (mount + path, path)
    }

    @Test func aChildIsInItsCgroupFromItsFirstInstruction() async throws {
        let group = try makeGroup()
        defer { rmdir(group.directory) }
        // cat reads its own membership as its first act, and as the session user: the join
        // happened before exec and before the id change.
        let spec = ProcessSpec(executable: "/bin/cat", arguments: ["/proc/self/cgroup"], credentials: try Credentials.lookup(user: sessionUserName),
                               cgroups: [group.directory])
        let (exit, output) = try await runProgram(spec, timeout: .seconds(10), logger: logger)
        #expect(exit == .exited(0))
        #expect(output.contains("0::" + group.path), "\(output)")
        #expect(try readText(group.directory + "/cgroup.procs").isEmpty, "cat has exited, so the group is empty again")
    }

    @Test func aCgroupThatCannotBeOpenedFailsTheSpawnNamingIt() async throws {
        let spec = ProcessSpec(executable: "/bin/true", cgroups: ["/sys/fs/cgroup/unified/kioskd-no-such-group"])
        let error = try await #require(throws: SpawnError.self) { try await runProgram(spec, timeout: .seconds(10), logger: logger) }
        #expect(error.stage == Int32(KSUP_STAGE_CGROUP))
        #expect(error.description == "cannot join the cgroup /sys/fs/cgroup/unified/kioskd-no-such-group for /bin/true: No such file or directory")
    }

    @Test func aJoinThatFailsInTheChildFailsTheSpawnNamingTheStage() async throws {
        // cgroup.procs opens, but the child's write fails (ENOSPC): reported through the error
        // pipe, not as an exec failure.
        let dir = try makeTempDir("kioskd-cgroup-full")
        defer { removeTree(dir) }
        #expect(symlink("/dev/full", dir + "/cgroup.procs") == 0)
        let spec = ProcessSpec(executable: "/bin/true", cgroups: [dir])
        let error = try await #require(throws: SpawnError.self) { try await runProgram(spec, timeout: .seconds(10), logger: logger) }
        #expect(error.stage == Int32(KSUP_STAGE_CGROUP))
        #expect(error.description == "cannot join the cgroup \(dir) for /bin/true: No space left on device")
    }
}
