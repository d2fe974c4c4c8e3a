import ArgumentParser
import Control
import Essentials
import FoundationEssentials
import Kiosk
import NIOHTTP1
import Supervision

/// Where the client commands find the daemon, and how they print.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "The control socket (default: $KIOSKD_SOCKET, or /run/kioskd/control.sock).")
    var socket: String?

    @Flag(name: .long, help: "Print the API's JSON instead of a table.")
    var json = false

    var client: ControlClient {
        ControlClient(socketPath: socket ?? currentEnvironment()["KIOSKD_SOCKET"] ?? "/run/kioskd/control.sock")
    }

    /// One request; an API error or an unreachable socket is a message and exit status 1.
    func call(_ method: HTTPMethod, _ path: String, json body: String? = nil) async throws -> JSONValue {
        let answer: ControlClient.Answer
        do {
            answer = try await client.request(method, path, json: body)
        } catch {
            printError("kioskd: cannot reach kioskd at \(client.socketPath): \(error) (is it running? --socket or KIOSKD_SOCKET)")
            throw ExitCode.failure
        }
        let value = (try? JSONDecoder().decode(JSONValue.self, from: Data(answer.body))) ?? .null
        guard (200..<300).contains(answer.status) else {
            let message = value["error"]?["message"]?.string ?? answer.text
            printError("kioskd: \(message) (\(value["error"]?["code"]?.string ?? "error"), HTTP \(answer.status))")
            throw ExitCode.failure
        }
        if json { print(answer.text, terminator: answer.text.hasSuffix("\n") ? "" : "\n") }
        return value
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "The daemon's health and its session slots.")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        let health = try await options.call(.GET, "/v1/health")
        guard !options.json else { return }
        let capacity = try await options.call(.GET, "/v1/capacity")
        print("kioskd \(health["status"]?.string ?? "?") · store \(health["store"]?.string ?? "?") · "
              + "\(capacity["active"].map(integer) ?? "?")/\(capacity["max_sessions"].map(integer) ?? "?") sessions · "
              + "\(capacity["queued"].map(integer) ?? "?") queued")
    }
}

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster", abstract: "Cluster mode: the hosts, their leases and room, and the shared queue.")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        let cluster = try await options.call(.GET, "/v1/cluster")
        guard !options.json else { return }
        for host in cluster["hosts"]?.array ?? [] {
            let name = (host["id"]?.string ?? "?") + (host["self"]?.bool == true ? " (this host)" : "")
            let state = host["alive"]?.bool == true ? (host["draining"]?.bool == true ? "draining" : "alive") : "dead"
            print("\(name) \(host["address"]?.string ?? "?") · \(state) · epoch \(host["epoch"].map(integer) ?? "?") · "
                  + "\(host["active"].map(integer) ?? "?")/\(host["max_sessions"].map(integer) ?? "?") sessions, \(host["available"].map(integer) ?? "?") free · "
                  + "renewed \(host["lease_age_ms"].map(integer) ?? "?") ms ago")
        }
        let signals = cluster["signals"]
        print("queue \(signals?["queue_depth"].map(integer) ?? "?") (oldest \(signals?["oldest_queued_seconds"]?.number ?? 0) s) · "
              + "running \(signals?["running"].map(integer) ?? "?") · free \(signals?["free_slots"].map(integer) ?? "?") · "
              + "suggested hosts \(signals?["suggested_hosts"].map(integer) ?? "?")")
    }
}

struct TaskCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "task", abstract: "Start, inspect and stop tasks.",
        subcommands: [TaskStart.self, TaskGet.self, TaskList.self, TaskStop.self, TaskEvents.self])
}

struct TaskStart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a task: a kiosk session on a URL.")
    @OptionGroup var options: ClientOptions
    @Option(help: "The page the kiosk opens.") var url: String
    @Option(help: "Your task id (a retried start with it never starts a second browser).") var id: String?
    @Option(help: "Screen width.") var width: Int?
    @Option(help: "Screen height.") var height: Int?
    @Option(help: "What viewers may do: control or view.") var input: String?
    @Option(help: "A JSON object kept with the task.") var metadata: String?
    @Flag(help: "Answer once the task is running (at most 25 s).") var wait = false

    func run() async throws {
        var w = JSONWriter()
        if let id { w.field("task_id", id) }
        w.field("url", url)
        if let width { w.field("width", Int64(width)) }
        if let height { w.field("height", Int64(height)) }
        if let input { w.field("input", input) }
        if let metadata { w.raw("metadata", metadata) }
        let task = try await options.call(.POST, "/v1/tasks" + (wait ? "?wait=true" : ""), json: w.text)
        if !options.json { printTask(task) }
    }
}

struct TaskGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "One task.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The task id.") var id: String

    func run() async throws {
        let task = try await options.call(.GET, "/v1/tasks/\(id)")
        if !options.json { printTask(task) }
    }
}

struct TaskList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Tasks, newest first.")
    @OptionGroup var options: ClientOptions
    @Option(help: "Only these states, comma-separated (queued,starting,running,…).") var state: String?
    @Option(help: "At most this many.") var limit = 50

    func run() async throws {
        var path = "/v1/tasks?limit=\(limit)"
        if let state { path += "&state=\(state)" }
        let tasks = try await options.call(.GET, path)
        guard !options.json else { return }
        var rows = [["TASK", "STATE", "CREATED", "URL"]]
        for t in tasks.array ?? [] {
            rows.append([t["task_id"]?.string ?? "", t["state"]?.string ?? "", t["created_at"]?.string ?? "",
                         String((t["request"]?["url"]?.string ?? "").prefix(60))])
        }
        printTable(rows)
    }
}

struct TaskStop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Cancel a task; its session stops.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The task id.") var id: String
    @Option(help: "Why (kept with the task).") var reason: String?

    func run() async throws {
        var w = JSONWriter()
        if let reason { w.field("reason", reason) }
        let task = try await options.call(.POST, "/v1/tasks/\(id)/stop", json: w.text)
        if !options.json { printTask(task) }
    }
}

struct TaskEvents: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "A task's events; --follow streams them until the task ends.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The task id.") var id: String
    @Option(help: "Only events after this sequence number.") var since = 0
    @Flag(help: "Keep printing new events (server-sent events) until the task is final.") var follow = false

    func run() async throws {
        guard follow else {
            let events = try await options.call(.GET, "/v1/tasks/\(id)/events?since=\(since)")
            if !options.json { for e in events.array ?? [] { printEvent(e) } }
            return
        }
        var pending: [UInt8] = []
        let status = try await options.client.withConnection { conn in
            try await conn.stream("/v1/tasks/\(id)/events?since=\(since)") { chunk in
                pending += chunk
                // One event per blank-line-terminated block; its data line is the event's JSON.
                while let end = pending.firstRange(of: [0x0A, 0x0A]) {
                    let block = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
                    pending.removeSubrange(..<end.upperBound)
                    for line in block.split(separator: "\n") where line.hasPrefix("data: ") {
                        let json = String(line.dropFirst(6))
                        if options.json {
                            print(json)
                        } else if let e = try? JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)) {
                            printEvent(e)
                        }
                    }
                }
                return true
            }
        }
        guard status == 200 else {
            printError("kioskd: following the events failed (HTTP \(status)); is the task id right?")
            throw ExitCode.failure
        }
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "A short-lived viewer (or agent) token for a task.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The task id.") var id: String
    @Option(help: "view or control (a viewer), or agent (the task's CDP endpoint, /api/v1/cdp/ws).") var role = "view"
    @Option(help: "Lifetime in seconds (10–3600).") var ttl = 300

    func run() async throws {
        let token = try await options.call(.POST, "/v1/tasks/\(id)/viewer-token", json: #"{"role":"\#(role)","ttl_s":\#(ttl)}"#)
        if !options.json {
            print(token["token"]?.string ?? "")
            printError("role \(token["role"]?.string ?? "?"), expires \(token["expires_at"]?.string ?? "?")")
        }
    }
}

struct DrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Take no new tasks; running ones go on.",
        discussion: "With --wait, returns once no task is left or after that many seconds (exit 1 if some are): a scale-in hook or ExecStop.")
    @OptionGroup var options: ClientOptions
    @Option(help: "Seconds to wait for the last task to end (0–3600).") var wait: Int?

    func run() async throws {
        let answer = try await options.call(.POST, "/v1/drain" + (wait.map { "?wait=\($0)" } ?? ""))
        if !options.json {
            print("draining: \(answer["active"].map(integer) ?? "?") active, \(answer["queued"].map(integer) ?? "?") queued")
        }
        if wait != nil, answer["drained"]?.bool != true { throw ExitCode(1) }
    }
}

private func integer(_ v: JSONValue) -> String { v.number.map { String(Int($0)) } ?? "?" }

private func printTask(_ t: JSONValue) {
    var rows: [[String]] = [
        ["task", t["task_id"]?.string ?? ""], ["state", t["state"]?.string ?? ""], ["created", t["created_at"]?.string ?? ""],
        ["url", t["request"]?["url"]?.string ?? ""],
    ]
    if let reason = t["reason"]?.string { rows.append(["reason", reason]) }
    if let cdp = t["session"]?["cdp_url"]?.string { rows.append(["cdp", cdp]) }
    if let display = t["session"]?["display"]?.string { rows.append(["display", display]) }
    if let viewer = t["session"]?["viewer_path"]?.string { rows.append(["viewer", viewer]) }
    rows.append(["events", t["last_event"].map(integer) ?? "0"])
    printTable(rows)
}

private func printEvent(_ e: JSONValue) {
    let data = e["data"].map { BodyText.compact($0) } ?? "{}"
    print("\(e["seq"].map(integer) ?? "?")\t\(e["time"]?.string ?? "")\t\(e["type"]?.string ?? "")\t\(data)")
}

private func printTable(_ rows: [[String]]) {
    guard let columns = rows.map(\.count).max() else { return }
    let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    for row in rows {
        print(row.enumerated().map { c, cell in c == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count) }
            .joined(separator: "  "))
    }
}

enum BodyText {
    static func compact(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? ""
    }
}
