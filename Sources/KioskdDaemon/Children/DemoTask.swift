import Control
import Essentials
import Kiosk
import Logging
import Store
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// `demo.enabled`: one task booted with the daemon, so a newcomer can open the live kiosk. It
/// is an ordinary task (a fresh id each start, so a restart boots a new one), which is what lets
/// a viewer token be minted for it.
enum DemoTask {
    /// How long the printed viewer link works.
    static let viewerTTL = 24 * 3600

    static func start(_ service: TaskService, sessions: SessionManager, _ config: Config, logger: Logger) async throws {
        let id = "demo-" + randomHex(4)
        _ = try await service.create(CreateTask(taskID: id, url: config.demo.url, maxLifetimeSeconds: 7 * 86400))
        let task = try await service.waitRunning(id, timeout: config.tasks.startTimeout)
        guard task.state == .running else {
            throw DaemonError.setup(key: "demo.url", message: "the demo task is \(task.state.rawValue): \(task.reason ?? "")")
        }
        let token = try await service.tokens.mint(task: id, role: .view, ttl: viewerTTL).token
        let cdp = await sessions.session(id)?.info().cdpURL ?? ""
        // The link carries a token: it goes to the terminal (stdout), never into the log.
        let text = Array((lines(id: id, token: token, cdp: cdp, listen: config.publicListener.listen,
                                tls: !config.publicListener.tlsCertFile.isEmpty) + "\n").utf8)
        _ = text.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        logger.notice("demo task running: its viewer link is printed on standard output", metadata: ["task": "\(id)", "cdp": "\(cdp)"])
    }

    /// What the terminal shows: the viewer link (this host's address in place of a wildcard
    /// listen address) and the CDP endpoint for an agent on this host.
    static func lines(id: String, token: String, cdp: String, listen: HostPort, tls: Bool) -> String {
        let host = ["0.0.0.0", "::", ""].contains(listen.host) ? "127.0.0.1" : listen.host
        let base = "\(tls ? "https" : "http")://\(host.contains(":") ? "[\(host)]" : host):\(listen.port)"
        return """
            kioskd demo: task \(id) is running
              watch it (view only, \(viewerTTL / 3600) h): \(base)/viewer?task_id=\(id)&token=\(token)
              drive it (CDP, for an agent on this host): \(cdp)   e.g. playwright: chromium.connect_over_cdp("\(cdp)")
            """
    }
}
