import Essentials
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// What one session may use. nil: no limit of its own (kioskd's own group still bounds it).
public struct SessionLimits: Sendable, Equatable {
    /// The hard limit: at it the kernel OOM-kills inside the session's group only.
    public var memoryMax: UInt64?
    /// Where the kernel starts reclaiming and throttling the session (v2 memory.high). v1 has
    /// no equivalent (its soft limit acts only under host-wide pressure and is deprecated), so
    /// on a hybrid host this is not applied.
    public var memoryHigh: UInt64?
    public var pidsMax: Int?

    public init(memoryMax: UInt64? = nil, memoryHigh: UInt64? = nil, pidsMax: Int? = nil) {
        self.memoryMax = memoryMax
        self.memoryHigh = memoryHigh
        self.pidsMax = pidsMax
    }
}

/// Where the cgroup filesystems and this process's membership are: the real ones by default,
/// others in tests.
public struct CgroupRoots: Sendable {
    /// /sys/fs/cgroup: a cgroup2 mount itself (pure v2), or a tmpfs holding `unified` and the
    /// v1 controllers (hybrid).
    public var mount: String
    /// /proc/self/cgroup.
    public var membership: String

    public init(mount: String, membership: String) {
        self.mount = mount
        self.membership = membership
    }

    public static let system = CgroupRoots(mount: "/sys/fs/cgroup", membership: "/proc/self/cgroup")
}

/// The host's parent of every session cgroup, detected once at start. Sessions' groups are
/// `<parent>/<name>`; the parent is this daemon's alone (named by a tag), so two daemons never
/// sweep each other's sessions and a restarted daemon sweeps its earlier run's.
public struct SessionCgroups: Sendable {
    public enum Mode: Sendable, Equatable {
        /// Pure cgroup v2 with a delegated subtree (`Delegate=yes`): everything in one group.
        case unified
        /// v2 for membership, cgroup.kill, cgroup.events and PSI; memory (and pids) on v1.
        case hybrid
        /// Sessions run without cgroups, as before; memory is read from /proc.
        case unavailable(reason: String)
    }

    enum Layout: Sendable {
        case unified(parent: String, controllers: Set<String>)
        case hybrid(parent: String, memory: String, pids: String?)
        case unavailable(String)
    }

    let layout: Layout
    /// kioskd's own memory group and its ancestors, with the file that holds each one's limit.
    let limitChain: (directories: [String], file: String)?

    public var mode: Mode {
        switch layout {
        case .unified: .unified
        case .hybrid: .hybrid
        case .unavailable(let why): .unavailable(reason: why)
        }
    }

    /// kioskd's own limit (v2 memory.max, v1 memory.limit_in_bytes), the smallest over its
    /// group and the groups above it; nil when none is set or it cannot be read.
    public var ownMemoryLimit: UInt64? {
        guard let chain = limitChain else { return nil }
        return chain.directories.compactMap { parseMemoryLimit(readSmallFile($0 + "/" + chain.file)) }.min()
    }

    /// Bounds all sessions together: their parent's memory limit becomes the budget, so however
    /// they grow after admission, the kernel reclaims and kills inside the sessions, never the
    /// daemon or the rest of the host. Where memory is not delegated, nothing to set.
    public func limitSessions(to budget: UInt64) throws(FileError) {
        // No budget (a misconfiguration the daemon reports) refuses every task instead.
        guard budget > 0 else { return }
        switch layout {
        case .unified(let parent, let controllers) where controllers.contains("memory"):
            try writeCgroupFile(parent + "/memory.max", "\(budget)")
            if exists(parent + "/memory.swap.max") { try writeCgroupFile(parent + "/memory.swap.max", "0") }
        case .hybrid(_, let memory, _):
            try writeCgroupFile(memory + "/memory.limit_in_bytes", "\(budget)")
            for (file, value) in Self.noSwapPast(budget, in: memory) { try writeCgroupFile(file, value) }
        default:
            break
        }
    }

    /// A browser that swaps is a host that crawls (the seed's t3.medium has 2 GB of swap): at
    /// its limit a group is reclaimed and then killed inside, never pushed to swap. v1 counts
    /// memory and swap together in memsw (present only with swap accounting on), after the
    /// memory limit it may not be below; v2 has memory.swap.max (0: none).
    static func noSwapPast(_ limit: UInt64, in dir: String) -> [(String, String)] {
        exists(dir + "/memory.memsw.limit_in_bytes") ? [(dir + "/memory.memsw.limit_in_bytes", "\(limit)")] : []
    }

    /// Finds the host's layout and prepares this daemon's parent group. `tag` keeps daemons
    /// apart and must be the same across restarts of one daemon (its runtime directory).
    public static func detect(tag: String, logger: Logger, roots: CgroupRoots = .system) -> SessionCgroups {
        let membership = CgroupMembership(parsing: readSmallFile(roots.membership) ?? "")
        let name = "kioskd-" + cgroupTag(tag)
        let mount = roots.mount
        if exists(mount + "/cgroup.controllers") {
            guard let own = membership.unified else {
                return SessionCgroups(layout: .unavailable("\(roots.membership) has no cgroup v2 (0::) line"), limitChain: nil)
            }
            let base = leafParent(cgroupDirectory(mount, own))
            let chain = (ancestors(of: base, upTo: mount), "memory.max")
            do {
                let (parent, controllers) = try prepareUnified(base: base, name: name, logger: logger)
                return SessionCgroups(layout: .unified(parent: parent, controllers: controllers), limitChain: chain)
            } catch {
                return SessionCgroups(layout: .unavailable("cgroup v2 at \(mount): \(error)"), limitChain: chain)
            }
        }
        let v2 = mount + "/unified", v1Memory = mount + "/memory", v1Pids = mount + "/pids"
        guard exists(v2 + "/cgroup.procs") else {
            return SessionCgroups(layout: .unavailable("no cgroup v2 hierarchy: \(mount) is not a cgroup2 mount and has no unified/"), limitChain: nil)
        }
        guard exists(v1Memory + "/cgroup.procs"), let memoryOwn = membership.v1["memory"], let own = membership.unified else {
            return SessionCgroups(layout: .unavailable("a hybrid host without a v1 memory controller at \(v1Memory) (or no memory/0:: line in \(roots.membership))"),
                                  limitChain: nil)
        }
        let memoryBase = cgroupDirectory(v1Memory, memoryOwn)
        let chain = (ancestors(of: memoryBase, upTo: v1Memory), "memory.limit_in_bytes")
        // Under kioskd's own v1 memory group: its sessions count in its budget.
        let parent = cgroupDirectory(v2, own) + "/" + name, memory = memoryBase + "/" + name
        do {
            try makeGroup(parent, existing: true)
            try makeGroup(memory, existing: true)
        } catch {
            rmdir(parent)
            return SessionCgroups(layout: .unavailable("\(error)"), limitChain: chain)
        }
        var pids: String?
        if exists(v1Pids + "/cgroup.procs"), let pidsOwn = membership.v1["pids"] {
            let dir = cgroupDirectory(v1Pids, pidsOwn) + "/" + name
            do {
                try makeGroup(dir, existing: true)
                pids = dir
            } catch {
                logger.notice("sessions get no pids limit: \(error)")
            }
        }
        return SessionCgroups(layout: .hybrid(parent: parent, memory: memory, pids: pids), limitChain: chain)
    }

    /// Makes the session's group, with its limits. nil when cgroups are unavailable. A failure
    /// leaves nothing behind.
    public func create(_ name: String, limits: SessionLimits) throws -> SessionCgroup? {
        guard let group = handle(name) else { return nil }
        var made: [String] = []
        do {
            for dir in group.directories {
                try Self.makeGroup(dir, existing: false)
                made.append(dir)
            }
            for (file, value) in try limitFiles(limits, group: group) {
                try writeCgroupFile(file, value)
            }
        } catch {
            for dir in made.reversed() { rmdir(dir) }
            throw error
        }
        return group
    }

    /// The control files that carry `limits` in this layout.
    private func limitFiles(_ limits: SessionLimits, group: SessionCgroup) throws(SessionError) -> [(String, String)] {
        var files: [(String, String)] = []
        switch layout {
        case .unavailable:
            break
        case .unified(_, let controllers):
            let dir = group.group
            for (controller, file, value) in [("memory", "memory.max", limits.memoryMax.map(String.init)),
                                              ("memory", "memory.high", limits.memoryHigh.map(String.init)),
                                              ("memory", "memory.swap.max", limits.memoryMax.map { _ in "0" }),
                                              ("pids", "pids.max", limits.pidsMax.map(String.init))] {
                // Not delegated (said once at start): the session runs without that limit.
                guard let value, controllers.contains(controller), exists(dir + "/" + file) || file != "memory.swap.max" else { continue }
                files.append((dir + "/" + file, value))
            }
        case .hybrid(_, let memory, let pids):
            let name = String(group.group.split(separator: "/").last ?? "")
            if let max = limits.memoryMax {
                files.append((memory + "/" + name + "/memory.limit_in_bytes", "\(max)"))
                files += Self.noSwapPast(max, in: memory + "/" + name)
            }
            if let n = limits.pidsMax {
                guard let pids else { throw .setup("pids.max asked, but the v1 pids controller is not mounted or not writable") }
                files.append((pids + "/" + name + "/pids.max", "\(n)"))
            }
        }
        return files
    }

    /// Kills and removes every group an earlier run of this daemon left (it was SIGKILLed or
    /// lost power). Returns how many.
    public func sweep() async -> Int {
        var swept = 0
        for name in groupNames() {
            guard let group = handle(name) else { continue }
            if group.isPopulated { group.kill() }
            _ = await group.waitEmpty(timeout: .seconds(5))
            group.remove()
            swept += 1
        }
        return swept
    }

    /// Removes this daemon's parent groups once no session is left (a clean stop): the host
    /// keeps nothing of a daemon that is gone.
    public func removeParents() {
        switch layout {
        case .unavailable: break
        case .unified(let parent, _): rmdir(parent)
        case .hybrid(let parent, let memory, let pids):
            for dir in [parent, memory] + (pids.map { [$0] } ?? []) { rmdir(dir) }
        }
    }

    /// The session groups present under the parents (of any hierarchy).
    private func groupNames() -> Set<String> {
        let parents: [String] = switch layout {
        case .unavailable: []
        case .unified(let parent, _): [parent]
        case .hybrid(let parent, let memory, let pids): [parent, memory] + (pids.map { [$0] } ?? [])
        }
        return Set(parents.flatMap { parent in directoryEntries(parent).filter { isDirectory(parent + "/" + $0) } })
    }

    /// A group by name, without making anything.
    private func handle(_ name: String) -> SessionCgroup? {
        switch layout {
        case .unavailable: nil
        case .unified(let parent, _): SessionCgroup(group: parent + "/" + name, twins: [], accounting: .v2(parent + "/" + name))
        case .hybrid(let parent, let memory, let pids):
            SessionCgroup(group: parent + "/" + name, twins: [memory + "/" + name] + (pids.map { [$0 + "/" + name] } ?? []),
                          accounting: .v1(memory + "/" + name))
        }
    }

    // MARK: - Detection steps

    /// Pure v2: kioskd moves every process of its own group into `<own>/daemon` (a group with
    /// processes cannot give controllers to children: EBUSY), then enables memory, pids and
    /// cpu (those delegated) for `<own>/sessions` and this daemon's parent below it.
    private static func prepareUnified(base: String, name: String, logger: Logger) throws -> (String, Set<String>) {
        let leaf = base + "/daemon"
        try makeGroup(leaf, existing: true)
        for pid in (readSmallFile(base + "/cgroup.procs") ?? "").split(separator: "\n") {
            // A process that exited meanwhile is no longer in the way.
            if let failure = moveFailure(pid: String(pid), to: leaf), failure.errno != ESRCH { throw failure }
        }
        let sessions = base + "/sessions", parent = sessions + "/" + name
        let available = Set((readSmallFile(base + "/cgroup.controllers") ?? "").split(whereSeparator: \.isWhitespace).map(String.init))
        var enabled = available.intersection(["memory", "pids", "cpu"])
        for controller in ["memory", "pids"] where !available.contains(controller) {
            logger.notice("sessions get no \(controller) controller: kioskd's cgroup does not have it", metadata: ["cgroup": "\(base)"])
        }
        try makeGroup(sessions, existing: true)
        try makeGroup(parent, existing: true)
        for dir in [base, sessions, parent] {
            for controller in enabled.sorted() {
                do {
                    try writeCgroupFile(dir + "/cgroup.subtree_control", "+" + controller)
                } catch {
                    // cpu refuses while a process has realtime threads: sessions do without it.
                    logger.notice("sessions get no \(controller) controller: \(error)")
                    enabled.remove(controller)
                }
            }
        }
        return (parent, enabled)
    }

    private static func moveFailure(pid: String, to group: String) -> FileError? {
        do {
            try writeCgroupFile(group + "/cgroup.procs", pid)
            return nil
        } catch {
            return error
        }
    }

    /// A daemon restarted in-process (tests) already sits in its leaf: its group is the parent.
    private static func leafParent(_ dir: String) -> String {
        dir.hasSuffix("/daemon") ? String(dir.dropLast("/daemon".count)) : dir
    }

    /// `dir` and each directory above it, down to `mount` included.
    private static func ancestors(of dir: String, upTo mount: String) -> [String] {
        var out = [dir], d = dir
        while d.count > mount.count, let slash = d.lastIndex(of: "/") {
            d = String(d[..<slash])
            out.append(d)
        }
        return out
    }

    /// mkdir for a group. `existing`: one already there is fine (a parent). Otherwise an empty
    /// leftover of the same name is replaced; a populated one is an error.
    private static func makeGroup(_ dir: String, existing: Bool) throws(FileError) {
        if mkdir(dir, 0o755) == 0 { return }
        let error = errno
        guard error == EEXIST else { throw FileError(action: "create the cgroup", path: dir, errno: error) }
        if existing { return }
        guard rmdir(dir) == 0, mkdir(dir, 0o755) == 0 else { throw FileError(action: "create the cgroup", path: dir, errno: EEXIST) }
    }
}

private func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

private func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR
}
