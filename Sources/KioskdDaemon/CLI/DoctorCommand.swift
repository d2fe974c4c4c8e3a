import ArgumentParser
import Essentials
import Kiosk
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// `kioskd doctor`: checks the host the way an operator needs before the first task.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check this host for kioskd: sandbox, cgroups, /dev/shm, programs, fonts, policies, ports, directories. Exit 1 on a fail.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load(currentEnvironment())
        var logger = Logger(label: "kioskd.doctor")
        logger.logLevel = .critical
        let findings = await DoctorProbes(config: config, logger: logger).all()
        for finding in findings { print(finding.line) }
        let failed = findings.filter { $0.level == .fail }.count, warned = findings.filter { $0.level == .warn }.count
        print("\(findings.count) checks: \(failed) failed, \(warned) warnings")
        if Doctor.exitStatus(findings) != 0 { throw ExitCode.failure }
    }
}

/// Gathers the facts for `Doctor` from this host.
struct DoctorProbes {
    let config: Config
    let logger: Logger

    func all() async -> [DoctorFinding] {
        var out = [await userNamespaces(), cgroups(), Doctor.sharedMemory(bytes: filesystemSize("/dev/shm")), programs(), fonts(), policies()]
        out.append(Doctor.portRanges(sessions: config.sessions.ports, ephemeral: .current()))
        out.append(publicPort())
        out += directories()
        out.append(socketPaths())
        return out
    }

    /// As the session user: who kioskd runs sessions as (sessions.user when it is root, else itself).
    func userNamespaces() async -> DoctorFinding {
        var credentials: Credentials?
        var name = String(cString: getpwuid(geteuid())?.pointee.pw_name ?? strdup("uid \(geteuid())"))
        if geteuid() == 0 {
            do {
                credentials = try Credentials.lookup(user: config.sessions.user)
                name = config.sessions.user
            } catch {
                return DoctorFinding(level: .fail, check: "user namespaces (Chromium's sandbox)", detail: "\(error)",
                                     fix: "create the session user (the package's sysusers.d entry does: systemd-sysusers)")
            }
        }
        var exit: Int32?
        var output: [String] = []
        do {
            let spec = ProcessSpec(executable: "/usr/bin/unshare", arguments: ["--user", "--map-root-user", "--pid", "--net", "--fork", "/bin/true"],
                                   credentials: credentials, outputLevel: .debug)
            let result = try await runProgram(spec, timeout: .seconds(10), logger: logger)
            if case .exited(let status) = result.exit { exit = status }
            output = result.output
        } catch {
            output = ["\(error)"]
        }
        var sysctls: [String: String] = [:]
        for (key, path) in [("kernel.apparmor_restrict_unprivileged_userns", "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
                            ("kernel.unprivileged_userns_clone", "/proc/sys/kernel/unprivileged_userns_clone"),
                            ("user.max_user_namespaces", "/proc/sys/user/max_user_namespaces")] {
            if let value = readSmallFile(path) { sysctls[key] = value.filter { !$0.isWhitespace } }
        }
        if !config.sessions.sandbox {
            return DoctorFinding(level: .warn, check: "user namespaces (Chromium's sandbox)", detail: "sessions.sandbox is false: Chromium runs with --no-sandbox",
                                 fix: "turn the sandbox on (sessions.sandbox: true) once this check passes")
        }
        return Doctor.userNamespaces(user: name, exit: exit, output: output, sysctls: sysctls)
    }

    func cgroups() -> DoctorFinding {
        let mount = "/sys/fs/cgroup", unit = mount + "/system.slice/kioskd.service"
        func controllers(_ file: String) -> Set<String>? {
            readSmallFile(file).map { Set($0.split(whereSeparator: \.isWhitespace).map(String.init)) }
        }
        return Doctor.cgroups(pureV2: access(mount + "/cgroup.controllers", F_OK) == 0,
                              hybrid: access(mount + "/unified/cgroup.procs", F_OK) == 0,
                              hostControllers: controllers(mount + "/cgroup.controllers") ?? [],
                              unitControllers: controllers(unit + "/cgroup.controllers"),
                              sessionsControllers: controllers(unit + "/sessions/cgroup.subtree_control"))
    }

    func programs() -> DoctorFinding {
        var wanted = [Xvfb.executable, Openbox.executable, X11VNC.executable, config.sessions.browser, "/usr/bin/unshare"]
        if config.sessions.bridge == .websockify { wanted.append(Websockify.executable) }
        if config.sessions.portGuard != .off { wanted.append(PortGuard.executable) }
        let missing = wanted.filter { access($0, X_OK) != 0 }
        return missing.isEmpty
            ? DoctorFinding(level: .ok, check: "session programs", detail: wanted.joined(separator: " "))
            : DoctorFinding(level: .fail, check: "session programs", detail: "missing: \(missing.joined(separator: " "))",
                            fix: "apt install xvfb openbox x11vnc chromium nftables util-linux (the package depends on them)")
    }

    func fonts() -> DoctorFinding {
        let count = countFonts("/usr/share/fonts", depth: 4)
        return count > 0
            ? DoctorFinding(level: .ok, check: "fonts", detail: "\(count) font files under /usr/share/fonts")
            : DoctorFinding(level: .fail, check: "fonts", detail: "no font files under /usr/share/fonts: pages render no text", fix: "apt install fonts-dejavu-core")
    }

    private func countFonts(_ dir: String, depth: Int) -> Int {
        guard depth > 0 else { return 0 }
        return directoryEntries(dir).reduce(0) { n, name in
            let path = dir + "/" + name
            if [".ttf", ".otf", ".pfb", ".ttc"].contains(where: { name.lowercased().hasSuffix($0) }) { return n + 1 }
            return n + countFonts(path, depth: depth - 1)
        }
    }

    /// Chromium reads managed policies from /etc/chromium (Debian's build) or /etc/opt/chrome
    /// (Google's); root-owned and not writable by others, or the session user could change them.
    func policies() -> DoctorFinding {
        let dir = config.sessions.browser.hasPrefix("/opt/google/chrome") ? "/etc/opt/chrome/policies/managed" : "/etc/chromium/policies/managed"
        let file = dir + "/kioskd.json"
        var st = stat()
        guard stat(file, &st) == 0 else {
            return DoctorFinding(level: .fail, check: "Chromium policies", detail: "\(file) is missing: the kiosk is not locked down (chrome://, file://, downloads …)",
                                 fix: "install the package (it ships the file), or: install -m 0644 config/chromium-policies/kioskd.json \(file)")
        }
        guard st.st_uid == 0, st.st_mode & 0o022 == 0 else {
            return DoctorFinding(level: .fail, check: "Chromium policies", detail: "\(file) is not root-owned or is writable by others",
                                 fix: "chown root:root \(file); chmod 0644 \(file)")
        }
        return DoctorFinding(level: .ok, check: "Chromium policies", detail: "\(file) (where \(config.sessions.browser) reads them)")
    }

    func publicPort() -> DoctorFinding {
        let listen = config.publicListener.listen
        let check = "public.listen \(listen)"
        switch tryBind(host: listen.host, port: listen.port) {
        case 0:
            return DoctorFinding(level: .ok, check: check, detail: "free")
        case EADDRINUSE where controlSocketAnswers():
            return DoctorFinding(level: .ok, check: check, detail: "held by the running kioskd")
        case EADDRINUSE:
            return DoctorFinding(level: .fail, check: check, detail: "in use by another program", fix: "free the port, or change public.listen")
        case let error:
            return DoctorFinding(level: .fail, check: check, detail: "cannot bind: \(String(cString: strerror(error)))", fix: "change public.listen")
        }
    }

    func directories() -> [DoctorFinding] {
        [("runtime.dir", config.runtime.dir), ("state.dir", config.state.dir)].map { key, path in
            var st = stat()
            if stat(path, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFDIR else {
                    return DoctorFinding(level: .fail, check: key, detail: "\(path) is not a directory", fix: "remove it, or change \(key)")
                }
                let owner = getpwuid(st.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(st.st_uid)"
                return DoctorFinding(level: .ok, check: key, detail: "\(path) (\(owner), \(String(st.st_mode & 0o7777, radix: 8)))")
            }
            let parent = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            return access(parent.isEmpty ? "/" : parent, F_OK) == 0
                ? DoctorFinding(level: .ok, check: key, detail: "\(path) is made at start (the unit's RuntimeDirectory=/StateDirectory=)")
                : DoctorFinding(level: .warn, check: key, detail: "neither \(path) nor its parent exists", fix: "check \(key)")
        }
    }

    /// The loader already refuses a runtime.dir that is too long: this says how much room is left.
    func socketPaths() -> DoctorFinding {
        let longest = SessionLayout.directory(sessionsDir: config.runtime.dir + "/sessions", display: config.sessions.displays.upperBound)
        let length = SessionLayout.longestSocketPath(directoryLength: longest.utf8.count)
        return DoctorFinding(level: .ok, check: "socket paths", detail: "the longest under runtime.dir is \(length) of \(SessionLayout.maxSocketPath) bytes")
    }

    private func filesystemSize(_ path: String) -> UInt64? {
        var vfs = statvfs()
        guard statvfs(path, &vfs) == 0 else { return nil }
        return UInt64(vfs.f_blocks) * UInt64(vfs.f_frsize)
    }

    private func controlSocketAnswers() -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        return withUnixSocketAddress(config.control.socket) { connect(fd, $0, $1) } == 0
    }

    /// 0, or the errno of a bind to host:port (IPv4 or IPv6 literal, or a name bound as any).
    private func tryBind(host: String, port: Int) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { return EADDRNOTAVAIL }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 ? 0 : errno
    }
}

/// `kioskd port-guard install|remove`: the port guard's nftables table for a kioskd that has
/// no CAP_NET_ADMIN (sessions.port_guard: external), run as root around it (the packaged unit's
/// ExecStartPre=+ and ExecStopPost=+). The daemon's user is sessions.user (the unit's User=).
struct PortGuardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "port-guard",
        abstract: "Install or remove the sessions' port guard for a kioskd without CAP_NET_ADMIN (sessions.port_guard: external).")

    enum Action: String, ExpressibleByArgument, CaseIterable { case install, remove }

    @Argument(help: "install or remove") var action: Action
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load(currentEnvironment())
        guard config.sessions.portGuard == .external else {
            print("sessions.port_guard is \(config.sessions.portGuard.rendered): nothing for `kioskd port-guard` to do")
            return
        }
        var logger = Logger(label: "kioskd.port-guard")
        logger.logLevel = .warning
        let guardSpec = SessionsChild.portGuard(config)
        switch action {
        case .install:
            let daemon: Credentials
            do {
                daemon = try Credentials.lookup(user: config.sessions.user)
            } catch {
                printError("kioskd: sessions.user: \(error)")
                throw ExitCode(exitConfigError)
            }
            let path = "/run/kioskd-port-guard.nft"
            try writeFile(path, Array(guardSpec.ruleset(daemonUID: daemon.uid).utf8), mode: 0o600, owner: nil)
            defer { unlink(path) }
            try await nft(["-f", path], logger: logger)
            print("port guard \(guardSpec.table) installed: ports \(config.sessions.ports.rendered) refuse all but root, \(config.sessions.user) and sessions.cdp.allow_*")
        case .remove:
            // Already gone (a stop after a failed start) is what was asked for.
            let listed = try await runProgram(ProcessSpec(executable: PortGuard.executable, arguments: ["list", "table", "inet", guardSpec.table], outputLevel: .debug),
                                              timeout: .seconds(10), logger: logger)
            guard listed.exit == .exited(0) else { return print("port guard \(guardSpec.table) is not installed") }
            try await nft(["delete", "table", "inet", guardSpec.table], logger: logger)
            print("port guard \(guardSpec.table) removed")
        }
    }

    private func nft(_ arguments: [String], logger: Logger) async throws {
        let (exit, output) = try await runProgram(ProcessSpec(executable: PortGuard.executable, arguments: arguments, outputLevel: .debug),
                                                  timeout: .seconds(10), logger: logger)
        guard exit == .exited(0) else {
            printError("kioskd: nft \(arguments.joined(separator: " ")): \(exit): \(output.suffix(3).joined(separator: " / "))")
            throw ExitCode.failure
        }
    }
}
