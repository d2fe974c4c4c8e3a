import Essentials
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Supervision

#if canImport(Glibc)
import Glibc
#endif

public enum ControlServerError: Error, CustomStringConvertible {
    case socketInUse(String)
    case cannotPrepare(String)

    public var description: String {
        switch self {
        case .socketInUse(let path): "another process is serving \(path) (control.socket): stop it or choose another path"
        case .cannotPrepare(let why): "cannot prepare the control socket: \(why)"
        }
    }
}

/// The control API on its Unix socket: HTTP/1.1 by Hummingbird; mode 0660 and the configured
/// group on the socket file, peer credentials checked on every request. Under socket activation
/// the socket is systemd's (kioskd.socket: its path, mode and group), served as it is.
public struct ControlServer: Sendable {
    public let socketPath: String
    public let group: UInt32?
    public let allowlist: PeerAllowlist
    /// systemd's listening socket for the control API, when it passed one.
    public let inherited: CInt?

    public init(socketPath: String, group: UInt32?, allowlist: PeerAllowlist, inherited: CInt? = nil) {
        self.socketPath = socketPath
        self.group = group
        self.allowlist = allowlist
        self.inherited = inherited
    }

    /// Serves until cancelled; `onReady` runs once the socket accepts connections with its
    /// final mode. A socket file left by a dead run is removed; a live one is an error.
    public func run(_ routes: ControlRoutes, logger: Logger, onReady: @escaping @Sendable () -> Void) async throws {
        let router = routes.router(allowlist: allowlist)
        if let inherited {
            let server = HTTPServer(router: router, endpoint: .inherited(fd: inherited, name: "control"), logger: logger) { _ in onReady() }
            return try await serveUntilCancelled(server, logger: logger)
        }
        try removeStaleSocket()
        let path = socketPath, group = self.group
        let server = HTTPServer(router: router, endpoint: .unixDomainSocket(path: path), logger: logger) { _ in
            // Until this chmod the file has the umask's mode: owner only, so no one else
            // could connect in between.
            if let group, chown(path, UInt32.max, group) != 0 {
                logger.error("cannot chown the control socket", metadata: ["path": "\(path)", "gid": "\(group)", "errno": "\(errno)"])
            }
            chmod(path, 0o660)
            onReady()
        }
        defer { unlink(path) }
        try await serveUntilCancelled(server, logger: logger)
    }

    private func removeStaleSocket() throws {
        var st = stat()
        guard lstat(socketPath, &st) == 0 else { return }
        guard st.st_mode & S_IFMT == S_IFSOCK else { throw ControlServerError.cannotPrepare("\(socketPath) exists and is not a socket") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        let live = withUnixSocketAddress(socketPath) { connect(fd, $0, $1) } == 0
        guard !live else { throw ControlServerError.socketInUse(socketPath) }
        unlink(socketPath)
    }
}

/// Runs a server until the task is cancelled, and makes the cancellation (a supervisor stopping
/// the child) a graceful shutdown: no new connections, requests in flight finish (long polls and
/// streams within 3 s).
public func serveUntilCancelled(_ server: some Service, logger: Logger) async throws {
    var configuration = ServiceGroupConfiguration(services: [.init(service: server)], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
    configuration.maximumGracefulShutdownDuration = .seconds(3)
    let services = ServiceGroup(configuration: configuration)
    // Shielded: run in the cancelled task, the group would cancel the server at once instead
    // of shutting it down gracefully. The handler is synchronous, hence its small task.
    try await withTaskCancellationHandler {
        try await shielded { try await services.run() }
    } onCancel: {
        Task { await services.triggerGracefulShutdown() }
    }
}
