import Display
import Essentials
import Kiosk
import Logging
import Supervision

/// The session manager as a child of the root supervisor: ready once an earlier run's leftovers
/// are swept; on stop, every session is stopped. (The demo is a task: `DemoTask`.)
enum SessionsChild {
    static func spec(_ config: Config, manager: SessionManager, logger: Logger) -> ChildSpec {
        ChildSpec(
            id: "sessions",
            kind: .task { context in
                try await manager.run { report in
                    context.markReady("swept \(report.processes) processes, \(report.directories.count) directories")
                }
            },
            restart: .permanent,
            shutdown: .timeout(.seconds(20)),
            readiness: .signaled,
            readyTimeout: .seconds(90))
    }

    static func host(_ config: Config, logger: Logger) throws -> SessionHost {
        SessionHost(sessionsDir: config.runtime.dir + "/sessions", recordsDir: config.state.dir + "/sessions",
                    user: try SessionHost.sessionUser(named: config.sessions.user),
                    displays: DisplayAllocator(range: config.sessions.displays, logger: logger),
                    ports: PortAllocator(range: config.sessions.ports),
                    portGuard: config.sessions.portGuard == .on ? portGuard(config) : nil,
                    cgroups: cgroups(config, logger: logger),
                    logger: logger)
    }

    /// The port guard the config asks for (installed by kioskd, or by `kioskd port-guard`).
    static func portGuard(_ config: Config) -> PortGuard {
        PortGuard(ports: config.sessions.ports, allowedUIDs: config.sessions.cdpAllowUIDs.values, allowedGIDs: config.sessions.cdpAllowGIDs.values)
    }

    /// The sessions' cgroups, tagged by the runtime directory (two daemons on a host keep apart;
    /// a restarted one finds its predecessor's groups). None writable: one warning, and the
    /// sessions run as before, measured from /proc.
    static func cgroups(_ config: Config, logger: Logger) -> SessionCgroups {
        let cgroups = SessionCgroups.detect(tag: config.runtime.dir, logger: logger)
        if case .unavailable(let reason) = cgroups.mode {
            logger.warning("no session cgroups: sessions are not memory-limited one by one, and their memory is measured from /proc (\(reason))")
        }
        return cgroups
    }

    /// A session's cgroup limits: the configured ones, or derived from the sessions' budget.
    static func limits(_ config: Config, budget: UInt64) -> SessionLimits {
        let max = config.sessions.memoryMax ?? Swift.max(512 << 20, budget / 2)
        let high = config.sessions.memoryHigh ?? max / 10 * 9
        return SessionLimits(memoryMax: max, memoryHigh: Swift.min(high, max), pidsMax: config.sessions.pidsMax)
    }

    /// The configured session defaults. The grab list cannot fail here: the config loader
    /// already refused a removal that is not in the default list.
    static func settings(_ config: Config, id: String, url: String, budget: UInt64) -> SessionSettings {
        var s = SessionSettings(id: id, url: url, width: config.sessions.width, height: config.sessions.height,
                                input: config.sessions.input, bridge: config.sessions.bridge,
                                budget: Intensity(maxRestarts: config.sessions.maxRestarts, period: config.sessions.period),
                                browserExecutable: config.sessions.browser, sandbox: config.sessions.sandbox,
                                grabs: (try? GrabList.configured(add: config.sessions.lockdownAdd, remove: config.sessions.lockdownRemove)) ?? GrabList.defaults,
                                tabs: config.sessions.tabs)
        s.limits = limits(config, budget: budget)
        return s
    }
}
