import Essentials
import KioskdTestSupport
import Testing
@testable import KioskdDaemon

#if canImport(Glibc)
import Glibc
#endif

@Suite("kioskd doctor")
struct DoctorTests {
    @Test func aRefusedUserNamespaceSaysWhyAndWhatToDo() {
        let ubuntu = Doctor.userNamespaces(user: "kioskd", exit: 1, output: ["unshare: unshare failed: Operation not permitted"],
                                           sysctls: ["kernel.apparmor_restrict_unprivileged_userns": "1", "user.max_user_namespaces": "63000"])
        #expect(ubuntu.level == .fail)
        #expect(ubuntu.detail.contains("AppArmor") && ubuntu.detail.contains("No usable sandbox!") && ubuntu.detail.contains("Operation not permitted"))
        #expect(ubuntu.fix.contains("userns") && !ubuntu.fix.contains("max_user_namespaces"))
        let disabled = Doctor.userNamespaces(user: "kioskd", exit: 1, output: [], sysctls: ["user.max_user_namespaces": "0"])
        #expect(disabled.fix.contains("user.max_user_namespaces=15000"))
        let unknown = Doctor.userNamespaces(user: "kioskd", exit: nil, output: [], sysctls: [:])
        #expect(unknown.level == .fail && unknown.fix.contains("sessions.sandbox: false"))
        #expect(Doctor.userNamespaces(user: "kioskd", exit: 0, output: [], sysctls: [:]).level == .ok)
    }

    @Test func smallSharedMemoryWarnsAndNoneFails() {
        #expect(Doctor.sharedMemory(bytes: 2 << 30).level == .ok)
        let small = Doctor.sharedMemory(bytes: 64 << 20)
        #expect(small.level == .warn && small.detail.hasPrefix("64 MiB") && small.fix.contains("--shm-size"))
        #expect(Doctor.sharedMemory(bytes: nil).level == .fail)
    }

    @Test func sessionPortsInsideTheEphemeralRangeWarn() {
        let linux = EphemeralPorts(range: "32768\t60999\n")
        #expect(Doctor.portRanges(sessions: 20000...29999, ephemeral: linux).level == .ok)
        let overlap = Doctor.portRanges(sessions: 30000...39999, ephemeral: linux)
        #expect(overlap.level == .warn && overlap.fix.contains("ip_local_reserved_ports") && overlap.detail.hasPrefix("7232 of 30000-39999"), "\(overlap)")
        let reserved = EphemeralPorts(range: "32768 60999", reserved: "32768-39999,45000\n")
        #expect(Doctor.portRanges(sessions: 30000...39999, ephemeral: reserved).level == .ok, "reserved ports are no connection's")
        #expect(reserved?.exposed(44000...45999) == 1999)
        #expect(Doctor.portRanges(sessions: 30000...39999, ephemeral: nil).level == .ok)
        #expect(EphemeralPorts(range: "60999 32768") == nil && EphemeralPorts(range: "") == nil)
    }

    @Test func cgroupVerdictsFollowTheLayoutAndTheDelegation() {
        let delegated = Doctor.cgroups(pureV2: true, hybrid: false, hostControllers: ["cpu", "memory", "pids"],
                                       unitControllers: ["memory", "pids"], sessionsControllers: ["memory", "pids"])
        #expect(delegated.level == .ok && delegated.detail.contains("memory pids"))
        let noMemory = Doctor.cgroups(pureV2: true, hybrid: false, hostControllers: ["pids"], unitControllers: ["pids"], sessionsControllers: ["pids"])
        #expect(noMemory.level == .warn && noMemory.detail.contains("lack memory"))
        let notSetUp = Doctor.cgroups(pureV2: true, hybrid: false, hostControllers: ["memory", "pids"], unitControllers: ["memory"], sessionsControllers: nil)
        #expect(notSetUp.level == .warn && notSetUp.fix.contains("Delegate=yes"))
        #expect(Doctor.cgroups(pureV2: true, hybrid: false, hostControllers: ["memory", "pids"], unitControllers: nil, sessionsControllers: nil).level == .ok)
        #expect(Doctor.cgroups(pureV2: false, hybrid: true, hostControllers: [], unitControllers: nil, sessionsControllers: nil).level == .warn)
        #expect(Doctor.cgroups(pureV2: false, hybrid: false, hostControllers: [], unitControllers: nil, sessionsControllers: nil).detail.contains("no cgroup v2"))
    }

    @Test func anyFailMakesTheExitNonZero() {
        let ok = DoctorFinding(level: .ok, check: "a", detail: "fine"), warn = DoctorFinding(level: .warn, check: "b", detail: "hm", fix: "x")
        #expect(Doctor.exitStatus([ok, warn]) == 0)
        #expect(Doctor.exitStatus([ok, DoctorFinding(level: .fail, check: "c", detail: "broken", fix: "y")]) == 1)
        #expect(warn.line == "warn b: hm\n       → x")
    }

    @Test func portGuardTakesTrueFalseOrExternal() throws {
        #expect(try ConfigSchema.portGuardMode("true") == .on && ConfigSchema.portGuardMode("no") == .off && ConfigSchema.portGuardMode("external") == .external)
        #expect(throws: ValueError(message: "must be true, false or external, got \"maybe\"")) { try ConfigSchema.portGuardMode("maybe") }
        #expect(PortGuardMode.external.rendered == "external" && PortGuardMode.on.rendered == "true")
    }

    /// The real command on this host (as root: the session user's namespaces), against a config
    /// whose directories and port are its own: every check runs and prints its line; this host
    /// has what setup.sh installs, so nothing fails.
    @Test func doctorRunsForRealAndPassesHere() async throws {
        let kioskd = try builtProduct("kioskd")
        let dir = try makeTempDir("kioskd-doctor")
        defer { removeTree(dir) }
        let output = dir + "/out", port = try freePort()
        let status = try await runToExit(kioskd, ["doctor"], environment: [
            "KIOSKD_RUNTIME_DIR": dir + "/run", "KIOSKD_STATE_DIR": dir + "/state", "KIOSKD_CONTROL_SOCKET": dir + "/run/control.sock",
            "KIOSKD_PUBLIC_LISTEN": "127.0.0.1:\(port)", "PATH": "/usr/bin:/bin",
        ], timeout: .seconds(60), output: output)
        let text = readSmallFile(output) ?? ""
        #expect(status == 0, "\(text)")
        for check in ["user namespaces (Chromium's sandbox)", "cgroups", "/dev/shm", "session programs", "fonts", "Chromium policies",
                      "sessions.ports", "public.listen 127.0.0.1:\(port)", "runtime.dir", "state.dir", "socket paths"] {
            #expect(text.contains("ok   \(check)") || text.contains("warn \(check)"), "\(check) missing or failed in:\n\(text)")
        }
    }
}
