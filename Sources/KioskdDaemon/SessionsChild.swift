import Display
import Kiosk
import Logging
import Supervision

/// The session manager as a child of the root supervisor: ready once an earlier run's leftovers
/// are swept (and the demo session, if configured, is up); on stop, every session is stopped.
enum SessionsChild {
    static func spec(_ config: Config, manager: SessionManager, logger: Logger) -> ChildSpec {
        ChildSpec(
            id: "sessions",
            kind: .task { context in
                let report = try await manager.start()
                var detail = "swept \(report.processes) processes, \(report.directories.count) directories"
                if config.demo.enabled {
                    let session = try await manager.create(demoSettings(config))
                    let info = await session.info()
                    detail += "; demo session on \(info.display)"
                    logger.notice("demo session ready: look at it with", metadata: [
                        "vnc": "\(info.vncSocket) (x11vnc's Unix socket, as root: e.g. socat TCP-LISTEN:5900,bind=127.0.0.1 UNIX-CONNECT:\(info.vncSocket))",
                        "screenshot": "DISPLAY=\(info.display) XAUTHORITY=\(info.directory)/Xauthority import -window root /tmp/kiosk.png",
                        "cdp": "\(info.cdpURL)/json/version",
                    ])
                }
                context.markReady(detail)
                // Runs until stopped; then every session stops in order, each by its tree.
                do { try await OnceValue<Void>().wait() } catch {}
                await manager.stopAll(reason: "kioskd is stopping")
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
                    portGuard: config.sessions.portGuard
                        ? PortGuard(ports: config.sessions.ports, allowedUIDs: config.sessions.cdpAllowUIDs.values,
                                    allowedGIDs: config.sessions.cdpAllowGIDs.values)
                        : nil,
                    logger: logger)
    }

    static func demoSettings(_ config: Config) throws -> SessionSettings {
        settings(config, id: "demo", url: config.demo.url)
    }

    /// The configured session defaults. The grab list cannot fail here: the config loader
    /// already refused a removal that is not in the default list.
    static func settings(_ config: Config, id: String, url: String) -> SessionSettings {
        SessionSettings(id: id, url: url, width: config.sessions.width, height: config.sessions.height,
                        input: config.sessions.input, bridge: config.sessions.bridge,
                        budget: Intensity(maxRestarts: config.sessions.maxRestarts, period: config.sessions.period),
                        browserExecutable: config.sessions.browser, sandbox: config.sessions.sandbox,
                        grabs: (try? GrabList.configured(add: config.sessions.lockdownAdd, remove: config.sessions.lockdownRemove)) ?? GrabList.defaults,
                        closeExtraTabs: config.sessions.closeExtraTabs)
    }
}
