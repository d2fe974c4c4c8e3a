import Control
import Essentials
import FoundationEssentials
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTP1

/// How a listener reaches another host's internal listener for a task that host owns: the
/// client's request (its path and query, token included, and the subprotocols it offered) is
/// asked again there with this host's proof (`ClusterAuth`), before the client's own upgrade is
/// answered. The owner checks everything again (token, role, task, limits); its refusal is the
/// client's answer, status and JSON as it gave them. The client's Origin is not passed on: this
/// host has judged it against its own name, which the owner does not share.
public struct ClusterRelay: Sendable {
    let auth: ClusterAuth

    public init(auth: ClusterAuth) {
        self.auth = auth
    }

    /// The owner's upgraded WebSocket for `request`, or the refusal the client gets.
    /// `address`: the owner's internal listener (`host:port`, `[v6]:port`).
    func open(_ request: HTTPRequest, address: String, client: any Channel, maxMessage: Int) async throws(APIError) -> (NIOLoopBound<UpstreamHandler>, String?) {
        guard let (host, port) = Self.split(address) else {
            throw APIError(.badGateway, "owner_unreachable", "the task's host advertises no usable address ('\(address)')")
        }
        let target = request.path ?? "/"
        var headers = HTTPHeaders()
        headers.add(name: ClusterAuth.header, value: auth.proof(method: "GET", target: target, now: Int64(Date.now.timeIntervalSince1970)))
        if let offered = request.headerFields[.secWebSocketProtocol] { headers.add(name: "Sec-WebSocket-Protocol", value: offered) }
        let answer: Upstream.Answer
        do {
            answer = try await Upstream.open(host: host, port: port, target: target, headers: headers, client: client, maxMessage: maxMessage)
        } catch {
            Counter(label: "kioskd_bridge_relay_failures_total", dimensions: [("reason", "unreachable")]).increment()
            throw APIError(.badGateway, "owner_unreachable", "the task's host (\(address)) cannot be reached: \(error)")
        }
        switch answer {
        case .upgraded(let upstream, let subprotocol):
            return (upstream, subprotocol)
        case .refused(let status, let body):
            Counter(label: "kioskd_bridge_relay_failures_total", dimensions: [("reason", status.code == 401 ? "proof" : "refused")]).increment()
            throw Self.refusal(status, body)
        }
    }

    /// The owner's refusal as this host's answer: its status and error; a 401 about the proof is
    /// this cluster's fault (secrets or clocks differ), not the client's, so it becomes a 502.
    static func refusal(_ status: HTTPResponseStatus, _ body: String) -> APIError {
        let error = (try? JSONValue(parsing: Array(body.utf8)))?["error"]
        let code = error?["code"]?.string ?? "owner_refused"
        let message = error?["message"]?.string ?? "the task's host answered \(status.code)"
        if code.hasPrefix("cluster_proof") {
            return APIError(.badGateway, "owner_refused_proof", "the task's host refused this host's proof: \(message)")
        }
        return APIError(HTTPResponse.Status(code: Int(status.code)), code, message)
    }

    /// `host:port` or `[v6]:port`.
    static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}
