import Control
import Essentials
import Kiosk
import CoreMetrics
import Logging
import Prometheus
import ServiceLifecycle
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// `kioskd serve`: the root supervisor and the services around it.
public struct Daemon {
    public let config: Config
    public let environment: [String: String]
    /// Listening sockets systemd passed; the rest kioskd binds itself.
    public let sockets: SocketActivation
    let logger = Logger(label: "kioskd")

    public init(config: Config, environment: [String: String], sockets: SocketActivation = .none) {
        self.config = config
        self.environment = environment
        self.sockets = sockets
    }

    public func run() async throws {
        try prepareDirectories()
        // Orphans of our children (double-forked helpers) reparent to us and are reaped here.
        try adoptOrphans()

        let events = EventBus()
        let programs = try ProgramSpecs.supervisor(config)
        let sessions: SessionManager
        do {
            sessions = SessionManager(host: try SessionsChild.host(config, logger: logger))
        } catch {
            throw DaemonError.setup(key: "sessions.user", message: "\(error)")
        }
        // The sessions' parent groups were made when the host was: however the daemon ends
        // (a failed start too), they go with it once empty; a SIGKILLed one's, at its next start.
        defer { sessions.host.cgroups?.removeParents() }
        // A significant program ending stops the programs group, and with it the daemon.
        let significant = programs.autoShutdown != .never
        // GET /v1/tree reads the root, which is built after its children's specs.
        let rootRef = OnceValue<Supervisor>()
        // The public listener uses the control child's task service (and its tokens).
        let service = OnceValue<TaskService>()
        let registry = MetricsRegistry.registry
        // The root restarts a subtree that gave up once a minute at most; beyond that the
        // daemon exits non-zero and systemd's own restart policy takes over.
        let root = try Supervisor(
            name: "kioskd",
            spec: SupervisorSpec(
                strategy: .oneForOne,
                intensity: Intensity(maxRestarts: 1, period: .seconds(60)),
                autoShutdown: significant ? .anySignificant : .never,
                children: [
                    ChildSpec(id: "programs", kind: .supervisor(programs), restart: significant ? .transient : .permanent, significant: significant),
                    SessionsChild.spec(config, manager: sessions, logger: logger),
                    ControlChild.spec(config, environment: environment, socket: sockets.control, sessions: sessions, published: service,
                                      metrics: { var out: [UInt8] = []; registry.emit(into: &out); return out + Array(ProcessMetrics.exposition().utf8) },
                                      logger: logger) {
                        await rootRef.current?.snapshot() ?? TreeNode(id: "kioskd", kind: "supervisor", status: "starting")
                    },
                    PublicChild.spec(config, socket: sockets.publicListener, service: service, sessions: sessions, logger: logger),
                ] + (config.cluster.settings.enabled ? [InternalChild.spec(config, service: service, sessions: sessions, logger: logger)] : [])),
            events: events, logger: logger)
        rootRef.set(root)
        for warning in ConfigWarning.check(config) {
            logger.warning("\(warning.message)", metadata: ["key": "\(warning.key)"])
        }
        let notifier = SystemdNotifier(environment: environment)
        logger.info("starting", metadata: [
            "programs": "\(config.programs.count)",
            "control.socket": "\(config.control.socket)",
            "store": "\(redactedStore(config.storeLocation))",
            "systemd": "\(notifier.isActive ? "notify" : "no")",
        ])

        var serviceConfig = ServiceGroupConfiguration(
            services: [
                .init(service: SupervisorService(root: root), successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
                // It ends by itself when the tree stops before it was ever ready (a significant
                // program ending during the start): that is a shutdown, not a failure.
                .init(service: NotifierService(notifier: notifier, root: root, events: events, logger: logger),
                      successTerminationBehavior: .gracefullyShutdownGroup),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        serviceConfig.maximumGracefulShutdownDuration = config.shutdown.timeout
        serviceConfig.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: serviceConfig).run()
        logger.info("stopped")
    }

    private func prepareDirectories() throws {
        for (key, path) in [("runtime.dir", config.runtime.dir), ("state.dir", config.state.dir)] {
            if let error = makeDirectories(path, mode: 0o750) {
                throw DaemonError.setup(key: key, message: "cannot create \(path): \(error)")
            }
        }
        // The session user must pass through to its session's directory (nothing is listable).
        if geteuid() == 0, chmod(config.runtime.dir, 0o711) != 0 {
            throw DaemonError.setup(key: "runtime.dir", message: "cannot chmod \(config.runtime.dir): \(String(cString: strerror(errno)))")
        }
    }
}

/// Passwords in a PostgreSQL URL never reach the log.
func redactedStore(_ url: String) -> String {
    guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else { return url }
    let userinfo = url[scheme.upperBound..<at]
    guard let colon = userinfo.firstIndex(of: ":") else { return url }
    return String(url[..<colon]) + ":***" + String(url[at...])
}

/// mkdir -p; returns the error text, or nil when the directory exists.
func makeDirectories(_ path: String, mode: mode_t) -> String? {
    var current = ""
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, mode) != 0 && errno != EEXIST {
            return String(cString: strerror(errno))
        }
    }
    var st = stat()
    guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return "exists and is not a directory" }
    return nil
}

/// The process's metrics go to one Prometheus registry, served at GET /metrics (bootstrapped once:
/// swift-metrics allows one backend per process).
enum MetricsRegistry {
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}
