import NIOCore
import NIOHTTP1
import NIOPosix

/// A client of the control API over its Unix socket (the CLI's commands, the tests, the
/// benchmark): NIO's HTTP/1.1 codec, keep-alive on one connection.
public struct ControlClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) { self.socketPath = socketPath }

    public struct Answer: Sendable {
        public let status: Int
        public let headers: HTTPHeaders
        public let body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// One request on its own connection.
    public func request(_ method: HTTPMethod, _ path: String, json: String? = nil, headers: [(String, String)] = []) async throws -> Answer {
        try await withConnection { try await $0.request(method, path, json: json, headers: headers) }
    }

    public func withConnection<T: Sendable>(_ body: (inout ControlConnection) async throws -> T) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: socketPath) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var connection = ControlConnection(responses: inbound.makeAsyncIterator(), requests: outbound)
            return try await body(&connection)
        }
    }
}

public enum ControlClientError: Error, CustomStringConvertible {
    case closed

    public var description: String { "the control socket closed the connection mid-answer" }
}

/// One open connection: requests go one after the other.
public struct ControlConnection {
    var responses: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    let requests: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>

    public mutating func request(_ method: HTTPMethod, _ path: String, json: String? = nil,
                                 headers: [(String, String)] = []) async throws -> ControlClient.Answer {
        try await send(method, path, json: json, headers: headers)
        var head: HTTPResponseHead?
        var body: [UInt8] = []
        while let part = try await responses.next() {
            switch part {
            case .head(let h): head = h
            case .body(let buffer): body += buffer.readableBytesView
            case .end:
                guard let head else { throw ControlClientError.closed }
                return ControlClient.Answer(status: Int(head.status.code), headers: head.headers, body: body)
            }
        }
        throw ControlClientError.closed
    }

    /// A streamed answer (server-sent events): `chunk` gets each piece of the body as it
    /// comes; returns the status once the stream ends (or `chunk` returns false).
    public mutating func stream(_ path: String, headers: [(String, String)] = [], _ chunk: ([UInt8]) async throws -> Bool) async throws -> Int {
        try await send(.GET, path, json: nil, headers: [("Accept", "text/event-stream")] + headers)
        var status = 0
        while let part = try await responses.next() {
            switch part {
            case .head(let h): status = Int(h.status.code)
            case .body(let buffer): if try await !chunk(Array(buffer.readableBytesView)) { return status }
            case .end: return status
            }
        }
        return status
    }

    private func send(_ method: HTTPMethod, _ path: String, json: String?, headers: [(String, String)]) async throws {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "kioskd")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let json {
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: "\(json.utf8.count)")
        } else if method == .POST {
            head.headers.add(name: "Content-Length", value: "0")
        }
        try await requests.write(.head(head))
        if let json { try await requests.write(.body(.byteBuffer(ByteBuffer(string: json)))) }
        try await requests.write(.end(nil))
    }
}
