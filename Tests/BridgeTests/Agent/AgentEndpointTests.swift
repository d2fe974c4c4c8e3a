@testable import Bridge
import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Logging
import NIOCore
import Store
import Supervision
import Testing
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// A task's CDP endpoint on the listeners, and the host-to-host relay of viewers and agents,
/// against real sessions: Playwright's connect_over_cdp through the listener (never the
/// browser's port), every wrong token refused before the upgrade, and a second listener that
/// relays to an internal listener (the one `PublicServer.internalListener` makes, as a cluster
/// host runs it) only with the cluster's proof.
@Suite("CDP endpoint and host-to-host relay", .serialized)
struct AgentEndpointTests {
    static let page = "data:text/html,<title>kiosk-agent</title><body>agent</body>"
    let quiet: Logger = { var l = Logger(label: "test.agent"); l.logLevel = .critical; return l }()

    /// The tests' venv Python with Playwright (scripts/setup.sh --tests installs it).
    func drive(_ url: String, expecting title: String, dir: String) async throws -> String {
        let python = repositoryRoot + "/.build/venv/bin/python3"
        guard access(python, X_OK) == 0 else { throw TestFailure("no \(python): run scripts/setup.sh --tests (it installs playwright from PyPI there)") }
        let output = dir + "/agent-\(UInt32.random(in: 0...UInt32.max)).out"
        let status = try await runToExit(python, [repositoryRoot + "/Tests/BridgeTests/Agent/cdp_agent.py", url, title],
                                         environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": dir], timeout: .seconds(120), output: output)
        let printed = (try? readText(output)) ?? ""
        #expect(status == 0, "\(printed)")
        for step in ["connect_over_cdp", "reads the kiosk page", "evaluate", "navigate", "large message", "disconnected"] {
            #expect(printed.contains("ok \(step)\n"), "\(step): \(printed)")
        }
        return printed
    }

    /// Waits (long-polling the task's events) until one of `type` has been stored.
    func waitEvent(_ h: BridgeHarness, _ task: String, _ type: String) async throws -> EventRecord {
        try await withTimeout(.seconds(15), "a \(type) event") {
            var since: Int64 = 0
            while true {
                let events = try await h.service.events(task, since: since, limit: 500, wait: .seconds(5))
                if let found = events.first(where: { $0.type == type }) { return found }
                since = events.last?.seq ?? since
            }
        }
    }

    /// The refusals every door must give before the upgrade: (query, path, status, code).
    func refusals(_ h: BridgeHarness, task: String, view: String, agent: String) async throws -> [(String, String, Int, String)] {
        let control = try await h.service.tokens.mint(task: task, role: .control, ttl: 60).token
        let otherTask = try await h.service.tokens.mintAgent(task: "elsewhere", ttl: 60).token
        let expired = try await h.service.tokens.mintAgent(task: task, ttl: 10, now: Date().addingTimeInterval(-3600)).token
        let cdp = "/api/v1/cdp/ws", vnc = "/api/v1/vnc/ws"
        return [
            ("task_id=\(task)", cdp, 401, "token_missing"),
            ("task_id=\(task)&token=forged.token.here", cdp, 401, "token_invalid"),
            ("task_id=\(task)&token=\(expired)", cdp, 401, "token_invalid"),
            ("task_id=\(task)&token=\(otherTask)", cdp, 403, "token_other_task"),
            ("task_id=\(task)&token=\(view)", cdp, 403, "token_other_role"),
            ("task_id=\(task)&token=\(control)", cdp, 403, "token_other_role"),
            ("task_id=\(task)&token=\(agent)", vnc, 403, "token_other_role"),
            ("task_id=\(task)&token=\(agent)", "/api/v1/other", 404, "not_found"),
        ]
    }

    func expectRefused(_ h: BridgeHarness, _ cases: [(String, String, Int, String)], port: Int, headers: @escaping (String, String) -> [String] = { _, _ in [] }) async throws {
        for (query, path, status, code) in cases {
            let answer = try await upgradeOffPool(port: port, query, path: path, headers: headers(path, query))
            close(answer.fd)
            #expect(answer.status == status && answer.text.contains(#""code":"\#(code)""#) && answer.text.contains("application/json"),
                    "\(path)?\(query.prefix(40)) on :\(port): \(answer.text.prefix(300))")
        }
    }

    @Test func playwrightDrivesATaskThroughTheListenerAndWrongTokensAreRefusedBeforeTheUpgrade() async throws {
        try await BridgeHarness.with("cdp") { h in
            let (info, view) = try await h.task("c1", url: Self.page)
            #expect(try await waitForPage(info, url: "data:text/html") == "kiosk-agent")
            let agent = try await h.service.agentToken("c1", ttl: 300).token
            try await expectRefused(h, try await refusals(h, task: "c1", view: view, agent: agent), port: h.port)
            // The right token upgrades (and the socket is then closed at once).
            let ok = try await upgradeOffPool(port: h.port, "task_id=c1&token=\(agent)", path: "/api/v1/cdp/ws")
            close(ok.fd)
            #expect(ok.status == 101, "\(ok.text)")

            _ = try await drive("ws://127.0.0.1:\(h.port)/api/v1/cdp/ws?task_id=c1&token=\(agent)", expecting: "kiosk-agent", dir: h.dir)
            let connected = try await waitEvent(h, "c1", "agent_connected")
            let gone = try await waitEvent(h, "c1", "agent_disconnected")
            #expect(connected.seq < gone.seq && gone.data.contains(#""reason":"client closed""#), "\(gone.data)")
            // The agent drove the kiosk's own tab.
            #expect(try await waitForPage(info, url: "data:text/html,<title>driven") == "driven")

            // An ended task has no endpoint; its tokens can no longer be minted.
            _ = try await h.service.command("c1", .cancel, reason: "done")
            let ended = try await upgradeOffPool(port: h.port, "task_id=c1&token=\(agent)", path: "/api/v1/cdp/ws")
            close(ended.fd)
            #expect(ended.status == 404 && ended.text.contains("task_ended"), "\(ended.text)")
            await #expect(throws: APIError.self) { _ = try await h.service.agentToken("c1", ttl: 60) }
        }
    }

    /// Another host's task, as its owner serves it: `address` for every task.
    struct OwnerElsewhere: TaskRouting {
        let address: String
        func owner(of taskID: String) async -> TaskOwner { .remote(host: "owner", address: address) }
    }

    @Test func aListenerRelaysViewersAndAgentsToTheOwnersInternalListenerWhichWantsTheClustersProof() async throws {
        try await BridgeHarness.with("relay") { h in
            let (info, view) = try await h.task("r1", url: Self.page)
            #expect(try await waitForPage(info, url: "data:text/html") == "kiosk-agent")
            let agent = try await h.service.agentToken("r1", ttl: 300).token
            let secret = randomBytes(32)
            let auth = ClusterAuth(secret: secret)
            let target = { @Sendable (id: String) async in await BridgeHarness.target(h.manager, id) }
            // The owner's internal listener: this harness's service and sessions.
            let owner = PublicServer.internalListener(access: ViewerAccess(service: h.service, settings: BridgeSettings(), target: target),
                                                      settings: BridgeSettings(), auth: auth)
            let ownerPort = OnceValue<Int>()
            try await withBackground({ try await owner.run(.hostname("127.0.0.1", port: 0), logger: quiet) { ownerPort.set($0) } }) {
                let internalPort = try await withTimeout(.seconds(10), "the internal listener") { try await ownerPort.wait() }
                // Host B's public listener, which finds the task on the owner; one with another
                // cluster's secret; one whose owner cannot be reached.
                func relaying(_ address: String, _ relayAuth: ClusterAuth) -> PublicServer {
                    PublicServer(access: ViewerAccess(service: h.service, settings: BridgeSettings(), routing: OwnerElsewhere(address: address), target: target),
                                 settings: BridgeSettings(), relay: ClusterRelay(auth: relayAuth))
                }
                let servers = [relaying("127.0.0.1:\(internalPort)", auth), relaying("127.0.0.1:\(internalPort)", ClusterAuth(secret: randomBytes(32))),
                               relaying("127.0.0.1:1", auth)]
                let ports = servers.map { _ in OnceValue<Int>() }
                try await withBackground({
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for (server, port) in zip(servers, ports) {
                            group.addTask { try await server.run(.hostname("127.0.0.1", port: 0), logger: quiet) { port.set($0) } }
                        }
                        try await group.waitForAll()
                    }
                }) {
                    var bound: [Int] = []
                    for port in ports { bound.append(try await withTimeout(.seconds(10), "a relaying listener") { try await port.wait() }) }
                    try await relayed(h, view: view, agent: agent, auth: auth, internalPort: internalPort, b: bound[0], wrongSecret: bound[1], unreachable: bound[2])
                }
            }
        }
    }

    func relayed(_ h: BridgeHarness, view: String, agent: String, auth: ClusterAuth, internalPort: Int, b: Int, wrongSecret: Int, unreachable: Int) async throws {
        let vncTarget = "/api/v1/vnc/ws?task_id=r1&token=\(view)"
        let now = Int64(Date().timeIntervalSince1970)
        // The internal listener: nothing without a valid proof, not even the answer to a plain request.
        let plainAnswer = try await blocking {
            let plain = try connectLoopback(port: internalPort, timeout: 5)
            defer { close(plain) }
            sendAll(plain, Array("GET /api/v1/vnc/ws?task_id=r1&token=\(view) HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            return readAnswer(plain, untilComplete: true).text
        }
        #expect(plainAnswer.hasPrefix("HTTP/1.1 401") && plainAnswer.contains(#""code":"cluster_proof_missing""#), "\(plainAnswer)")
        let header = ClusterAuth.header
        let proofs: [(String?, String)] = [
            (nil, "cluster_proof_missing"),
            ("\(header): nonsense", "cluster_proof_malformed"),
            ("\(header): \(auth.proof(method: "GET", target: vncTarget, now: now - 120))", "cluster_proof_stale"),
            ("\(header): \(ClusterAuth(secret: randomBytes(32)).proof(method: "GET", target: vncTarget, now: now))", "cluster_proof_invalid"),
            // A proof made for another request (here: the same task with the agent's token).
            ("\(header): \(auth.proof(method: "GET", target: "/api/v1/vnc/ws?task_id=r1&token=\(agent)", now: now))", "cluster_proof_invalid"),
        ]
        for (proof, code) in proofs {
            let answer = try await upgradeOffPool(port: internalPort, "task_id=r1&token=\(view)", headers: proof.map { [$0] } ?? [])
            close(answer.fd)
            #expect(answer.status == 401 && answer.text.contains(#""code":"\#(code)""#), "\(code): \(answer.text.prefix(300))")
        }
        // With a valid proof: the same checks as the public listener's, then the upgrade.
        let proven = { (path: String, query: String) in ["\(header): \(auth.proof(method: "GET", target: path + "?" + query, now: Int64(Date().timeIntervalSince1970)))"] }
        try await expectRefused(h, try await refusals(h, task: "r1", view: view, agent: agent).filter { $0.1 != "/api/v1/other" }, port: internalPort, headers: proven)
        let direct = try await upgradeOffPool(port: internalPort, "task_id=r1&token=\(view)", headers: proven("/api/v1/vnc/ws", "task_id=r1&token=\(view)"))
        close(direct.fd)
        #expect(direct.status == 101, "\(direct.text)")

        // Through host B: refused there before anything is relayed, and the owner's answers
        // (its checks, or its refusal of another cluster's proof) come back as they are.
        try await expectRefused(h, try await refusals(h, task: "r1", view: view, agent: agent), port: b)
        let foreign = try await upgradeOffPool(port: wrongSecret, "task_id=r1&token=\(view)")
        close(foreign.fd)
        #expect(foreign.status == 502 && foreign.text.contains(#""code":"owner_refused_proof""#), "\(foreign.text)")
        let nowhere = try await upgradeOffPool(port: unreachable, "task_id=r1&token=\(view)")
        close(nowhere.fd)
        #expect(nowhere.status == 502 && nowhere.text.contains(#""code":"owner_unreachable""#), "\(nowhere.text)")

        // A viewer through B sees the task's screen (RFB through both listeners, filtered on the owner).
        try await WebSocketClient.connect(url: "ws://127.0.0.1:\(b)/api/v1/vnc/ws?task_id=r1&token=\(view)",
                                          configuration: WebSocketClientConfiguration(maxFrameSize: 1 << 24), logger: quiet) { inbound, outbound, _ in
            var viewer = WSViewer(inbound, outbound)
            let size = try await viewer.handshake()
            #expect(size.width == 800 && size.height == 600)
            try await viewer.roundTrip(size)
            try await outbound.close(.normalClosure, reason: nil)
        }
        let viewerEvent = try await waitEvent(h, "r1", "viewer_connected")
        #expect(viewerEvent.data.contains(#""role":"view""#))
        // And an agent through B drives it.
        _ = try await drive("ws://127.0.0.1:\(b)/api/v1/cdp/ws?task_id=r1&token=\(agent)", expecting: "kiosk-agent", dir: h.dir)
        _ = try await waitEvent(h, "r1", "agent_disconnected")
    }
}
