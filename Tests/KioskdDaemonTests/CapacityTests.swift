import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Capacity end to end: the real daemon in a real v1 memory cgroup far smaller than what is asked
/// of it, and the warm pool with real sessions.
@Suite("Capacity", .serialized)
struct CapacityTests {
    let kioskd: String
    let dir: String

    init() throws {
        kioskd = try builtProduct("kioskd")
        dir = try makeTempDir("kioskd-capacity")
    }

    /// A v1 memory group with `limit` under this process's own, for the daemon to run in.
    func memoryGroup(limit: UInt64) throws -> String {
        guard let own = try readText("/proc/self/cgroup").split(separator: "\n").first(where: { $0.contains(":memory:") })?
            .split(separator: ":", maxSplits: 2).last else {
            throw TestFailure("no cgroup v1 memory controller here (/proc/self/cgroup has no memory line): these tests need the hybrid layout of docs/notes/cgroups-and-cold-start.md")
        }
        let path = "/sys/fs/cgroup/memory" + (own == "/" ? "" : String(own)) + "/kioskd-test-" + randomHex(4)
        guard mkdir(path, 0o755) == 0 else { throw TestFailure("cannot create \(path): errno \(errno) (the tests run as root)") }
        try writeFile(path + "/memory.limit_in_bytes", "\(limit)")
        return path
    }

    /// OOM kills counted in a v1 group and every group below it.
    func oomKills(under path: String) -> Int {
        var total = 0
        if let text = try? readText(path + "/memory.oom_control"),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("oom_kill ") }) {
            total += Int(line.split(separator: " ").last ?? "") ?? 0
        }
        var st = stat()
        for name in directoryEntries(path) where stat(path + "/" + name, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR {
            total += oomKills(under: path + "/" + name)
        }
        return total
    }

    /// The daemon, started inside `group` (a shell joins it, then execs kioskd).
    func startDaemon(in group: String?, _ extra: String) throws -> (DaemonProcess, ControlClient) {
        let path = dir + "/kioskd.yaml"
        try writeFile(path, testDaemonConfig(dir: dir, port: try freePort(), extra))
        let exec = "exec \(kioskd) serve --config \(path)"
        let command = group.map { "echo $$ > \($0)/cgroup.procs && " + exec } ?? exec
        let daemon = try DaemonProcess(executable: "/bin/sh", arguments: ["-c", command],
                                       environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
        return (daemon, ControlClient(socketPath: dir + "/run/control.sock"))
    }

    /// A task's create body: replayed (with ?wait=true) it waits for the same task.
    func body(_ id: String) -> String {
        #"{"task_id":"\#(id)","url":"\#(testPage(id))","timeout_s":600}"#
    }

    func json(_ answer: ControlClient.Answer) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(answer.body))
    }

    func stateOf(_ client: ControlClient, _ id: String) async throws -> String {
        try json(try await client.request(.GET, "/v1/tasks/\(id)"))["state"]?.string ?? "?"
    }

    /// The browser of a running task answers CDP: its version endpoint, then a page evaluation.
    func servesCDP(_ client: ControlClient, _ id: String) async throws -> Bool {
        let task = try json(try await client.request(.GET, "/v1/tasks/\(id)"))
        guard let cdp = task["session"]?["cdp_url"]?.string else { throw TestFailure("\(id) has no CDP URL: \(task)") }
        let info = SessionInfo(id: id, state: .ready, display: "", cdpURL: cdp, vncSocket: "", websockifyPort: nil, directory: "", pids: [:], end: nil)
        return try await withPage(info) { cdp, session in try await evaluate(cdp, session, "String(6 * 7)") } == "42"
    }

    @Test(.timeLimit(.minutes(4))) func inACgroupFarSmallerThanAskedNothingIsOOMKilledAndTasksQueueInsteadOfFailing() async throws {
        defer { removeTree(dir) }
        let limit: UInt64 = 1 << 30
        let group = try memoryGroup(limit: limit)
        defer { rmdir(group) }
        let (daemon, client) = try startDaemon(in: group, """
            tasks:
              max_sessions: 8
            capacity:
              reserve: 128MiB
              session_estimate: 256MiB
            sessions:
              displays: 950-979
              ports: 13500-13999
              width: 800
              height: 600
            """)
        try await daemon.log.wait(for: "the control socket", timeout: .seconds(60)) { $0.contains("kioskd/control: ready") }
        let capacity = try json(try await client.request(.GET, "/v1/capacity"))
        #expect(capacity["memory_budget_bytes"]?.number == Double(limit - (128 << 20)), "the budget is the group's limit less the reserve: \(capacity)")

        // Twelve tasks, eight slots: what 1 GiB holds runs, the rest waits.
        let ids = (1...12).map { "mem-\($0)" }
        for id in ids {
            let created = try await client.request(.POST, "/v1/tasks", json: body(id))
            #expect(created.status == 201, "\(created.text)")
        }
        // Every admitted task runs (each waited on by a replayed create with ?wait=true, which
        // answers once it is running or final), until none is starting.
        let running = try await withTimeout(.seconds(150), "the admitted tasks to run") { () -> [String] in
            while true {
                var states: [String: String] = [:]
                for id in ids { states[id] = try await stateOf(client, id) }
                #expect(!states.values.contains("failed"), "no task fails for memory: \(states)")
                let starting = ids.filter { states[$0] == "starting" }
                if starting.isEmpty { return ids.filter { states[$0] == "running" } }
                for id in starting { _ = try await client.request(.POST, "/v1/tasks?wait=true", json: body(id)) }
            }
        }
        let queued = try await ids.asyncFilter { try await stateOf(client, $0) == "queued" }
        #expect(running.count >= 2 && running.count < 8, "memory, not the slots, holds the rest: \(running.count) running")
        #expect(running.count + queued.count == ids.count, "every task running or queued")
        for id in running { #expect(try await servesCDP(client, id), "\(id) serves CDP") }

        // A stopped one lets the oldest queued one start.
        #expect(try await client.request(.POST, "/v1/tasks/\(running[0])/stop", json: "{}").status == 200)
        let next = try #require(queued.first)
        #expect(try json(try await client.request(.POST, "/v1/tasks?wait=true", json: body(next)))["state"]?.string == "running")
        #expect(try await servesCDP(client, next))
        #expect(oomKills(under: group) == 0, "nothing in the daemon's cgroup was OOM-killed")

        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit(timeout: .seconds(60)) == 0, "\(daemon.stderr.suffix(2000))")
        #expect(oomKills(under: group) == 0)
    }

    @Test(.timeLimit(.minutes(3))) func aTaskTakesAWarmSessionWithItsPageLoadedSharesNothingWithTheLastAndADrainEmptiesThePool() async throws {
        defer { removeTree(dir) }
        let (daemon, client) = try startDaemon(in: nil, """
            sessions:
              warm: 1
              displays: 980-999
              ports: 14000-14499
              width: 800
              height: 600
            """)
        try await daemon.log.wait(for: "the control socket", timeout: .seconds(60)) { $0.contains("kioskd/control: ready") }
        try await daemon.log.wait(for: "a warm session", timeout: .seconds(60)) { $0.contains("warm session ready") }
        /// Waits for the n-th "warm session ready" line.
        func warmReady(_ n: Int) async throws {
            while true {
                let seen = daemon.log.items.enumerated().filter { $0.element.contains("warm session ready") }
                guard seen.count < n, let last = seen.last else { return }
                try await daemon.log.wait(for: "warm session \(n)", after: last.offset + 1, timeout: .seconds(60)) { $0.contains("warm session ready") }
            }
        }
        let listen = try #require(try readText(dir + "/kioskd.yaml").split(separator: "\n").first { $0.contains("listen:") }?.split(separator: " ").last)
        // A page of an http origin (the public listener's own), so it has storage and cookies.
        let page = "http://\(listen)/health"

        func take(_ id: String) async throws -> JSONValue {
            let task = try json(try await client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"\#(id)","url":"\#(page)"}"#))
            #expect(task["state"]?.string == "running", "\(task)")
            return task
        }
        func inPage(_ task: JSONValue, _ expression: String) async throws -> String {
            let info = SessionInfo(id: "", state: .ready, display: "", cdpURL: task["session"]?["cdp_url"]?.string ?? "", vncSocket: "",
                                   websockifyPort: nil, directory: "", pids: [:], end: nil)
            return try await withPage(info) { cdp, session in try await evaluate(cdp, session, expression) }
        }

        let first = try await take("warm-1")
        let events = try json(try await client.request(.GET, "/v1/tasks/warm-1/events")).array ?? []
        #expect(events.contains { $0["type"]?.string == "session_booting" && $0["data"]?["warm_session"]?.string?.hasPrefix("w-") == true },
                "it took the warm session: \(events)")
        #expect(try await inPage(first, "location.href + ' ' + document.readyState") == page + " complete", "its page is loaded when it is running")
        #expect(try await inPage(first, "String(history.length)") == "1", "the pool's blank page is not in its history")
        _ = try await inPage(first, "localStorage.setItem('k', 'first'); document.cookie = 'c=first; max-age=3600'; history.pushState({}, '', '?visited'); 'ok'")
        #expect(try await client.request(.POST, "/v1/tasks/warm-1/stop", json: "{}").status == 200)

        // The pool refills with a new session; the next task shares nothing with the first.
        try await warmReady(2)
        let second = try await take("warm-2")
        #expect(first["session"]?["cdp_url"] != second["session"]?["cdp_url"], "another browser")
        #expect(try await inPage(second, "String(localStorage.getItem('k')) + '|' + document.cookie + '|' + history.length") == "null||1")

        // A drain gives the refilled pool up.
        try await warmReady(3)
        #expect(try json(try await client.request(.GET, "/v1/capacity"))["warm"]?.number == 1)
        _ = try await client.request(.POST, "/v1/drain")
        try await daemon.log.wait(for: "the pool to be given up", timeout: .seconds(30)) { $0.contains("giving up a warm session") }
        try await daemon.log.wait(for: "the warm session to end", timeout: .seconds(30)) { $0.contains("warm session ended") }
        let sessions = try json(try await client.request(.GET, "/v1/sessions")).array ?? []
        #expect(sessions.count == 1, "only warm-2's session is left: \(sessions)")

        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit(timeout: .seconds(60)) == 0, "\(daemon.stderr.suffix(2000))")
    }
}

extension Array where Element: Sendable {
    func asyncFilter(_ keep: (Element) async throws -> Bool) async rethrows -> [Element] {
        var out: [Element] = []
        for e in self where try await keep(e) { out.append(e) }
        return out
    }
}
