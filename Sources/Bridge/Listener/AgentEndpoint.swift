import Control
import HTTPTypes
import Logging
import Metrics
import NIOCore
import NIOHTTP1

/// The two upgrades that become message relays: an agent on a task of this host (its Chromium's
/// browser-level CDP WebSocket), and any viewer or agent of a task another host owns (that
/// host's internal listener). Either upstream is opened and upgraded before the client's answer,
/// so whatever refuses it (a browser not answering, the owner's own checks) is a status with a
/// JSON body, never a WebSocket that opens and closes.
extension PublicServer {
    /// The task's CDP endpoint on this host: Chromium's `webSocketDebuggerUrl` (loopback; only
    /// kioskd connects to it), under the agent limit.
    func agent(_ grant: ViewerAccess.Grant, _ target: BridgeTarget, _ channel: any Channel) async throws -> BridgeChannel.Decision {
        guard agents.count(grant.taskID) < agents.limit else { return .refuse(Self.full(grant.taskID, agents.limit, agents: true)) }
        guard let browser = target.browser, let url = await browser(), let endpoint = Self.loopbackWebSocket(url) else {
            throw Self.browserUnavailable(grant.taskID, "its browser does not answer CDP now (restarting?): try again")
        }
        let answer: Upstream.Answer
        do {
            answer = try await Upstream.open(host: endpoint.host, port: endpoint.port, target: endpoint.path, headers: HTTPHeaders(), client: channel,
                                             maxMessage: settings.maxAgentMessage)
        } catch {
            throw Self.browserUnavailable(grant.taskID, "its browser's CDP endpoint cannot be reached: \(error)")
        }
        guard case .upgraded(let upstream, _) = answer else {
            throw Self.browserUnavailable(grant.taskID, "its browser refused the CDP connection")
        }
        let access = self.access, agents = self.agents
        return .upgrade([:], .relay(upstream, maxMessage: settings.maxAgentMessage, { client, log in
            await Self.serveAgent(grant, client, access: access, agents: agents, logger: log)
        }))
    }

    static func browserUnavailable(_ task: String, _ why: String) -> APIError {
        Counter(label: "kioskd_bridge_refused_total", dimensions: [("reason", "browser_unavailable")]).increment()
        return APIError(.serviceUnavailable, "browser_unavailable", "task '\(task)': \(why)", retryAfter: 2)
    }

    /// `ws://127.0.0.1:P/devtools/browser/<id>`: host, port and path; nil for anything else
    /// (the browser's endpoint is loopback by construction: nothing else is followed).
    static func loopbackWebSocket(_ url: String) -> (host: String, port: Int, path: String)? {
        guard url.hasPrefix("ws://127.0.0.1:") else { return nil }
        let rest = url.dropFirst("ws://127.0.0.1:".count)
        guard let slash = rest.firstIndex(of: "/"), let port = Int(rest[..<slash]), (1...65535).contains(port) else { return nil }
        return ("127.0.0.1", port, String(rest[slash...]))
    }

    static func serveAgent(_ grant: ViewerAccess.Grant, _ client: RelayConnection, access: ViewerAccess, agents: ViewerRegistry, logger: Logger) async {
        guard let slot = agents.join(grant.taskID) else {
            return client.refuse("agent limit reached", code: 1013, "agent limit reached")
        }
        var log = logger
        log[metadataKey: "task"] = "\(grant.taskID)"
        Counter(label: "kioskd_bridge_connections_total", dimensions: [("role", "agent")]).increment()
        let started = ContinuousClock.now
        log.info("agent connected")
        await access.note(grant.taskID, "agent_connected", ["agents": "\(agents.count(grant.taskID))"])
        let totals = await client.run(slot: slot)
        Counter(label: "kioskd_bridge_agent_bytes_total", dimensions: [("direction", "from_agent")]).increment(by: totals.fromViewer)
        Counter(label: "kioskd_bridge_agent_bytes_total", dimensions: [("direction", "to_agent")]).increment(by: totals.toViewer)
        let seconds = (ContinuousClock.now - started).components.seconds
        await access.note(grant.taskID, "agent_disconnected", ["reason": totals.reason, "seconds": "\(seconds)",
                                                                "bytes_in": "\(totals.fromViewer)", "bytes_out": "\(totals.toViewer)"])
        log.info("agent disconnected", metadata: ["reason": "\(totals.reason)", "bytes_in": "\(totals.fromViewer)", "bytes_out": "\(totals.toViewer)"])
    }

    /// A task another host owns: the same request on its internal listener, with this host's
    /// proof; its answer is the client's. Its events and limits are the owner's; here the
    /// connection is counted (`kioskd_bridge_relayed`).
    func toOwner(_ grant: ViewerAccess.Grant, _ door: ViewerAccess.Door, address: String, _ head: HTTPRequest,
                 _ channel: any Channel) async throws -> BridgeChannel.Decision {
        guard let relay else {
            throw APIError(.internalServerError, "internal", "task '\(grant.taskID)' is on another host, and this listener does not relay")
        }
        let limit = door == .agent ? settings.maxAgentMessage : settings.maxFrameSize
        let (upstream, subprotocol) = try await relay.open(head, address: address, client: channel, maxMessage: limit)
        let relayed = self.relayed
        let doorName = door == .agent ? "agent" : "viewer"
        return .upgrade(subprotocol.map { [.secWebSocketProtocol: $0] } ?? [:], .relay(upstream, maxMessage: limit, { client, logger in
            let slot = relayed.join(grant.taskID)
            Counter(label: "kioskd_bridge_relayed_total", dimensions: [("door", doorName)]).increment()
            var log = logger
            log[metadataKey: "task"] = "\(grant.taskID)"
            log.info("relayed to the task's host", metadata: ["door": "\(doorName)", "owner": "\(address)"])
            let totals = await client.run(slot: slot)
            Counter(label: "kioskd_bridge_relayed_bytes_total", dimensions: [("direction", "from_client")]).increment(by: totals.fromViewer)
            Counter(label: "kioskd_bridge_relayed_bytes_total", dimensions: [("direction", "to_client")]).increment(by: totals.toViewer)
            log.info("relay ended", metadata: ["reason": "\(totals.reason)", "bytes_in": "\(totals.fromViewer)", "bytes_out": "\(totals.toViewer)"])
        }))
    }
}
