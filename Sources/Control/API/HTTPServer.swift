import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Where a server listens: an address it binds, or a listening socket it was handed.
public enum ListenEndpoint: Sendable, Equatable, CustomStringConvertible {
    case hostname(String, port: Int)
    case unixDomainSocket(path: String)
    /// A socket systemd bound and listens on (socket activation). Each serve takes a duplicate,
    /// so a restarted child serves it again, and the original stays open for that.
    case inherited(fd: CInt, name: String)

    public var description: String {
        switch self {
        case .hostname(let host, let port): "\(host):\(port)"
        case .unixDomainSocket(let path): path
        case .inherited(let fd, let name): "systemd's socket '\(name)' (fd \(fd))"
        }
    }
}

/// Hummingbird's application loop (a router behind a child channel: plain HTTP/1 or the
/// bridge's), on a socket it binds or one systemd passed. Hummingbird's own `Application` only
/// binds sockets of its own, so a socket-activated kioskd could not serve through it; this one
/// serves both ways, so every test of a listener tests the activated path's code too.
public struct HTTPServer<Context: RequestContext>: Service where Context.Source == ApplicationRequestContextSource {
    public typealias ChildChannel = @Sendable (@escaping HTTPChannelHandler.Responder) -> any ServerChildChannel

    let responder: RouterResponder<Context>
    let endpoint: ListenEndpoint
    let childChannel: ChildChannel
    let connections: (any AvailableConnectionsDelegate)?
    let onRunning: @Sendable (any Channel) async -> Void
    let logger: Logger

    /// `childChannel`: the connection's pipeline around the responder (default HTTP/1.1);
    /// `connections`: when to stop accepting; `onRunning`: once the socket accepts.
    public init(router: Router<Context>, endpoint: ListenEndpoint,
                childChannel: @escaping ChildChannel = { HTTP1Channel(responder: $0) },
                connections: (any AvailableConnectionsDelegate)? = nil,
                logger: Logger, onRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) {
        self.responder = router.buildResponder()
        self.endpoint = endpoint
        self.childChannel = childChannel
        self.connections = connections
        self.onRunning = onRunning
        self.logger = logger
    }

    public func run() async throws {
        try await serve(childChannel(Self.respond(responder, logger: logger)))
    }

    /// What Hummingbird's application does per request: the context, the router, a 500 for an
    /// error no middleware turned into a response, the Date and Server headers.
    static func respond(_ responder: RouterResponder<Context>, logger: Logger) -> HTTPChannelHandler.Responder {
        { request, writer, channel in
            var log = logger
            log[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
            let context = Context(source: .init(channel: channel, logger: log))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error
            } catch {
                context.logger.debug("unhandled error", metadata: ["error": "\(error)"])
                response = Response(status: .internalServerError)
            }
            response.headers[.date] = httpDate()
            response.headers[.server] = "kioskd"
            try await writer.write(response: response.head, body: response.body)
        }
    }

    func serve<Child: ServerChildChannel>(_ child: Child) async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let quiescing = ServerQuiescingHelper(group: group)
        let connections = self.connections, logger = self.logger
        // SOMAXCONN, as systemd's socket units ask (the kernel caps it at net.core.somaxconn): a
        // burst of connects (a flood, viewers coming back after a restart) waits there rather
        // than having SYNs dropped, each drop a 1 s retransmit for its client, a load balancer's
        // health check included (the abuse bench saw /health take 1 s behind 256).
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let connections { try channel.pipeline.syncOperations.addHandler(Self.limit(connections)) }
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
        // A connection whose setup failed is closed and logged: NIO would leave it open, and its
        // client waiting for an answer that never comes.
        let setup: @Sendable (any Channel) -> EventLoopFuture<Child.Value> = { channel in
            child.setup(channel: channel, logger: logger).flatMapErrorThrowing { error in
                logger.error("a connection could not be set up", metadata: ["error": "\(error)", "peer": "\(channel.remoteAddress.map { "\($0)" } ?? "unknown")"])
                channel.close(promise: nil)
                throw error
            }
        }
        let server: NIOAsyncChannel<Child.Value, Never>
        switch endpoint {
        case .hostname(let host, let port):
            server = try await bootstrap.bind(host: host, port: port, childChannelInitializer: setup)
        case .unixDomainSocket(let path):
            server = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: setup)
        case .inherited(let fd, let name):
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 3)
            guard copy >= 0 else { throw ListenError(message: "cannot take systemd's socket '\(name)' (fd \(fd)): errno \(errno)") }
            server = try await bootstrap.bind(copy, childChannelInitializer: setup)
        }
        logger.info("listening", metadata: ["on": "\(endpoint)"])
        await withGracefulShutdownHandler {
            await onRunning(server.channel)
            await withDiscardingTaskGroup { connections in
                do {
                    try await server.executeThenClose { inbound in
                        for try await accepted in inbound {
                            connections.addTask { await child.handle(value: accepted, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("the listening socket failed", metadata: ["error": "\(error)"])
                }
            }
        } onGracefulShutdown: {
            // Stops accepting (the socket closes: an inherited one stays open in systemd), and
            // tells open connections to finish their request and close.
            quiescing.initiateShutdown(promise: nil)
        }
    }

    static func limit<Delegate: AvailableConnectionsDelegate>(_ delegate: Delegate) -> any ChannelHandler {
        AvailableConnectionsChannelHandler(delegate: delegate)
    }
}

public struct ListenError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// RFC 9110's IMF-fixdate, now (the C locale's day and month names).
func httpDate() -> String {
    var now = time(nil), parts = tm()
    gmtime_r(&now, &parts)
    var text = [CChar](repeating: 0, count: 32)
    let n = strftime(&text, text.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
    return String(decoding: text[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
