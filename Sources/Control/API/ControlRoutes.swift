import Essentials
import FoundationEssentials
import HTTPTypes
import Hummingbird
import Kiosk
import NIOCore
import Store
import Supervision

/// The control API's routes (docs: openapi.json, served at GET /v1/openapi.json).
public struct ControlRoutes: Sendable {
    let service: TaskService
    /// The supervision tree, for GET /v1/tree.
    let tree: @Sendable () async -> TreeNode
    let storeKind: String
    /// The Prometheus exposition of every metric, for GET /metrics.
    let metrics: @Sendable () -> [UInt8]

    public init(service: TaskService, storeKind: String, metrics: @escaping @Sendable () -> [UInt8] = { [] },
                tree: @escaping @Sendable () async -> TreeNode) {
        self.service = service
        self.storeKind = storeKind
        self.metrics = metrics
        self.tree = tree
    }

    public func router(allowlist: PeerAllowlist) -> Router<ControlContext> { table(allowlist: allowlist).router }

    /// The router with every route, and what was registered (openapi.json documents exactly that).
    func table(allowlist: PeerAllowlist) -> MethodTable {
        let router = Router(context: ControlContext.self)
        router.middlewares.add(JSONErrors())
        router.middlewares.add(PeerCheck(allowlist: allowlist))
        let service = self.service
        let routes = MethodTable(router)

        routes.get("/v1/health") { _, _ in
            let capacity = await service.capacity()
            var w = JSONWriter()
            w.field("status", capacity.draining ? "draining" : "ok")
            w.field("store", storeKind)
            w.field("active", Int64(capacity.active))
            return json(w.text)
        }
        routes.get("/v1/openapi.json") { _, _ in json(OpenAPI.document) }
        let metrics = self.metrics
        routes.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: metrics())))
        }
        routes.get("/v1/tree") { _, _ in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return json(String(decoding: try encoder.encode(await tree()), as: UTF8.self))
        }
        routes.get("/v1/sessions") { _, _ in
            json(JSONWriter.array(await service.sessions.listSessions().map(TaskJSON.session)))
        }
        routes.get("/v1/capacity") { _, _ in
            var w = JSONWriter()
            await service.capacity().write(into: &w)
            return json(w.text)
        }
        routes.get("/v1/cluster") { _, _ in
            guard let cluster = service.cluster else {
                throw APIError(.notFound, "not_clustered", "this host is not in cluster mode (cluster.enabled is false)")
            }
            return json(ClusterJSON.view(try await cluster.store.view(), me: cluster.hostID))
        }
        routes.post("/v1/drain") { request, _ in
            let wait = try query(request, "wait", as: Int.self, QueryRules.drainWaitSeconds)
            var (active, queued) = await service.drain()
            if let wait, active + queued > 0 { (active, queued) = await service.waitDrained(timeout: .seconds(wait)) }
            var w = JSONWriter()
            w.field("status", "draining")
            w.field("active", Int64(active))
            w.field("queued", Int64(queued))
            w.field("drained", active + queued == 0)
            return json(w.text)
        }

        routes.post("/v1/tasks") { request, context in
            let wait = try query(request, "wait", as: Bool.self) == true
            let create = try CreateTask(body: try await body(request, context))
            var (task, created) = try await service.create(create)
            if wait {
                task = try await service.waitRunning(task.id, timeout: service.limits.waitLimit)
            }
            return json(TaskJSON.task(task), status: created ? .created : .ok)
        }
        routes.get("/v1/tasks") { request, _ in
            let states = try query(request, "state", as: String.self).map { text throws(APIError) in try QueryRules.states(text) }
            let limit = try query(request, "limit", as: Int.self, QueryRules.taskLimit) ?? QueryRules.taskLimitDefault
            return json(JSONWriter.array(try await service.store.tasks(states: states, limit: limit).map(TaskJSON.task)))
        }
        routes.get("/v1/tasks/{id}") { _, context in
            json(TaskJSON.task(try await service.task(try context.parameters.require("id"))))
        }
        for (path, command) in [("stop", TaskCommand.cancel), ("complete", .complete), ("fail", .fail)] {
            routes.post("/v1/tasks/{id}/\(path)") { request, context in
                let end = try EndRequest(body: try await body(request, context), allowResult: command == .complete)
                let task = try await service.command(try context.parameters.require("id"), command, reason: end.reason, result: end.result)
                return json(TaskJSON.task(task))
            }
        }
        routes.post("/v1/tasks/{id}/events") { request, context in
            let append = try AppendEvent(body: try await body(request, context))
            let stored = try await service.append(try context.parameters.require("id"), type: append.type, data: append.data)
            return json(TaskJSON.event(stored), status: .created)
        }
        routes.get("/v1/tasks/{id}/events") { request, context in
            let id = try context.parameters.require("id")
            var since = try query(request, "since", as: Int.self, QueryRules.since) ?? 0
            if let resume = request.headers[HTTPField.Name("Last-Event-ID")!], let n = Int(resume), n >= 0 { since = n }
            // Checked before the stream too: a parameter out of its range is a 400 either way.
            let limit = try query(request, "limit", as: Int.self, QueryRules.eventLimit) ?? QueryRules.eventLimitDefault
            let wait = try query(request, "wait", as: Int.self, QueryRules.eventWaitSeconds).map { Duration.seconds($0) }
            if request.headers[.accept]?.contains("text/event-stream") == true {
                _ = try await service.task(id)
                return stream(id, after: Int64(since))
            }
            let events = try await service.events(id, since: Int64(since), limit: limit, wait: wait)
            return json(JSONWriter.array(events.map(TaskJSON.event)))
        }
        routes.post("/v1/tasks/{id}/viewer-token") { request, context in
            let ask = try TokenRequest(body: try await body(request, context))
            let id = try context.parameters.require("id")
            let token: (token: String, taskID: String, expiresAt: Int64)
            if let role = ask.role.viewer {
                let minted = try await service.viewerToken(id, role: role, ttl: ask.ttl)
                token = (minted.token, minted.taskID, minted.expiresAt)
            } else {
                let minted = try await service.agentToken(id, ttl: ask.ttl)
                token = (minted.token, minted.taskID, minted.expiresAt)
            }
            var w = JSONWriter()
            w.field("token", token.token)
            w.field("task_id", token.taskID)
            w.field("role", ask.role.rawValue)
            w.field("expires_at", TaskJSON.rfc3339(token.expiresAt))
            return json(w.text, status: .created)
        }
        routes.refuseOtherMethods()
        return routes
    }

    /// Server-sent events: each stored event as `id: seq`, `event: type`, `data: {…}`; a comment
    /// every 15 s keeps proxies from timing out; ends once the task is final and all is sent.
    private func stream(_ id: String, after: Int64) -> Response {
        let service = self.service
        let body = ResponseBody { writer in
            var last = after
            while true {
                let updates = service.appended.subscribe()
                let batch = try await service.store.events(id, after: last, limit: 500)
                for e in batch {
                    try await writer.write(ByteBuffer(string: "id: \(e.seq)\nevent: \(e.type)\ndata: \(TaskJSON.event(e))\n\n"))
                    last = e.seq
                }
                guard batch.isEmpty else { continue }
                guard let task = try await service.store.task(id), !(task.state.isFinal && last >= task.lastSeq) else { break }
                let arrived = try? await withTimeout(.seconds(15), "an event") {
                    for await e in updates where e.taskID == id { return true }
                    return false
                }
                if arrived == nil { try await writer.write(ByteBuffer(string: ": keep-alive\n\n")) }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

private func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text + "\n")))
}

private func body(_ request: Request, _ context: ControlContext) async throws -> [UInt8] {
    var request = request
    let buffer = try await request.collectBody(upTo: context.maxUploadSize)
    return Array(buffer.readableBytesView)
}

/// A query parameter, checked: a wrong one is a 400 naming it, never silently ignored.
private func query<T>(_ request: Request, _ name: String, as: T.Type, _ range: ClosedRange<Int>? = nil) throws(APIError) -> T? {
    guard let text = request.uri.queryParameters.get(name) else { return nil }
    if T.self == Bool.self {
        guard text == "true" || text == "false" || text == "1" || text == "0" else { throw .badRequest("query '\(name)' must be true or false, got '\(text)'") }
        return (text == "true" || text == "1") as? T
    }
    if T.self == Int.self {
        guard let n = Int(text), range.map({ $0.contains(n) }) ?? true else {
            throw .badRequest("query '\(name)' must be a whole number" + (range.map { " from \($0.lowerBound) to \($0.upperBound)" } ?? "") + ", got '\(text)'")
        }
        return n as? T
    }
    return text as? T
}
