// Capacity: task start cold and from the warm pool (create → running, → page loaded), how many
// sessions a 4 GiB memory cgroup holds with memory-aware admission beside admission by count
// alone (browserless' way), and the daemon's peak RSS with 8 sessions. The real kioskd binary,
// driven over its control socket.
import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport

#if canImport(Glibc)
import Glibc
#endif

struct TaskStarts {
    var running: [Double] = []
    var loaded: [Double] = []
}

struct Fit {
    var running = 0
    var queued = 0
    var failed = 0
    var oomKills = 0
    /// Why the failed ones failed.
    var reasons: [String] = []
    /// Per running session: cgroup working set and PSS (KiB).
    var workingSetKiB: [Int] = []
    var pssKiB: [Int] = []
}

struct CapacityResults {
    var cold = TaskStarts()
    var warm = TaskStarts()
    var daemonPeakRSSKiB = 0
    var sessionsForRSS = 0
    /// By policy and page.
    var fits: [(policy: String, page: String, fit: Fit)] = []
}

/// A page that holds ~400 MiB of its own (typed arrays, touched) besides the browser's.
let heavyPage = "data:text/html,<title>heavy</title><script>window.keep=[];for(let i=0;i<50;i++)keep.push(new Uint8Array(8<<20).fill(i+1))</script><h1>heavy</h1>"
let idlePage = "data:text/html,<title>idle</title><body style='background:rgb(20,120,200)'><h1>idle</h1></body>"

/// One daemon for the bench: its directory, process and control client; stopped by `stop()`.
struct BenchDaemon {
    let dir: String
    /// The public listener's port.
    let port: Int
    let process: DaemonProcess
    let client: ControlClient

    /// Runs `body` with a daemon started with `extra` config and `publicKeys` (more `public:`
    /// lines), inside the v1 memory group `group` and with `openFiles` as its RLIMIT_NOFILE
    /// (the unit's LimitNOFILE) if given, stopped with SIGTERM after it, or killed if anything
    /// failed: a bench that gives up leaves no daemon behind.
    static func with<T>(_ extra: String, group: String? = nil, publicKeys: [String] = [], openFiles: Int? = nil,
                        _ body: (BenchDaemon) async throws -> T) async throws -> T {
        let d = try await start(extra, group: group, publicKeys: publicKeys, openFiles: openFiles)
        do {
            let result = try await body(d)
            try await d.stop()
            return result
        } catch {
            d.process.signal(SIGKILL)
            _ = try? await d.process.waitExit(timeout: .seconds(30))
            removeTree(d.dir)
            throw error
        }
    }

    private static func start(_ extra: String, group: String?, publicKeys: [String], openFiles: Int?) async throws -> BenchDaemon {
        let dir = try makeTempDir("kioskd-bench-capacity")
        let port = try freePort()
        try writeText(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: port, publicKeys: publicKeys, extra))
        var exec = "exec \(sibling("kioskd")) serve --config \(dir)/kioskd.yaml"
        if let openFiles { exec = "ulimit -n \(openFiles) && " + exec }
        let process = try DaemonProcess(executable: "/bin/sh", arguments: ["-c", group.map { "echo $$ > \($0)/cgroup.procs && " + exec } ?? exec],
                                        environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
        let client = ControlClient(socketPath: dir + "/run/control.sock")
        do {
            try await process.log.wait(for: "kioskd's control socket", timeout: .seconds(90)) { $0.contains("kioskd/control: ready") }
        } catch {
            process.signal(SIGKILL)
            _ = try? await process.waitExit(timeout: .seconds(30))
            throw TestFailure("kioskd did not start: \(error)\n\(process.stderr.suffix(2000))")
        }
        return BenchDaemon(dir: dir, port: port, process: process, client: client)
    }

    func get(_ path: String) async throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(try await client.request(.GET, path).body))
    }

    func post(_ path: String, _ body: String) async throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(try await client.request(.POST, path, json: body).body))
    }

    func capacity() async throws -> JSONValue { try await get("/v1/capacity") }

    /// Polls the capacity (a benchmark's loop: nothing else is timed meanwhile) until `done`.
    func waitCapacity(_ what: String, _ done: @escaping @Sendable (JSONValue) -> Bool) async throws {
        try await withTimeout(.seconds(120), what) {
            while !done(try await capacity()) { try await Task.sleep(for: .milliseconds(20)) }
        }
    }

    private func stop() async throws {
        process.signal(SIGTERM)
        _ = try await process.waitExit(timeout: .seconds(90))
        removeTree(dir)
    }
}

func createBody(_ id: String, _ url: String) -> String { #"{"task_id":"\#(id)","url":"\#(url)","timeout_s":900}"# }

/// create?wait=true → running, then the page's load over CDP; the task is stopped and its
/// session gone (or the pool refilled) before the next run.
func timeStarts(_ d: BenchDaemon, runs: Int, warm: Bool) async throws -> TaskStarts {
    var out = TaskStarts()
    for i in 0..<runs {
        if warm {
            try await d.waitCapacity("a warm session") { $0["warm"]?.number == 1 && $0["sessions"]?.number == 1 }
        } else {
            try await d.waitCapacity("no session") { $0["sessions"]?.number == 0 }
        }
        let id = (warm ? "warm-" : "cold-") + "\(i)"
        let page = "data:text/html,<title>\(id)</title><h1>\(id)</h1>"
        let t0 = monotonic()
        let task = try await d.post("/v1/tasks?wait=true", createBody(id, page))
        let running = monotonic() - t0
        guard task["state"]?.string == "running", let cdp = task["session"]?["cdp_url"]?.string else { throw TestFailure("\(id) is not running: \(task)") }
        let info = SessionInfo(id: id, state: .ready, display: "", cdpURL: cdp, vncSocket: "", websockifyPort: nil, directory: "", pids: [:], end: nil)
        let title = try await withPage(info) { cdp, session in try await evaluate(cdp, session, loadedTitle) }
        let loaded = monotonic() - t0
        guard title == id else { throw TestFailure("\(id): the page is \(title)") }
        out.running.append(running)
        out.loaded.append(loaded)
        _ = try await d.post("/v1/tasks/\(id)/stop", "{}")
    }
    return out
}

/// A v1 memory group of `limit` under this process's own, for a daemon to run in.
func benchMemoryGroup(limit: UInt64) throws -> String {
    guard let own = try readText("/proc/self/cgroup").split(separator: "\n").first(where: { $0.contains(":memory:") })?
        .split(separator: ":", maxSplits: 2).last else { fail("no cgroup v1 memory controller here: the capacity bench needs the hybrid layout (docs/notes/cgroups-and-cold-start.md)") }
    let path = "/sys/fs/cgroup/memory" + (own == "/" ? "" : String(own)) + "/kioskd-bench-" + randomHex(4)
    guard mkdir(path, 0o755) == 0 else { fail("cannot create \(path): errno \(errno) (run the bench as root)") }
    try writeText(path + "/memory.limit_in_bytes", "\(limit)")
    return path
}

/// Directories under `path` (cgroup groups), recursively, `path` first.
func groupTree(_ path: String) -> [String] {
    var st = stat()
    return [path] + directoryEntries(path).filter { stat(path + "/" + $0, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR }.flatMap { groupTree(path + "/" + $0) }
}

func cgroupNumber(_ path: String, _ key: String) -> Int {
    guard let text = try? readText(path) else { return 0 }
    if key.isEmpty { return Int(text.filter { !$0.isWhitespace }) ?? 0 }
    return text.split(separator: "\n").first { $0.hasPrefix(key + " ") }.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
}

/// `count` tasks on `page` in a daemon inside a `limit` memory group, admitted by `policy`:
/// what runs, waits, fails and is OOM-killed once admission has settled.
/// `settle`: seconds after the last start before the figures are read (the daemon lets a
/// session's peak lower the estimate after 30 s of running).
func fitSessions(limit: UInt64, count: Int, page: String, policy: String, config: String, ports: String, displays: String,
                 settle: Double) async throws -> Fit {
    // The previous part's pressure would hold admission: start on a calm host.
    try await withTimeout(.seconds(120), "host memory pressure to calm down") {
        while (HostMemory.pressure() ?? 0) >= 5 { try await Task.sleep(for: .seconds(1)) }
    }
    let group = try benchMemoryGroup(limit: limit)
    defer { for dir in groupTree(group).reversed() { rmdir(dir) } }
    return try await BenchDaemon.with("""
        sessions:
          displays: \(displays)
          ports: \(ports)
        \(config)
        """, group: group) { d in
        let ids = (0..<count).map { "\(policy)-\($0)" }
        for id in ids { _ = try await d.post("/v1/tasks", createBody(id, page)) }
        // Settled: nothing starting, the last start long enough ago for its session's peak to
        // count (the daemon's 30 s), and no change for three samples (6 s) after that.
        var states: [String: String] = [:]
        var stable = 0
        var lastStart = monotonic()
        while stable < 3 || monotonic() - lastStart < settle {
            var now: [String: String] = [:]
            for id in ids { now[id] = try await d.get("/v1/tasks/\(id)")["state"]?.string ?? "?" }
            let starting = ids.filter { now[$0] == "starting" }
            for id in starting { _ = try await d.post("/v1/tasks?wait=true", createBody(id, page)) }
            if !starting.isEmpty || ids.contains(where: { now[$0] == "running" && states[$0] != "running" }) { lastStart = monotonic() }
            stable = starting.isEmpty && now == states ? stable + 1 : 0
            states = now
            if starting.isEmpty { try await Task.sleep(for: .seconds(2)) }
        }
        var fit = Fit()
        fit.running = states.values.filter { $0 == "running" }.count
        fit.queued = states.values.filter { $0 == "queued" }.count
        fit.failed = states.values.filter { $0 == "failed" }.count
        for id in ids where states[id] == "failed" { fit.reasons.append(try await d.get("/v1/tasks/\(id)")["reason"]?.string ?? "?") }
        // The sessions' groups: d<display> below the daemon's kioskd-<tag> parent.
        for dir in groupTree(group).dropFirst() where dir.split(separator: "/").last?.hasPrefix("d") == true {
            let usage = cgroupNumber(dir + "/memory.usage_in_bytes", "")
            let inactive = cgroupNumber(dir + "/memory.stat", "total_inactive_file")
            fit.workingSetKiB.append(max(0, usage - inactive) / 1024)
        }
        for session in try await d.get("/v1/sessions").array ?? [] {
            // The session's directory holds its VNC socket; its processes carry it as their marker.
            guard let socket = session["vnc_socket"]?.string, socket.hasSuffix("/vnc.sock") else { continue }
            let directory = String(socket.dropLast("/vnc.sock".count))
            fit.pssKiB.append(processesWithEnvironment(containing: "KIOSKD_SESSION=\(directory)").map(pssKiB).reduce(0, +))
        }
        fit.oomKills = groupTree(group).map { cgroupNumber($0 + "/memory.oom_control", "oom_kill") }.reduce(0, +)
        return fit
    }
}

/// The peak resident set of a process (VmHWM), KiB.
func peakRSSKiB(_ pid: Int32) -> Int {
    guard let line = (try? readText("/proc/\(pid)/status"))?.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return 0 }
    return Int(line.split(whereSeparator: \.isWhitespace).dropFirst().first ?? "") ?? 0
}

func benchCapacity(runs: Int, fitCount: Int, fitLimit: UInt64, smoke: Bool) async throws -> CapacityResults {
    var r = CapacityResults()
    r.sessionsForRSS = smoke ? 2 : 8
    (r.cold, r.daemonPeakRSSKiB) = try await BenchDaemon.with("sessions:\n  displays: 700-739\n  ports: 19500-19999\n") { [n = r.sessionsForRSS] cold in
        let starts = try await timeStarts(cold, runs: runs, warm: false)
        // The daemon's peak RSS with n sessions running at once (the shell exec'd kioskd: same pid).
        for i in 0..<n { _ = try await cold.post("/v1/tasks", createBody("rss-\(i)", idlePage)) }
        for i in 0..<n { _ = try await cold.post("/v1/tasks?wait=true", createBody("rss-\(i)", idlePage)) }
        return (starts, peakRSSKiB(cold.process.pid))
    }
    r.warm = try await BenchDaemon.with("sessions:\n  warm: 1\n  displays: 740-769\n  ports: 30800-31199\n") { warm in
        try await timeStarts(warm, runs: runs, warm: true)
    }

    let policies: [(String, String)] = [
        ("memory-aware", "tasks:\n  max_sessions: 64\n"),
        // browserless' way: a fixed count whatever memory says. A negligible configured estimate
        // and no limit on starting sessions let the burst of creates fill the 8 slots at once,
        // before any session is measured.
        ("count only (8)", "tasks:\n  max_sessions: 8\ncapacity:\n  session_estimate: 16MiB\n  max_starting: 8\n"),
    ]
    for (page, url) in smoke ? [("idle", idlePage)] : [("idle", idlePage), ("heavy", heavyPage)] {
        for (policy, config) in smoke ? Array(policies.prefix(1)) : policies {
            let fit = try await fitSessions(limit: fitLimit, count: fitCount, page: url, policy: policy.split(separator: " ").first.map(String.init) ?? policy,
                                            config: config, ports: "31200-31599", displays: "770-799", settle: smoke ? 0 : 36)
            r.fits.append((policy, page, fit))
        }
    }
    return r
}

func printCapacity(_ options: Options) async throws {
    let smoke = isSmokeRun
    let runs = smoke ? 1 : options.capacityRuns
    let fitLimit: UInt64 = smoke ? 1 << 30 : 4 << 30
    let fitCount = smoke ? 2 : 20
    print("\ntask start: \(runs) tasks one after the other (create?wait=true → running; then the page's load over CDP), cold and from the warm pool (sessions.warm: 1):")
    let r = try await benchCapacity(runs: runs, fitCount: fitCount, fitLimit: fitLimit, smoke: smoke)
    print(row("create → (ms)", "p50", "p90 / p99"))
    print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    print(row("cold: running", ms(percentile(r.cold.running, 0.5)), ms(percentile(r.cold.running, 0.9)) + " / " + ms(percentile(r.cold.running, 0.99))))
    print(row("cold: page loaded", ms(percentile(r.cold.loaded, 0.5)), ms(percentile(r.cold.loaded, 0.9)) + " / " + ms(percentile(r.cold.loaded, 0.99))))
    print(row("warm: running (page loaded)", ms(percentile(r.warm.running, 0.5)), ms(percentile(r.warm.running, 0.9)) + " / " + ms(percentile(r.warm.running, 0.99))))
    print(row("warm: load seen over CDP", ms(percentile(r.warm.loaded, 0.5)), ms(percentile(r.warm.loaded, 0.9)) + " / " + ms(percentile(r.warm.loaded, 0.99))))
    print("peers (published, not run here): Browser Use Cloud creates a browser in 825 ms p50 / 1.35 s p99; kioskd before this round: session ready p50 ≈ 930 ms, p90 ≈ 1.0 s (release, 1280x800)")
    print("targets: cold p50 ≤ 500 ms, p90 ≤ 700 ms; warm p99 ≤ 50 ms")
    print("\ndaemon peak RSS (VmHWM) with \(r.sessionsForRSS) sessions running: \(r.daemonPeakRSSKiB / 1024).\((r.daemonPeakRSSKiB % 1024) * 10 / 1024) MB")

    print("\n\(fitCount) tasks asked of a daemon in a \(fitLimit >> 20) MiB v1 memory cgroup (reserve 512 MiB), once admission has settled:")
    print("| policy          | page  | running | queued | failed | OOM kills | working set / session (MiB) | PSS / session (MiB) |")
    print("|-----------------|-------|---------|--------|--------|-----------|-----------------------------|---------------------|")
    for (policy, page, f) in r.fits {
        func median(_ v: [Int]) -> String { v.isEmpty ? "-" : String(v.sorted()[v.count / 2] / 1024) }
        print("| \(policy.padding(toLength: 15)) | \(page.padding(toLength: 5)) | \(String(f.running).padding(toLength: 7)) | \(String(f.queued).padding(toLength: 6)) | \(String(f.failed).padding(toLength: 6)) | \(String(f.oomKills).padding(toLength: 9)) | \(median(f.workingSetKiB).padding(toLength: 27)) | \(median(f.pssKiB).padding(toLength: 19)) |")
    }
    for (policy, page, f) in r.fits where !f.reasons.isEmpty {
        print("failed (\(policy), \(page)): " + Set(f.reasons).sorted().joined(separator: "; "))
    }
}
