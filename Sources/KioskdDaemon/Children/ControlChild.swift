import Control
import Essentials
import Kiosk
import Logging
import Store
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// The store and the control API as one child of the root, after the session manager: the
/// store is opened and migrated, what a previous run left unfinished is marked interrupted,
/// and the socket serves. Ready once the socket accepts connections.
enum ControlChild {
    static func spec(_ config: Config, environment: [String: String], socket: CInt?, sessions: SessionManager, published: OnceValue<TaskService>,
                     metrics: @escaping @Sendable () -> [UInt8], logger: Logger, tree: @escaping @Sendable () async -> TreeNode) -> ChildSpec {
        ChildSpec(
            id: "control",
            kind: .task { context in
                let location = try StoreLocation(url: config.storeLocation, environment: environment)
                let store = try location.open(logger: logger)
                do {
                    try await store.migrate()
                    let link = try cluster(config, store: store)
                    let tokenKey = try link.map { _ in try clusterSecret(config).viewerTokenKey }
                        ?? ViewerTokens.secret(at: config.state.dir + "/viewer-token.key")
                    let tokens = await ViewerTokens(secret: tokenKey)
                    let budget = memoryBudget(config, sessions.host, logger: logger)
                    let service = TaskService(store: store, sessions: sessions, tokens: tokens, limits: config.tasks,
                                              capacity: config.capacity, budget: budget,
                                              template: { id, request in settings(config, id: id, request, budget: budget) },
                                              warmTemplate: { id in SessionsChild.settings(config, id: id, url: "about:blank", budget: budget) },
                                              cluster: link, logger: logger)
                    let interrupted = try await service.interruptUnfinished()
                    published.set(service)
                    let server = try server(config, inherited: socket, logger: logger)
                    let kind = if case .sqlite = location { "sqlite" } else { "postgres" }
                    let routes = ControlRoutes(service: service, storeKind: kind, metrics: metrics, tree: tree)
                    // The service's work and the socket end together: a stop cancels both.
                    try await race({ await service.run() }, {
                        if config.demo.enabled { try await DemoTask.start(service, sessions: sessions, config, logger: logger) }
                        try await server.run(routes, logger: logger) {
                            context.markReady("\(config.control.socket); store \(kind); \(interrupted.count) interrupted")
                        }
                    })
                } catch {
                    await store.close()
                    throw error
                }
                await store.close()
            },
            restart: .permanent,
            shutdown: .timeout(.seconds(5)),
            readiness: .signaled,
            readyTimeout: .seconds(30))
    }

    /// Cluster mode's link to the shared store (the loader has checked the store is PostgreSQL
    /// and the secret and address are given); nil on one host.
    static func cluster(_ config: Config, store: any TaskStore) throws -> ClusterLink? {
        guard config.cluster.settings.enabled else { return nil }
        guard let shared = store as? any ClusterStore else {
            throw DaemonError.setup(key: "store.url", message: "cluster mode needs a PostgreSQL store")
        }
        var settings = config.cluster.settings
        if settings.hostID.isEmpty {
            var name = [CChar](repeating: 0, count: 256)
            gethostname(&name, name.count - 1)
            settings.hostID = String(cString: name)
        }
        return ClusterLink(store: shared, settings: settings, version: kioskdVersion)
    }

    static func clusterSecret(_ config: Config) throws -> ClusterSecret {
        do {
            return try ClusterSecret(file: config.cluster.secretFile)
        } catch {
            throw DaemonError.setup(key: "cluster.secret_file", message: error.description)
        }
    }

    /// What the sessions may use together: the smallest of kioskd's cgroup limit, the machine's
    /// memory and `capacity.memory`, less `capacity.reserve`.
    static func memoryBudget(_ config: Config, _ host: SessionHost, logger: Logger) -> UInt64 {
        let cgroupLimit = host.cgroups?.ownMemoryLimit, total = HostMemory.total()
        let budget = HostMemory.budget(cgroupLimit: cgroupLimit, memTotal: total, configured: config.capacity.memory, reserve: config.capacity.reserve)
        let mib = { (bytes: UInt64?) in bytes.map { "\($0 >> 20) MiB" } ?? "none" }
        let facts: Logger.Metadata = [
            "budget": "\(mib(budget))", "cgroup_limit": "\(mib(cgroupLimit))", "mem_total": "\(mib(total))",
            "configured": "\(mib(config.capacity.memory))", "reserve": "\(mib(config.capacity.reserve))",
        ]
        do {
            try host.cgroups?.limitSessions(to: budget)
        } catch {
            logger.warning("the sessions' parent cgroup cannot be limited to the budget: only admission keeps them within it", metadata: ["reason": "\(error)"])
        }
        if budget < config.capacity.sessionEstimate {
            logger.error("the sessions' memory budget is below one session's estimate: every task will be refused (raise capacity.memory or lower capacity.reserve)", metadata: facts)
        } else {
            logger.info("sessions' memory budget", metadata: facts)
        }
        return budget
    }

    /// The host's session defaults with what the task asks for.
    static func settings(_ config: Config, id: String, _ request: CreateTask, budget: UInt64) -> SessionSettings {
        request.session(from: SessionsChild.settings(config, id: id, url: request.url, budget: budget))
    }

    /// The socket's group and who may connect: by default root and kioskd's own uid, and
    /// members (by primary gid) of the socket's group. An inherited socket is systemd's: its
    /// path should be control.socket, which kioskd's own commands connect to.
    static func server(_ config: Config, inherited: CInt?, logger: Logger) throws -> ControlServer {
        var group: UInt32?
        if !config.control.group.isEmpty {
            guard let entry = getgrnam(config.control.group) else {
                throw DaemonError.setup(key: "control.group", message: "no group named \(config.control.group)")
            }
            group = entry.pointee.gr_gid
        }
        let uids = config.control.allowUIDs.values.isEmpty ? [0, geteuid()] : config.control.allowUIDs.values
        let gids = config.control.allowGIDs.values.isEmpty ? [group ?? getegid()] : config.control.allowGIDs.values
        if let inherited {
            let path = SocketActivation.path(of: inherited)
            if path != config.control.socket {
                logger.warning("the control socket systemd passed is not at control.socket, where kioskd's commands connect",
                               metadata: ["systemd": "\(path ?? "unnamed")", "control.socket": "\(config.control.socket)"])
            }
            return ControlServer(socketPath: path ?? config.control.socket, group: group, allowlist: PeerAllowlist(uids: Set(uids), gids: Set(gids)), inherited: inherited)
        }
        let parent = String(config.control.socket.split(separator: "/").dropLast().joined(separator: "/"))
        if let error = makeDirectories("/" + parent, mode: 0o755) {
            throw DaemonError.setup(key: "control.socket", message: "cannot create /\(parent): \(error)")
        }
        return ControlServer(socketPath: config.control.socket, group: group, allowlist: PeerAllowlist(uids: Set(uids), gids: Set(gids)))
    }
}
