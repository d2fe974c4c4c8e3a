import Essentials
import Kiosk
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// `kioskd doctor`'s findings: one line per check, each ok, warn or fail, with what to do.
struct DoctorFinding: Equatable, Sendable {
    enum Level: String, Sendable { case ok, warn, fail }

    var level: Level
    var check: String
    var detail: String
    /// What to do about a warn or a fail.
    var fix: String = ""

    var line: String {
        "\(level.rawValue.padding(4)) \(check): \(detail)" + (fix.isEmpty ? "" : "\n       → \(fix)")
    }
}

/// The pure verdicts: facts in, findings out (the probes that gather the facts are `DoctorProbes`).
enum Doctor {
    /// Non-zero when any check failed.
    static func exitStatus(_ findings: [DoctorFinding]) -> Int32 {
        findings.contains { $0.level == .fail } ? 1 : 0
    }

    /// Whether the session user can make Chromium's namespaces. `sysctls`: the knobs that
    /// explain a refusal (absent ones are not reported).
    static func userNamespaces(user: String, exit: Int32?, output: [String], sysctls: [String: String]) -> DoctorFinding {
        let check = "user namespaces (Chromium's sandbox)"
        if exit == 0 { return DoctorFinding(level: .ok, check: check, detail: "\(user) can create user, pid and net namespaces") }
        var why: [String] = []
        var fixes: [String] = []
        if sysctls["kernel.apparmor_restrict_unprivileged_userns"] == "1" {
            why.append("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1, Ubuntu 24.04)")
            fixes.append("give Chromium an AppArmor profile that allows userns (/etc/apparmor.d/: `abi <abi/4.0>, profile kioskd-chromium /usr/lib/chromium/chromium flags=(unconfined) { userns, }`), or set the sysctl to 0")
        }
        if sysctls["kernel.unprivileged_userns_clone"] == "0" {
            why.append("kernel.unprivileged_userns_clone=0")
            fixes.append("sysctl -w kernel.unprivileged_userns_clone=1 (and in /etc/sysctl.d/)")
        }
        if sysctls["user.max_user_namespaces"] == "0" {
            why.append("user.max_user_namespaces=0")
            fixes.append("sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/)")
        }
        let said = output.suffix(2).joined(separator: " / ")
        return DoctorFinding(level: .fail, check: check,
                             detail: "\(user) cannot (unshare \(exit.map { "exit \($0)" } ?? "did not run")\(said.isEmpty ? "" : ": " + said))"
                                + (why.isEmpty ? "" : "; " + why.joined(separator: "; ")) + ": Chromium would say \"No usable sandbox!\"",
                             fix: fixes.isEmpty ? "allow unprivileged user namespaces for \(user), or (unsafe) sessions.sandbox: false" : fixes.joined(separator: "; "))
    }

    /// /dev/shm: Chromium shares its renderers' frames through it; below 1 GiB kioskd passes
    /// --disable-dev-shm-usage (slower, through /tmp).
    static func sharedMemory(bytes: UInt64?) -> DoctorFinding {
        let check = "/dev/shm"
        guard let bytes else { return DoctorFinding(level: .fail, check: check, detail: "not mounted", fix: "mount a tmpfs on /dev/shm") }
        let mib = bytes >> 20
        return bytes >= 1 << 30
            ? DoctorFinding(level: .ok, check: check, detail: "\(mib) MiB")
            : DoctorFinding(level: .warn, check: check, detail: "\(mib) MiB: Chromium runs with --disable-dev-shm-usage (through /tmp, slower)",
                            fix: "give /dev/shm at least 1 GiB (a container: --shm-size=1g)")
    }

    /// The sessions' loopback ports against the kernel's ephemeral range: an outgoing
    /// connection may take a port a session then cannot have.
    static func portRanges(sessions: ClosedRange<Int>, ephemeral: EphemeralPorts?) -> DoctorFinding {
        let check = "sessions.ports", shown = "\(sessions.lowerBound)-\(sessions.upperBound)"
        guard let ephemeral else { return DoctorFinding(level: .ok, check: check, detail: shown) }
        let kernel = "\(ephemeral.range.lowerBound)-\(ephemeral.range.upperBound)"
        let exposed = ephemeral.exposed(sessions)
        return exposed > 0
            ? DoctorFinding(level: .warn, check: check,
                            detail: "\(exposed) of \(shown) are ephemeral ports (\(kernel), less the reserved): outgoing connections take some of them",
                            fix: "choose sessions.ports outside net.ipv4.ip_local_port_range, or reserve them (net.ipv4.ip_local_reserved_ports)")
            : DoctorFinding(level: .ok, check: check, detail: "\(shown), outside the ephemeral ports \(kernel) or reserved")
    }

    /// The cgroup layout seen from the outside: `unitControllers` is what the running unit's
    /// subtree got (nil: no kioskd.service group), `sessionsControllers` what kioskd enabled
    /// for its sessions there (nil: it has not set them up).
    static func cgroups(pureV2: Bool, hybrid: Bool, hostControllers: Set<String>, unitControllers: Set<String>?, sessionsControllers: Set<String>?) -> DoctorFinding {
        let check = "cgroups"
        let wanted: Set<String> = ["memory", "pids"]
        func list(_ s: Set<String>) -> String { s.isEmpty ? "none" : s.sorted().joined(separator: " ") }
        if pureV2 {
            if let sessions = sessionsControllers {
                let missing = wanted.subtracting(sessions)
                return missing.isEmpty
                    ? DoctorFinding(level: .ok, check: check, detail: "cgroup v2, kioskd.service delegated; sessions' groups get \(list(sessions))")
                    : DoctorFinding(level: .warn, check: check, detail: "cgroup v2, kioskd.service delegated, but the sessions' groups lack \(list(missing)) (they get \(list(sessions)))",
                                    fix: "enable the controllers for system.slice (systemd does when a unit asks for them: Delegate=yes)")
            }
            if let unit = unitControllers {
                return DoctorFinding(level: .warn, check: check, detail: "cgroup v2, kioskd.service's group has \(list(unit)), but kioskd has made no sessions group in it",
                                     fix: "run kioskd under the packaged unit (Delegate=yes); `journalctl -u kioskd` says why if it ran")
            }
            let missing = wanted.subtracting(hostControllers)
            return DoctorFinding(level: missing.isEmpty ? .ok : .warn, check: check,
                                 detail: "cgroup v2 with \(list(hostControllers))" + (missing.isEmpty ? "; kioskd.service is not running, so no delegation to check" : "; missing \(list(missing))"),
                                 fix: missing.isEmpty ? "" : "boot with the memory and pids controllers (cgroup_enable=memory)")
        }
        if hybrid {
            return DoctorFinding(level: .warn, check: check, detail: "hybrid layout (cgroup v1 controllers, v2 without them): sessions get memory limits under kioskd's own v1 memory group, no memory.high",
                                 fix: "boot with systemd.unified_cgroup_hierarchy=1 for pure cgroup v2")
        }
        return DoctorFinding(level: .warn, check: check, detail: "no cgroup v2 hierarchy: sessions run without memory limits of their own",
                             fix: "mount cgroup2 on /sys/fs/cgroup (any systemd host does)")
    }
}
