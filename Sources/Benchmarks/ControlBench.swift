// The control API over its Unix socket, on each store: GET /v1/tasks/{id} latency and
// throughput with 1 and 16 clients (keep-alive connections), and an event append followed by
// a read of it (POST …/events, then GET …/events?since=N). Sessions are not booted: a task's
// GET does not touch its browser, and the store is what is measured.
import Control
import Essentials
import Kiosk
import KioskdTestSupport
import Logging
import Store
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// Sessions that are ready at once and never end: the API and the store are what is timed.
final class InstantSessions: SessionProvider {
    let sessionEvents = Broadcast<(session: String, event: SessionEvent)>()

    func startSession(_ settings: SessionSettings) async throws -> SessionInfo {
        SessionInfo(id: settings.id, state: .ready, display: ":0", cdpURL: "http://127.0.0.1:9", vncSocket: "/nonexistent/vnc.sock", websockifyPort: nil,
                    directory: "/nonexistent", pids: [:], end: nil)
    }

    func adoptSession(_ id: String, by task: String, url: String) async throws -> SessionInfo {
        SessionInfo(id: id, state: .ready, display: ":0", cdpURL: "http://127.0.0.1:9", vncSocket: "/nonexistent/vnc.sock", websockifyPort: nil,
                    directory: "/nonexistent", pids: [:], end: nil)
    }

    func sessionMemory() async -> [String: MemoryReading] { [:] }
    func stopSession(_ id: String, reason: String) async {}
    func listSessions() async -> [SessionInfo] { [] }
}

struct ControlResult {
    var single: [Double] = []
    var singleRate = 0.0
    var concurrent: [Double] = []
    var concurrentRate = 0.0
    var appendRead: [Double] = []
}

func benchControl(store: any TaskStore, kind: String, requests: Int) async throws -> ControlResult {
    try await store.migrate()
    let dir = try makeTempDir("kioskd-bench-control")
    defer { removeTree(dir) }
    let logger = { var l = Logger(label: "bench"); l.logLevel = .error; return l }()
    let tokens = await ViewerTokens(secret: Array(repeating: 7, count: 32))
    let service = TaskService(store: store, sessions: InstantSessions(), tokens: tokens, limits: TaskLimits(),
                              template: { id, r in SessionSettings(id: id, url: r.url) }, logger: logger)
    _ = try await service.interruptUnfinished()
    let socket = dir + "/control.sock"
    let server = ControlServer(socketPath: socket, group: nil, allowlist: PeerAllowlist(uids: [getuid()], gids: []))
    let routes = ControlRoutes(service: service, storeKind: kind) { TreeNode(id: "b", kind: "task", status: "running") }
    let ready = OnceValue<Void>()
    let result = try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await service.run() }
        group.addTask { try await server.run(routes, logger: logger) { ready.set(()) } }
        defer { group.cancelAll() }
        try await ready.wait()
        return try await measureControl(ControlClient(socketPath: socket), "bench-\(kind)", requests: requests)
    }
    await store.close()
    return result
}

/// The figures of one store, the daemon serving.
func measureControl(_ client: ControlClient, _ id: String, requests: Int) async throws -> ControlResult {
    _ = try await client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"\#(id)","url":"about:blank"}"#)

    var result = ControlResult()
    // Warm-up: connections, prepared statements, caches.
    _ = try await timedGets(client, id, 500)
    let t0 = monotonic()
    result.single = try await timedGets(client, id, requests)
    result.singleRate = Double(requests) / (monotonic() - t0)

    let clients = 16, each = max(1, requests / clients)
    let t1 = monotonic()
    result.concurrent = try await withThrowingTaskGroup(of: [Double].self) { group in
        for _ in 0..<clients { group.addTask { try await timedGets(client, id, each) } }
        return try await group.reduce(into: []) { $0 += $1 }
    }
    result.concurrentRate = Double(clients * each) / (monotonic() - t1)

    result.appendRead = try await client.withConnection { conn in
        var out: [Double] = []
        for n in 0..<min(requests, 1000) {
            let start = monotonic()
            let posted = try await conn.request(.POST, "/v1/tasks/\(id)/events", json: #"{"type":"agent.step","data":{"n":\#(n)}}"#)
            guard posted.status == 201, let seq = posted.text.split(separator: ",").first?.split(separator: ":").last.flatMap({ Int($0) }) else {
                fail("append answered \(posted.status): \(posted.text)")
            }
            let read = try await conn.request(.GET, "/v1/tasks/\(id)/events?since=\(seq - 1)")
            guard read.status == 200, read.text.contains(#""seq":\#(seq)"#) else { fail("since=\(seq - 1) answered \(read.status): \(read.text)") }
            out.append(monotonic() - start)
        }
        return out
    }
    return result
}

/// `count` GETs of one task on one keep-alive connection; each one's latency.
func timedGets(_ client: ControlClient, _ id: String, _ count: Int) async throws -> [Double] {
    try await client.withConnection { conn in
        var out: [Double] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let start = monotonic()
            let answer = try await conn.request(.GET, "/v1/tasks/\(id)")
            guard answer.status == 200 else { fail("GET answered \(answer.status): \(answer.text)") }
            out.append(monotonic() - start)
        }
        return out
    }
}

func printControl(_ requests: Int) async throws {
    print("\ncontrol API over its Unix socket: GET /v1/tasks/{id} ×\(requests) (1 client), ×\(requests) over 16 clients, \(min(requests, 1000)) append+read")
    print("(client and daemon in one process on this machine; SQLite synchronous=FULL; PostgreSQL 15 with its defaults, fsync on)")
    let sqlite = try await benchControl(store: try SQLiteTaskStore(path: try makeTempDir("kioskd-bench-sqlite") + "/k.sqlite"), kind: "sqlite", requests: requests)
    let pg = try await PostgresFixture.start(durable: true)
    let url = try await pg.createDatabase("bench")
    guard case .postgres(let settings) = try StoreLocation(url: url) else { fail("not a postgres URL") }
    var quiet = Logger(label: "bench.pg")
    quiet.logLevel = .error
    let postgres = try await benchControl(store: try PostgresTaskStore(settings, logger: quiet), kind: "postgres", requests: requests)
    pg.stop()

    print(row("measure", "SQLite", "PostgreSQL"))
    print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    func both(_ name: String, _ f: (ControlResult) -> String) { print(row(name, f(sqlite), f(postgres))) }
    both("GET task, 1 client, p50 (ms)") { ms(percentile($0.single, 0.5)) }
    both("GET task, 1 client, p99 (ms)") { ms(percentile($0.single, 0.99)) }
    both("GET task, 1 client (requests/s)") { String(Int($0.singleRate)) }
    both("GET task, 16 clients, p50 (ms)") { ms(percentile($0.concurrent, 0.5)) }
    both("GET task, 16 clients, p99 (ms)") { ms(percentile($0.concurrent, 0.99)) }
    both("GET task, 16 clients (requests/s)") { String(Int($0.concurrentRate)) }
    both("append event + read since=N, p50 (ms)") { ms(percentile($0.appendRead, 0.5)) }
    both("append event + read since=N, p99 (ms)") { ms(percentile($0.appendRead, 0.99)) }
    print("\ntargets on SQLite: GET p99 ≤ 2 ms, ≥ 5000 requests/s")
}
