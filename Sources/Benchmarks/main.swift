// kioskd-bench: supervision latency and memory, side by side with supervisord.
//
//   kioskd-bench [--kills N] [--children N] [--supervisord PATH] [--sessions N] [--requests N]
//                [--capacity-runs N] [--fuzz-inputs N] [--fuzz-parser-inputs N] [--fuzz-seed S] [--fuzz-corpus DIR]
//                [--soak-sessions N] [--soak-seconds T]
//                [--only-sessions | --only-control | --only-bridge | --only-capacity | --only-fuzz | --only-soak | --only-abuse | --only-cluster] [--smoke]
//
// --smoke: every part with tiny counts, so the test command proves each still runs (its
// figures mean nothing).
//
// Detection: kill -9 of a trivial child → the supervisor's exit event.
// Restart:   kill -9 → the child is running (ready) again.
// Memory:    RSS of the daemon supervising N idle children.
// supervisord reports through its event-listener protocol (PROCESS_STATE_*), timestamped with
// CLOCK_MONOTONIC by the listener; kioskd through its event bus, on the same clock.
// Sessions:  N cold starts of a kiosk session, one after the other (SessionBench.swift).
// Control:   the control API on SQLite and PostgreSQL (ControlBench.swift).
// Bridge:    the VNC bridge beside websockify and raw TCP (BridgeBench.swift).
// Capacity:  task start cold and warm, sessions in a 4 GiB cgroup by memory-aware admission
//            beside a fixed count, the daemon's peak RSS with 8 sessions (CapacityBench.swift).
// Soak:      N tasks with viewers and agents under kill -9 chaos for T seconds, then nothing
//            left and every acknowledged event there (SoakBench.swift; only with --only-soak,
//            and --smoke's short run).
// Fuzz:      the RFB filter (N inputs), the request bodies and the config loader (M inputs
//            each), seeded random + mutation, from the corpus in Tests/Fuzz/corpus (Fuzz.swift).
// Cluster:   create → running through the shared queue with 1 and 3 hosts, claims per second,
//            rescue after kill -9, viewers and agents via the owner vs via another host
//            (ClusterBench.swift).
// Abuse:     the public listener under slowloris, idle floods, oversized and garbage requests,
//            forged-token upgrades and stalled TLS, beside websockify; with --smoke a check
//            that exits 1 when an attack is not answered as designed (AbuseBench.swift).
import Dispatch
import KioskdTestSupport
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var kills = 200
    var children = 20
    var supervisord = ".build-bench/venv/bin/supervisord"
    var python = "/usr/bin/python3"
    var sessions = 20
    var onlySessions = false
    var onlyControl = false
    var onlyBridge = false
    var onlyCapacity = false
    var onlyFuzz = false
    var onlySoak = false
    var onlyAbuse = false
    var onlyCluster = false
    var soakSessions = 4
    var soakSeconds = 600
    var requests = 5000
    var capacityRuns = 20
    var fuzzInputs = 1_000_000
    var fuzzParserInputs = 100_000
    /// nil: a new seed each run (printed, to replay it).
    var fuzzSeed: UInt64?
    var fuzzCorpus = FuzzCorpus.defaultDirectory

    /// Whether a part runs: every part, unless one was asked for alone.
    func runs(_ only: Bool) -> Bool { only || !(onlySessions || onlyControl || onlyBridge || onlyCapacity || onlyFuzz || onlySoak || onlyAbuse || onlyCluster) }

    init(_ args: [String]) {
        var it = args.dropFirst().makeIterator()
        while let a = it.next() {
            switch a {
            case "--kills": kills = Int(it.next() ?? "") ?? kills
            case "--children": children = Int(it.next() ?? "") ?? children
            case "--supervisord": supervisord = it.next() ?? supervisord
            case "--sessions": sessions = Int(it.next() ?? "") ?? sessions
            case "--only-sessions": onlySessions = true
            case "--only-control": onlyControl = true
            case "--only-bridge": onlyBridge = true
            case "--only-capacity": onlyCapacity = true
            case "--only-fuzz": onlyFuzz = true
            case "--only-soak": onlySoak = true
            case "--only-abuse": onlyAbuse = true
            case "--only-cluster": onlyCluster = true
            case "--soak-sessions": soakSessions = Int(it.next() ?? "") ?? soakSessions
            case "--soak-seconds": soakSeconds = Int(it.next() ?? "") ?? soakSeconds
            case "--fuzz-inputs": fuzzInputs = Int(it.next() ?? "") ?? fuzzInputs
            case "--fuzz-parser-inputs": fuzzParserInputs = Int(it.next() ?? "") ?? fuzzParserInputs
            case "--fuzz-seed": fuzzSeed = UInt64(it.next() ?? "") ?? fuzzSeed
            case "--fuzz-corpus": fuzzCorpus = it.next() ?? fuzzCorpus
            case "--capacity-runs": capacityRuns = Int(it.next() ?? "") ?? capacityRuns
            case "--requests": requests = Int(it.next() ?? "") ?? requests
            case "--smoke": (kills, children, sessions, requests, capacityRuns, fuzzInputs, fuzzParserInputs, soakSessions, soakSeconds) = (5, 3, 1, 50, 1, 3000, 300, 2, 45)
            default:
                fail("unknown option \(a); usage: kioskd-bench [--kills N] [--children N] [--supervisord PATH] [--sessions N] [--requests N] [--capacity-runs N] "
                    + "[--fuzz-inputs N] [--fuzz-parser-inputs N] [--fuzz-seed S] [--fuzz-corpus DIR] "
                    + "[--soak-sessions N] [--soak-seconds T] [--only-sessions | --only-control | --only-bridge | --only-capacity | --only-fuzz | --only-soak | --only-abuse | --only-cluster] [--smoke]")
            }
        }
    }
}

func fail(_ message: String) -> Never {
    var line = Array("kioskd-bench: \(message)\n".utf8)
    _ = write(2, &line, line.count)
    exit(1)
}

func monotonic() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    let index = min(sorted.count - 1, max(0, Int((Double(sorted.count) * p).rounded(.up)) - 1))
    return sorted[index]
}

func ms(_ seconds: Double) -> String {
    let v = seconds * 1000
    return v < 10 ? String(Int((v * 100).rounded())).withDecimal(2) : String(Int((v * 10).rounded())).withDecimal(1)
}

func us(_ seconds: Double) -> String {
    String(Int((seconds * 1_000_000).rounded()))
}

extension String {
    func withDecimal(_ places: Int) -> String {
        let padded = String(repeating: "0", count: max(0, places + 1 - count)) + self
        return padded.dropLast(places) + "." + padded.suffix(places)
    }
}

func sibling(_ name: String) -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let exe = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let path = String(exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)]) + "/" + name
    guard access(path, X_OK) == 0 else { fail("\(path) is missing: build it with `swift build -c release`") }
    return path
}

func rssKiB(_ pid: Int32) -> Int {
    guard let f = fopen("/proc/\(pid)/status", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), f) != nil {
        let s = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        if s.hasPrefix("VmRSS:") { return Int(s.split(separator: " ").dropFirst().first ?? "") ?? -1 }
    }
    return -1
}

// MARK: - kioskd (the Supervision library in this process)

struct Latencies {
    var detection: [Double] = []
    var restart: [Double] = []
}

func benchKioskd(child: String, kills: Int) async throws -> Latencies {
    LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
    let bus = EventBus()
    let events = bus.subscribe()
    // No backoff: supervisord restarts at once too; this measures the mechanism.
    let sup = try Supervisor(
        name: "bench",
        spec: SupervisorSpec(strategy: .oneForOne, intensity: Intensity(maxRestarts: kills * 2, period: .seconds(3600)), backoff: .none,
                             children: [ChildSpec(id: "child", kind: .process(ProcessSpec(executable: child)))]),
        events: bus, logger: Logger(label: "bench"))
    async let run = sup.run()
    var iterator = events.makeAsyncIterator()
    func next(_ match: (SupervisionEvent.Kind) -> Bool) async -> SupervisionEvent {
        while let e = await iterator.next() {
            if match(e.kind) { return e }
        }
        fail("the event stream ended")
    }
    var pid: Int32 = 0
    if case .spawned(_, let p) = await next({ if case .spawned = $0 { true } else { false } }).kind { pid = p }
    _ = await next { if case .ready = $0 { true } else { false } }

    var result = Latencies()
    for _ in 0..<kills {
        let t0 = ContinuousClock.now
        kill(pid, SIGKILL)
        let exited = await next { if case .exited = $0 { true } else { false } }
        if case .spawned(_, let p) = await next({ if case .spawned = $0 { true } else { false } }).kind { pid = p }
        let ready = await next { if case .ready = $0 { true } else { false } }
        result.detection.append(seconds(exited.time - t0))
        result.restart.append(seconds(ready.time - t0))
    }
    sup.shutdown()
    _ = await run
    return result
}

// MARK: - supervisord

let listenerScript = """
    import sys, time
    fifo = open(sys.argv[1], "w", buffering=1)
    def say(s):
        sys.stdout.write(s); sys.stdout.flush()
    while True:
        say("READY\\n")
        header = dict(x.split(":", 1) for x in sys.stdin.readline().split())
        payload = sys.stdin.read(int(header["len"]))
        t = time.clock_gettime(time.CLOCK_MONOTONIC)
        fields = dict(x.split(":", 1) for x in payload.split("\\n")[0].split())
        fifo.write("%s %s %s %.9f\\n" % (header["eventname"], fields.get("processname", "-"), fields.get("pid", "-"), t))
        say("RESULT 2\\nOK")
    """

final class Supervisord: @unchecked Sendable {  // fields set once in init, then read only
    let pid: Int32
    let dir: String
    private let events: FileLines

    init(executable: String, python: String, programs: [(String, String)]) throws {
        guard access(executable, X_OK) == 0 else {
            fail("\(executable) not found: run scripts/bench.sh (it installs supervisor from PyPI into .build-bench/venv)")
        }
        var template = Array("/tmp/kioskd-bench-XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&template)!)
        let fifo = dir + "/events.fifo"
        mkfifo(fifo, 0o600)
        try writeText(dir + "/listener.py", listenerScript)
        var conf = """
            [supervisord]
            nodaemon=true
            silent=true
            logfile=\(dir)/supervisord.log
            pidfile=\(dir)/supervisord.pid
            childlogdir=\(dir)
            [unix_http_server]
            file=\(dir)/supervisor.sock
            [eventlistener:timing]
            command=\(python) \(dir)/listener.py \(fifo)
            events=PROCESS_STATE
            buffer_size=10000

            """
        for (name, command) in programs {
            conf += "[program:\(name)]\ncommand=\(command)\nautorestart=true\nstartsecs=0\nstartretries=1000000\n\n"
        }
        try writeText(dir + "/supervisord.conf", conf)
        pid = spawn(executable, ["-c", dir + "/supervisord.conf"])
        events = FileLines(path: fifo)  // blocks until the listener opens the FIFO
    }

    /// Next event of kind `state` for a process `match` accepts: (name, pid, monotonic time).
    func next(_ state: String, where match: (String) -> Bool) -> (String, Int32, Double) {
        while let line = events.next() {
            let f = line.split(separator: " ")
            if f.count == 4, f[0] == "PROCESS_STATE_\(state)", match(String(f[1])) {
                return (String(f[1]), Int32(f[2]) ?? 0, Double(f[3]) ?? .nan)
            }
        }
        fail("supervisord's event listener stopped")
    }

    func next(_ state: String, _ process: String) -> (Int32, Double) {
        let (_, pid, time) = next(state) { $0 == process }
        return (pid, time)
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        _ = system("rm -rf '\(dir)'")
    }
}

func benchSupervisord(_ options: Options, child: String) throws -> Latencies {
    let sd = try Supervisord(executable: options.supervisord, python: options.python, programs: [("child", child)])
    defer { sd.stop() }
    var (pid, _) = sd.next("RUNNING", "child")
    var result = Latencies()
    for _ in 0..<options.kills {
        let t0 = monotonic()
        kill(pid, SIGKILL)
        let (_, exited) = sd.next("EXITED", "child")
        let (newPID, running) = sd.next("RUNNING", "child")
        pid = newPID
        result.detection.append(exited - t0)
        result.restart.append(running - t0)
    }
    return result
}

func supervisordRSS(_ options: Options, child: String) throws -> Int {
    let programs = (0..<options.children).map { ("idle\($0)", child) }
    let sd = try Supervisord(executable: options.supervisord, python: options.python, programs: programs)
    defer { sd.stop() }
    var running = Set<String>()
    while running.count < options.children {
        running.insert(sd.next("RUNNING") { $0.hasPrefix("idle") }.0)
    }
    return rssKiB(sd.pid)
}

// MARK: - kioskd serve (the real daemon) with N idle children

func kioskdServeRSS(children: Int, child: String) throws -> Int {
    var template = Array("/tmp/kioskd-bench-XXXXXX".utf8CString)
    let dir = String(cString: mkdtemp(&template)!)
    // mkdtemp makes it 0700: the session user must be able to reach runtime.dir/sessions, or
    // kioskd refuses to start (it checks at start).
    chmod(dir, 0o711)
    defer { _ = system("rm -rf '\(dir)'") }
    var conf = "state:\n  dir: \(dir)/state\nruntime:\n  dir: \(dir)/run\nlog:\n  level: warning\nprograms:\n"
    for i in 0..<children { conf += "  - name: idle\(i)\n    command: [\"\(child)\"]\n" }
    try writeText(dir + "/kioskd.yaml", conf)
    let socketPath = dir + "/notify.sock"
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    _ = withUnixSocketAddress(socketPath) { bind(fd, $0, $1) }
    var tv = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let pid = spawn(sibling("kioskd"), ["serve", "--config", dir + "/kioskd.yaml"], env: ["NOTIFY_SOCKET=\(socketPath)", "PATH=/usr/bin:/bin"])
    var buffer = [UInt8](repeating: 0, count: 4096)
    var ready = false
    while !ready {
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n > 0 else { fail("kioskd did not report READY=1 within 30 s") }
        ready = String(decoding: buffer[0..<n], as: UTF8.self).contains("READY=1")
    }
    let rss = rssKiB(pid)
    kill(pid, SIGTERM)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    close(fd)
    return rss
}

// MARK: - helpers

func spawn(_ path: String, _ args: [String], env: [String]? = nil) -> Int32 {
    var pid: pid_t = 0
    let argv = ([path] + args).map { strdup($0) } + [nil]
    let envp = (env ?? ["PATH=/usr/bin:/bin"]).map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    guard spawnWithDefaultSignals(&pid, path, nil, argv, envp) == 0 else { fail("cannot start \(path)") }
    return pid
}

func writeText(_ path: String, _ text: String) throws {
    guard let f = fopen(path, "w") else { fail("cannot write \(path)") }
    fputs(text, f)
    fclose(f)
}

/// Lines from a FIFO, read with blocking reads (no polling).
final class FileLines {
    private let file: UnsafeMutablePointer<FILE>

    init(path: String) {
        guard let f = fopen(path, "r") else { fail("cannot open \(path)") }
        file = f
    }

    func next() -> String? {
        var line = [CChar](repeating: 0, count: 1024)
        guard fgets(&line, Int32(line.count), file) != nil else { return nil }
        return line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.trimmingNewline
    }
}

extension String {
    var trimmingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}

// MARK: - main

func row(_ name: String, _ a: String, _ b: String) -> String {
    "| " + name.padding(toLength: 42) + " | " + a.padding(toLength: 12) + " | " + b.padding(toLength: 12) + " |"
}
extension String {
    func padding(toLength n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

if CommandLine.arguments.dropFirst().first == "--serve-bridge" {
    try await serveBridge(Array(CommandLine.arguments.dropFirst(2)))
}
// The Autobahn|Testsuite run's servers (scripts/test-autobahn.sh; Autobahn.swift).
if CommandLine.arguments.dropFirst().first == "--serve-autobahn-echo" {
    try await serveAutobahnEcho(Array(CommandLine.arguments.dropFirst(2)))
}
if CommandLine.arguments.dropFirst().first == "--serve-autobahn-bridge" {
    try await serveAutobahnBridge(Array(CommandLine.arguments.dropFirst(2)))
}
// A soak's viewer, in a process of its own so the soak can kill -9 it (SoakBench.swift).
if CommandLine.arguments.dropFirst().first == "--soak-viewer" {
    soakViewer(Array(CommandLine.arguments.dropFirst(2)))
}
let options = Options(CommandLine.arguments)
if isSmokeRun { print("kioskd-bench --smoke: every part with tiny counts; the figures below are not measurements\n") }
if options.runs(false) {
// Only this part needs the child: `--only-*` runs work with kioskd-bench alone built.
let child = sibling("kioskd-testchild")
print("kioskd-bench: \(options.kills) kill -9 of a trivial child (kioskd-testchild, sleeping), \(options.children) idle children for memory")
print("(both supervisors run here, one after the other, on the same machine and the same child)\n")
let k = try await benchKioskd(child: child, kills: options.kills)
let s = try benchSupervisord(options, child: child)
let kRSS = try kioskdServeRSS(children: options.children, child: child)
let sRSS = try supervisordRSS(options, child: child)

print(row("measure", "kioskd", "supervisord"))
print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
print(row("kill -9 → exit event, p50 (ms)", ms(percentile(k.detection, 0.5)), ms(percentile(s.detection, 0.5))))
print(row("kill -9 → exit event, p99 (ms)", ms(percentile(k.detection, 0.99)), ms(percentile(s.detection, 0.99))))
print(row("kill -9 → running again, p50 (ms)", ms(percentile(k.restart, 0.5)), ms(percentile(s.restart, 0.5))))
print(row("kill -9 → running again, p99 (ms)", ms(percentile(k.restart, 0.99)), ms(percentile(s.restart, 0.99))))
print(row("daemon RSS, \(options.children) idle children (MB)", String(kRSS / 1024) + "." + String((kRSS % 1024) * 10 / 1024), String(sRSS / 1024) + "." + String((sRSS % 1024) * 10 / 1024)))
print("\ntargets: detection p99 ≤ 10 ms; daemon RSS with 20 idle children ≤ 25 MB")
}

if options.sessions > 0 && options.runs(options.onlySessions) {
    print("\nkiosk session cold start, \(options.sessions) starts one after the other (1280x800, a data: page):")
    let r = try await benchSessions(count: options.sessions)
    func stat(_ name: String, _ values: [Double]) {
        print(row(name, ms(percentile(values, 0.5)), ms(percentile(values, 0.9))))
    }
    print(row("create → (ms)", "p50", "p90"))
    print(row(String(repeating: "-", count: 42), String(repeating: "-", count: 12), String(repeating: "-", count: 12)))
    for (stage, label) in [("xvfb", "Xvfb ready (-displayfd)"), ("openbox", "Openbox ready (--startup)"),
                           ("lockdown", "lockdown ready (grabs + XTEST self-test)"), ("x11vnc spawned", "x11vnc spawned"), ("x11vnc", "x11vnc ready (RFB banner)"),
                           ("chromium spawned", "Chromium spawned"),
                           ("chromium", "Chromium ready (CDP /json/version)"), ("cdp-watch", "CDP attached, lockdown re-verified")] {
        stat(label, r.starts.compactMap { $0.stages[stage] })
    }
    stat("session ready (create returns)", r.starts.map(\.ready))
    stat("first frame over VNC", r.starts.map(\.firstFrame))
    print("\none idle session: \(r.processes) processes, PSS \(r.pssKiB / 1024) MB (proportional: Chromium's processes share pages)")
    print("target: session ready p50 ≤ 1.0 s, p90 ≤ 1.5 s")
}

if options.runs(options.onlyControl) {
    try await printControl(options.requests)
}

if options.runs(options.onlyBridge) {
    try await printBridge()
}

if options.runs(options.onlyCapacity) {
    try await printCapacity(options)
}

if options.runs(options.onlyFuzz) {
    runFuzzers(options)
}

if options.runs(options.onlyCluster) {
    try await printCluster(options)
}

if options.runs(options.onlyAbuse) {
    try await printAbuse()
}

// The soak runs alone or in the smoke run (its short form is the test command's soak).
if options.onlySoak || isSmokeRun {
    try await runSoak(sessions: options.soakSessions, seconds: options.soakSeconds)
}
