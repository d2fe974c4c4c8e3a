// Soak with chaos: N tasks, each with a viewer (a child process speaking RFB over the bridge)
// and an agent (CDP evaluations), for T seconds, while session programs, viewers and — a few
// times — the daemon itself are kill -9ed at random intervals (the daemon restarted at once, as
// systemd would). Every task event the API acknowledged is checked afterwards, and once the
// daemon has stopped, nothing of the run may be left: processes, session directories, cgroups,
// shared memory segments, X sockets. Violations fail the run (exit 1).
import Control
import Dispatch
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct SoakFigures {
    var kills: [String: Int] = [:]
    var daemonRestarts = 0
    var viewerKills = 0
    var viewerConnects = 0
    var tasksCreated = 0
    var appended = 0
    var cdpOK = 0
    var cdpFailed = 0
    var cdpFirstFailure: String?
    /// Evaluations given up after 5 s, their connection still waiting (see `abandonable`).
    var cdpHung = 0
}

/// The daemon of the soak: killed and restarted on the same directory and config.
final class SoakDaemon: @unchecked Sendable {
    let dir: String
    let port: Int
    let client: ControlClient
    private(set) var process: DaemonProcess

    init(sessions: Int) async throws {
        dir = try makeTempDir("kioskd-soak")
        port = try freePort()
        try writeText(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: port, """
            tasks:
              max_sessions: \(sessions + 1)
            sessions:
              displays: 900-949
              ports: 32000-32399
            """))
        client = ControlClient(socketPath: dir + "/run/control.sock")
        process = try await Self.start(dir)
    }

    private static func start(_ dir: String) async throws -> DaemonProcess {
        let process = try DaemonProcess(executable: sibling("kioskd"), arguments: ["serve", "--config", dir + "/kioskd.yaml"],
                                        environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
        try await process.log.wait(for: "kioskd's control socket", timeout: .seconds(90)) { $0.contains("kioskd/control: ready") }
        return process
    }

    func killAndRestart() async throws {
        process.signal(SIGKILL)
        _ = try await process.waitExit()
        process = try await Self.start(dir)
    }

    func stop() async throws -> Int32 {
        process.signal(SIGTERM)
        return try await process.waitExit(timeout: .seconds(90))
    }

    func get(_ path: String) async throws -> (Int, JSONValue) {
        Self.decoded(try await client.request(.GET, path))
    }

    func post(_ path: String, _ body: String) async throws -> (Int, JSONValue) {
        Self.decoded(try await client.request(.POST, path, json: body))
    }

    private static func decoded(_ answer: ControlClient.Answer) -> (Int, JSONValue) {
        (answer.status, (try? JSONDecoder().decode(JSONValue.self, from: Data(answer.body))) ?? .null)
    }
}

/// What the run acknowledged: per task, the seq of each appended event and its ordinal.
final class SoakLedger: Sendable {
    private let state = Mutex<[String: [(seq: Int, n: Int)]]>([:])
    func record(_ task: String, seq: Int, n: Int) { state.withLock { $0[task, default: []].append((seq, n)) } }
    var all: [String: [(seq: Int, n: Int)]] { state.withLock { $0 } }
}

func runSoak(sessions: Int, seconds: Int) async throws {
    print("\nsoak: \(sessions) tasks with a viewer and an agent each, \(seconds) s of kill -9 (session programs, viewers, the daemon)")
    let before = leftovers(displays: 900...949, runDir: nil)
    let daemon = try await SoakDaemon(sessions: sessions)
    let ledger = SoakLedger()
    var figures = SoakFigures()
    var viewers: [String: pid_t] = [:]
    var next = 0
    var random = SystemRandomNumberGenerator()
    let start = monotonic(), deadline = start + Double(seconds)
    // The daemon is killed at a third and two thirds of the run.
    var daemonKills = [start + Double(seconds) / 3, start + 2 * Double(seconds) / 3]
    var nextChaos = start + 2

    while monotonic() < deadline {
        // Keep N tasks running, each with a viewer.
        let (_, listed) = try await daemon.get("/v1/tasks?state=running,starting,queued&limit=100")
        var active = (listed.array ?? []).compactMap { $0["task_id"]?.string }
        while active.count < sessions {
            let id = "soak-\(next)"
            next += 1
            let (status, task) = try await daemon.post("/v1/tasks?wait=true", #"{"task_id":"\#(id)","url":"data:text/html,<title>\#(id)</title>soak","timeout_s":60}"#)
            figures.tasksCreated += 1
            guard status == 201 || status == 200 else { throw TestFailure("create \(id): \(status) \(task)") }
            active.append(id)
        }
        for (id, pid) in viewers where waitpid(pid, nil, WNOHANG) != 0 || !active.contains(id) {
            kill(pid, SIGKILL)
            _ = waitpid(pid, nil, 0)
            viewers[id] = nil
        }
        for id in active where viewers[id] == nil {
            let (status, token) = try await daemon.post("/v1/tasks/\(id)/viewer-token", #"{"role":"view"}"#)
            guard status == 201, let token = token["token"]?.string else { continue }
            viewers[id] = try spawnViewer(port: daemon.port, path: "/api/v1/vnc/ws?task_id=\(id)&token=\(token)")
            figures.viewerConnects += 1
        }
        // The agent's step: an event appended, and an evaluation over CDP.
        for id in active {
            let n = figures.appended
            let (status, event) = try await daemon.post("/v1/tasks/\(id)/events", #"{"type":"agent.step","data":{"n":\#(n)}}"#)
            if status == 201, let seq = event["seq"]?.number {
                ledger.record(id, seq: Int(seq), n: n)
                figures.appended += 1
            }
            let (_, task) = try await daemon.get("/v1/tasks/\(id)")
            if let cdp = task["session"]?["cdp_url"]?.string {
                let info = SessionInfo(id: id, state: .ready, display: "", cdpURL: cdp, vncSocket: "", websockifyPort: nil, directory: "", pids: [:], end: nil)
                switch await abandonable(.seconds(5), { try await withPage(info) { cdp, session in try await evaluate(cdp, session, "String(6*7)") } }) {
                case .success("42")?: figures.cdpOK += 1
                case .success(let value)?:
                    figures.cdpFailed += 1
                    figures.cdpFirstFailure = figures.cdpFirstFailure ?? "6*7 evaluated to '\(value)'"
                case .failure(let error)?:
                    figures.cdpFailed += 1
                    figures.cdpFirstFailure = figures.cdpFirstFailure ?? "\(error)"
                case nil: figures.cdpHung += 1
                }
            }
        }
        // Chaos.
        let now = monotonic()
        if let at = daemonKills.first, now >= at {
            daemonKills.removeFirst()
            try await daemon.killAndRestart()
            figures.daemonRestarts += 1
        } else if now >= nextChaos {
            nextChaos = now + Double.random(in: 1.0...3.0, using: &random)
            if Int.random(in: 0..<5, using: &random) == 0, let (id, pid) = viewers.randomElement(using: &random) {
                kill(pid, SIGKILL)
                _ = waitpid(pid, nil, 0)
                viewers[id] = nil
                figures.viewerKills += 1
            } else {
                let victims = sessionPrograms(daemon.dir)
                if let (pid, name) = victims.randomElement(using: &random) {
                    kill(pid, SIGKILL)
                    figures.kills[name, default: 0] += 1
                }
            }
        }
    }

    // Every acknowledged event is there, in order, numbered without gaps.
    var violations: [String] = []
    var verified = 0
    let (_, everything) = try await daemon.get("/v1/tasks?limit=1000")
    let tasks = everything.array ?? []
    for (id, acked) in ledger.all {
        var events: [JSONValue] = []
        while true {
            let (_, page) = try await daemon.get("/v1/tasks/\(id)/events?since=\(events.count)&limit=1000")
            guard let page = page.array, !page.isEmpty else { break }
            events += page
        }
        let seqs = events.map { Int($0["seq"]?.number ?? 0) }
        if seqs != (0..<seqs.count).map({ $0 + 1 }) { violations.append("\(id): seqs are not 1…\(seqs.count)") }
        for (seq, n) in acked {
            guard seq >= 1, seq <= events.count, events[seq - 1]["type"]?.string == "agent.step", events[seq - 1]["data"]?["n"]?.number == Double(n) else {
                violations.append("\(id): acknowledged event seq \(seq) (n \(n)) is missing or changed")
                continue
            }
            verified += 1
        }
    }
    var states: [String: Int] = [:], reasons: [String: Int] = [:]
    for task in tasks {
        let state = task["state"]?.string ?? "?"
        states[state, default: 0] += 1
        let reason = task["reason"]?.string ?? ""
        if ["failed", "interrupted", "timed_out", "cancelled", "completed"].contains(state), reason.isEmpty {
            violations.append("\(task["task_id"]?.string ?? "?") is \(state) without a reason")
        }
        if state != "running" { reasons["\(state): \(reason.prefix(70))", default: 0] += 1 }
    }
    for pid in viewers.values {
        kill(pid, SIGKILL)
        _ = waitpid(pid, nil, 0)
    }
    let exit = try await daemon.stop()
    if exit != 0 { violations.append("kioskd exited \(exit) on SIGTERM") }
    let after = leftovers(displays: 900...949, runDir: daemon.dir)
    let left = after.subtracting(before)
    violations += left.sorted()
    removeTree(daemon.dir)

    print(row("soak", "count", ""))
    print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), ""))
    print(row("run (s), tasks at once", "\(Int(monotonic() - start)), \(sessions)", ""))
    for (name, n) in figures.kills.sorted(by: { $0.key < $1.key }) { print(row("kill -9 \(name)", "\(n)", "")) }
    print(row("kill -9 viewer / viewer connects", "\(figures.viewerKills) / \(figures.viewerConnects)", ""))
    print(row("kill -9 kioskd (restarted at once)", "\(figures.daemonRestarts)", ""))
    print(row("tasks created", "\(figures.tasksCreated)", ""))
    for (state, n) in states.sorted(by: { $0.key < $1.key }) { print(row("tasks \(state)", "\(n)", "")) }
    // A failed task is a session that spent its restart budget (or could not start).
    for (reason, n) in reasons.sorted(by: { $0.value > $1.value }).prefix(6) { print("  \(n) × \(reason)") }
    print(row("events acknowledged / verified after", "\(figures.appended) / \(verified)", ""))
    print(row("CDP evaluations ok / failed (during kills)", "\(figures.cdpOK) / \(figures.cdpFailed)", ""))
    if let first = figures.cdpFirstFailure { print("  first failed evaluation: \(first.prefix(200))") }
    print(row("CDP connects that hung (abandoned after 5 s)", "\(figures.cdpHung)", ""))
    print(row("left after stop (processes, dirs, cgroups, shm, X)", "\(left.count)", ""))
    if !violations.isEmpty {
        for v in violations.prefix(20) { print("  violation: \(v)") }
        fail("soak: \(violations.count) violations")
    }
}

/// The body's result within `limit`, or nil: then it is abandoned, still running. An agent's
/// CDP connect can hang for good: swift-websocket's client allows half-closure, so a browser
/// killed between the TCP connect and the upgrade's answer leaves NIO's upgrade handler waiting
/// on an open channel, deaf to cancellation (withTimeout would wait for it too).
func abandonable<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async -> Result<T, any Error>? {
    do {
        return .success(try await withAbandoningTimeout(limit, "the body", body))
    } catch is TimeoutError {
        return nil
    } catch {
        return .failure(error)
    }
}

/// The session programs of this run: (pid, program name).
func sessionPrograms(_ dir: String) -> [(pid_t, String)] {
    processesWithEnvironment(containing: "KIOSKD_SESSION=\(dir)/run/sessions/").compactMap { pid in
        guard let comm = try? readText("/proc/\(pid)/comm") else { return nil }
        let name = comm.filter { !$0.isNewline }
        return ["Xvfb", "openbox", "x11vnc", "chromium", "websockify"].contains(name) ? (pid, name) : nil
    }
}

/// What a soak could leave behind, named: its processes, session directories and cgroups (when
/// `runDir` is given), kioskd's SysV shared memory segments, X sockets and locks of the
/// soak's displays. Compared before and after, so what was there already is not counted.
func leftovers(displays: ClosedRange<Int>, runDir: String?) -> Set<String> {
    var found = Set<String>()
    if let runDir {
        for pid in processesWithEnvironment(containing: "KIOSKD_SESSION=\(runDir)/run/sessions/") { found.insert("process \(pid)") }
        for entry in (try? listDirectory(runDir + "/run/sessions")) ?? [] { found.insert("session directory \(entry)") }
    }
    if let runDir {
        // This run's groups only (named by its runtime directory): another kioskd on the host
        // (a test or bench beside the soak) has groups of its own.
        let name = "kioskd-" + cgroupTag(runDir + "/run")
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"] where access(root + "/" + name, F_OK) == 0 {
            found.insert("cgroup \(root)/\(name)")
        }
    }
    if let uid = getpwnam("kioskd")?.pointee.pw_uid, let shm = try? readText("/proc/sysvipc/shm") {
        for line in shm.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            // Unattached only: a leaked segment has no one left; another kioskd's live
            // session on this host (a test beside the soak) keeps its own attached.
            if f.count > 8, f[7] == "\(uid)", f[6] == "0" { found.insert("shm segment \(f[1])") }
        }
    }
    for d in displays {
        for path in ["/tmp/.X11-unix/X\(d)", "/tmp/.X\(d)-lock"] where access(path, F_OK) == 0 { found.insert(path) }
    }
    return found
}

func listDirectory(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else { throw TestFailure("cannot open \(path)") }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// A viewer in a process of its own (kioskd-bench --soak-viewer), so chaos can kill -9 it.
func spawnViewer(port: Int, path: String) throws -> pid_t {
    var pid: pid_t = 0
    let words: [String] = [sibling("kioskd-bench"), "--soak-viewer", "\(port)", path]
    let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let rc = spawnWithDefaultSignals(&pid, words[0], &actions, argv, [nil])
    guard rc == 0 else { throw TestFailure("cannot start a viewer: errno \(rc)") }
    return pid
}

/// The viewer process: the RFB handshake through the bridge, then a small framebuffer update
/// asked for and read, over and over, until the connection ends.
func soakViewer(_ args: [String]) -> Never {
    guard args.count == 2, let port = Int(args[0]) else { fail("usage: kioskd-bench --soak-viewer PORT PATH") }
    let ws = BlockingWebSocket(port: port, path: args[1])
    guard ws.receive(atLeast: 12) >= 12 else { exit(0) }   // "RFB 003.008\n"
    ws.send(Array("RFB 003.008\n".utf8))
    guard ws.receive(atLeast: 2) >= 2 else { exit(0) }     // one security type: None
    ws.send([1])
    guard ws.receive(atLeast: 4) >= 4 else { exit(0) }     // SecurityResult OK
    ws.send([1])                                           // ClientInit, shared
    guard ws.receive(atLeast: 24) >= 24 else { exit(0) }   // ServerInit
    while true {
        ws.send([3, 0, 0, 0, 0, 0, 0, 16, 0, 16])          // FramebufferUpdateRequest 16x16, full
        guard ws.receive(atLeast: 4) >= 4 else { exit(0) }
        usleep(100_000)
    }
}
