import Control
import Display
import Essentials
import FoundationEssentials
import KioskdTestSupport
import Store
import Testing
import ViewerInput

#if canImport(Glibc)
import Glibc
#endif

/// docs/metrics.md lists every metric kioskd exports (name, type, labels): the swift-metrics ones
/// in its first table, the process metrics the daemon writes itself in their own table, and the
/// proposed ones. Held to the code from three sides: the metrics the sources register (a scan of
/// every swift-metrics constructor under Sources/) and the process metrics ProcessMetrics writes
/// (a scan of its name and type literals), what a real daemon serves at GET /metrics, and the
/// names contrib/prometheus/kioskd.rules.yml uses.
///
/// A series appears only at its first event, so the daemon cannot be made to serve everything
/// (a viewer pressing a grabbed key needs a session, a browser and a VNC client): the scans are
/// what hold the whole tables to the code, both ways; the daemon shows that what is really
/// served (library metrics too, whatever registers them) is documented with its type and labels,
/// that every process metric is served (they are written at every scrape), and that the metrics
/// it is made to produce here do appear.
@Suite("Metrics documentation")
struct MetricsDocTests {
    let doc: MetricsDoc

    init() throws {
        doc = try MetricsDoc(text: try readText(repositoryRoot + "/docs/metrics.md"))
    }

    @Test func theTableListsExactlyWhatTheSourcesRegister() throws {
        let (registered, problems) = registeredMetrics(under: repositoryRoot + "/Sources")
        #expect(problems.isEmpty, "metric names must be string literals to be documented: \(problems)")
        #expect(!registered.isEmpty, "the scan found no metric at all: has the way metrics are made changed?")
        for (name, metric) in registered.sorted(by: { $0.key < $1.key }) {
            guard let documented = doc.exported[name] else {
                let hint = doc.proposed.contains(name) ? " (it is listed under Proposed metrics: move it to the first table)"
                    : doc.process[name] != nil ? " (it is in the process metrics' table, which is for what ProcessMetrics writes: move it to the first table)" : ""
                Issue.record("\(name) (\(metric.type), labels \(metric.labels.sorted())) is registered in \(metric.file) but not in docs/metrics.md's table\(hint)")
                continue
            }
            #expect(documented.type == metric.type, "\(name): documented as \(documented.type), registered as a \(metric.type) in \(metric.file)")
            #expect(documented.labels == metric.labels, "\(name): documented labels \(documented.labels.sorted()), registered \(metric.labels.sorted()) in \(metric.file)")
        }
        let stale = Set(doc.exported.keys).subtracting(registered.keys)
        #expect(stale.isEmpty, "documented but registered nowhere under Sources/: \(stale.sorted())")
    }

    /// The process metrics are written as text by the daemon (not swift-metrics constructors):
    /// their table is held to ProcessMetrics.swift's literals, both ways.
    @Test func theProcessTableListsExactlyWhatProcessMetricsWrites() throws {
        let file = "Sources/KioskdDaemon/Systemd/ProcessMetrics.swift"
        let (written, problems) = processMetrics(in: try readText(repositoryRoot + "/" + file))
        #expect(problems.isEmpty, "\(file): \(problems)")
        #expect(!written.isEmpty, "the scan of \(file) found no process metric: has the way they are written changed?")
        for (name, type) in written.sorted(by: { $0.key < $1.key }) {
            guard let documented = doc.process[name] else {
                Issue.record("\(name) (\(type)) is written by \(file) but not in docs/metrics.md's process metrics table")
                continue
            }
            #expect(documented.type == type, "\(name): documented as \(documented.type), written as a \(type) by \(file)")
            #expect(documented.labels.isEmpty, "\(name): documented with labels \(documented.labels.sorted()), written without any by \(file)")
        }
        let stale = Set(doc.process.keys).subtracting(written.keys)
        #expect(stale.isEmpty, "in the process metrics table but not written by \(file): \(stale.sorted())")
    }

    /// That scan, on the forms it must read and the ones it must refuse.
    @Test func theProcessScanReadsNamesAndTypes() {
        let (found, problems) = processMetrics(in: """
            metric("process_a_seconds", "gauge", value)
            metric( "process_b_total" ,
                    "counter", nil)
            // metric("process_commented", "gauge", 1)
            let event = "process_restarted"
            out += "# TYPE process_c gauge\\n"
            """)
        #expect(found == ["process_a_seconds": "gauge", "process_b_total": "counter"])
        #expect(problems.count == 2 && problems.contains { $0.contains("process_restarted") } && problems.contains { $0.contains("process_c") },
                "\(problems)")
    }

    /// The scan itself, on every form it must read (and the ones it must refuse or skip).
    @Test func theScanReadsNamesTypesAndLabelsOfEveryConstructor() throws {
        let dir = try makeTempDir("kioskd-metrics-scan")
        defer { removeTree(dir) }
        try writeFile(dir + "/A.swift", """
            Counter(label: "a_total").increment()
            Gauge(
                label: "b",
                dimensions: [("x", value(of: y)), ("y", "z")]
            ).record(1)
            Recorder(label: "c", aggregate: false).record(1)
            Recorder(label: "d", dimensions: [("k", f(x))]).record(1)
            Metrics.Timer(label: "e_seconds").recordNanoseconds(1)
            // Counter(label: "commented_total").increment()
            MyCounter(label: "not_a_metric")
            Counter(label: name).increment()
            """)
        let (found, problems) = registeredMetrics(under: dir)
        #expect(found.mapValues { "\($0.type) \($0.labels.sorted())" } == [
            "a_total": "counter []", "b": "gauge [\"x\", \"y\"]", "c": "gauge []", "d": "histogram [\"k\"]", "e_seconds": "histogram []",
        ])
        #expect(problems.count == 1 && problems.first?.contains("Counter(label: name)") == true, "\(problems)")
    }

    @Test func everyMetricTheRulesUseIsDocumented() throws {
        let rules = try readText(repositoryRoot + "/contrib/prometheus/kioskd.rules.yml")
        let name = try Regex(#"(?:^|[^A-Za-z0-9_])((?:kioskd|process)_[a-z0-9_]+)"#).anchorsMatchLineEndings()
        let used = Set(rules.matches(of: name).map { String(rules[$0.output[1].range!]) })
        #expect(used.contains("kioskd_tasks_finished_total"), "the scan of the rules found \(used.sorted())")
        #expect(used.contains("process_start_time_seconds"), "the scan of the rules found \(used.sorted())")
        let unknown = used.subtracting(doc.exported.keys).subtracting(doc.process.keys).subtracting(doc.proposed)
        #expect(unknown.isEmpty, "kioskd.rules.yml uses metrics docs/metrics.md does not list: \(unknown.sorted())")
        let proposed = used.intersection(doc.proposed)
        #expect(proposed.isEmpty, "kioskd.rules.yml uses metrics that are only proposed: \(proposed.sorted())")
        for (a, b, names) in [("exported", "proposed", doc.proposed.intersection(doc.exported.keys)),
                              ("exported", "a process metric", Set(doc.process.keys).intersection(doc.exported.keys)),
                              ("a process metric", "proposed", doc.proposed.intersection(doc.process.keys))] {
            #expect(names.isEmpty, "listed as \(a) and as \(b): \(names.sorted())")
        }
    }

    /// Label values that come from the code's own enums are all named in the metric's section.
    @Test func labelValuesFromEnumsAreAllDocumented() throws {
        let values: [(metric: String, values: [String])] = [
            ("kioskd_tasks_finished_total", TaskState.allCases.filter(\.isFinal).map(\.rawValue)),
            ("kioskd_bridge_connections_total", TokenRole.allCases.map(\.rawValue)),
            ("kioskd_bridge_keysyms_refused_total", ViewerKeysyms.Refusal.allCases.map(\.rawValue) + ["unknown"]),
            ("kioskd_lockdown_blocked_total", GrabPurpose.allCases.map(\.rawValue)),
        ]
        for (metric, expected) in values {
            let section = try #require(doc.sections[metric], "docs/metrics.md has no section #### `\(metric)`")
            let missing = expected.filter { !section.contains("`\($0)`") }
            #expect(missing.isEmpty, "\(metric): values not in its section of docs/metrics.md: \(missing)")
        }
    }

    @Test func aRealDaemonServesOnlyDocumentedMetricsWithTheirTypesAndLabels() async throws {
        let kioskd = try builtProduct("kioskd")
        let dir = try makeTempDir("kioskd-metrics")
        defer { removeTree(dir) }
        let port = try freePort()
        let config = dir + "/kioskd.yaml"
        // Two connections at most, one per address: a second one from here is refused (per_peer)
        // and fills the listener (accept paused).
        try writeFile(config, testDaemonConfig(dir: dir, port: port, publicKeys: ["max_connections: 2", "max_connections_per_ip: 1"], """
            sessions:
              displays: 970-979
              ports: 10500-10999
            shutdown:
              timeout: 10s
            programs:
              []
            """))
        let notify = try NotifyListener(path: dir + "/notify.sock")
        defer { notify.close() }
        let daemon = try DaemonProcess(executable: kioskd, arguments: ["serve", "--config", config],
                                       environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text", "NOTIFY_SOCKET": notify.path],
                                       directory: dir)
        try await notify.wait(for: "READY=1", timeout: .seconds(60)) { $0.hasPrefix("READY=1") }
        let client = ControlClient(socketPath: dir + "/run/control.sock")

        // A task, running then stopped (cancelled; or failed already if its session could not
        // start here: either way finished when the stop is answered). It is stopped once
        // running, and the daemon only once its session has ended: a daemon stopped while a
        // session boots waits 5 s for the boot and is not what this test is about.
        let created = try await client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"metrics-doc","url":"data:text/html,<title>m</title>m"}"#)
        #expect((200..<300).contains(created.status), "\(created.text)")
        let stopped = try await client.request(.POST, "/v1/tasks/metrics-doc/stop", json: "{}")
        #expect(stopped.status == 200 || stopped.status == 409, "\(stopped.text)")
        if created.text.contains(#""state":"running""#) {
            // A session's end is counted before it is published, so its task's session_ended
            // event comes after the count: long-poll the task's events for it.
            let deadline = ContinuousClock.now + .seconds(30)
            var since = 0, ended = false
            while !ended, ContinuousClock.now < deadline {
                let page = try await client.request(.GET, "/v1/tasks/metrics-doc/events?since=\(since)&wait=10")
                let events = try JSONDecoder().decode(JSONValue.self, from: Data(page.body)).array ?? []
                ended = events.contains { $0["type"]?.string == "session_ended" }
                since = events.last?["seq"]?.number.map { Int($0) } ?? since
            }
            #expect(ended, "the task's session_ended event within 30 s")
        }

        // A viewer refused by a route (no token: counted by its error code), then a connection
        // refused by the public listener: the first one is answered (so it holds this address's
        // place, kept alive), the second is over the per-address cap.
        let first = try connectLoopback(port: port)
        defer { close(first) }
        sendAll(first, Array("GET /viewer?task_id=metrics-doc HTTP/1.1\r\nHost: kioskd\r\n\r\n".utf8))
        let viewer = readAnswer(first, untilComplete: true)
        #expect(viewer.status == 401 && viewer.code == "token_missing", "\(viewer)")
        sendAll(first, Array("GET /health HTTP/1.1\r\nHost: kioskd\r\n\r\n".utf8))
        let health = readAnswer(first, untilComplete: true)
        #expect(health.status == 200, "\(health)")
        let second = try connectLoopback(port: port)
        defer { close(second) }
        let refused = readAnswer(second, untilComplete: true)
        #expect(refused.status == 429, "\(refused)")

        let answer = try await client.request(.GET, "/metrics")
        #expect(answer.status == 200)
        #expect(answer.headers["Content-Type"].first?.hasPrefix("text/plain") == true, "\(answer.headers)")
        let served = try Exposition(text: answer.text)

        for (name, type) in served.types.sorted(by: { $0.key < $1.key }) {
            guard let documented = doc.exported[name] ?? doc.process[name] else {
                Issue.record("served but not in docs/metrics.md: \(name) (\(type))")
                continue
            }
            #expect(documented.type == type, "\(name): documented as \(documented.type), served as \(type)")
        }
        for sample in served.samples {
            let family = served.family(of: sample.name)
            #expect(served.types[family] != nil, "a sample without a # TYPE line: \(sample.line)")
            guard let documented = doc.exported[family] ?? doc.process[family] else { continue }
            // A histogram's buckets carry `le` on top of the metric's own labels.
            let own = sample.labels.subtracting(sample.name.hasSuffix("_bucket") ? ["le"] : [])
            #expect(own == documented.labels, "\(sample.line): documented labels \(documented.labels.sorted())")
        }
        // The process metrics are written at every scrape: all of them are served.
        let missing = Set(doc.process.keys).subtracting(served.types.keys)
        #expect(missing.isEmpty, "process metrics documented but not served: \(missing.sorted())\n\(answer.text)")
        // process_start_time_seconds is in Unix seconds: this daemon started a moment ago.
        if let started = served.samples.first(where: { $0.name == "process_start_time_seconds" }).flatMap({ Double($0.value) }) {
            let now = Double(time(nil))
            #expect(started > now - 600 && started <= now + 5, "process_start_time_seconds \(started), now \(now)")
        }
        // What this test made happen is served, and the capacity gauges from the start.
        for name in ["kioskd_tasks_created_total", "kioskd_tasks_finished_total", "kioskd_bridge_refused_total",
                     "kioskd_bridge_open_connections", "kioskd_bridge_accept_paused_total",
                     "kioskd_tasks_active", "kioskd_tasks_queued", "kioskd_sessions_max", "kioskd_draining"] {
            #expect(served.types[name] != nil, "\(name) is not served after its event:\n\(answer.text)")
        }
        #expect(answer.text.contains(#"kioskd_bridge_refused_total{reason="per_peer"} 1"#), "\(answer.text)")
        #expect(answer.text.contains(#"kioskd_bridge_refused_total{reason="token_missing"} 1"#), "\(answer.text)")
        if created.text.contains(#""state":"running""#) {
            #expect(answer.text.contains(#"kioskd_sessions_ended_total{cause="stopped"} 1"#), "\(answer.text)")
        }

        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0, "\(daemon.stderr.suffix(2000))")
    }
}

// MARK: - docs/metrics.md

struct MetricsDoc {
    struct Metric: Equatable {
        var type: String
        var labels: Set<String>
    }

    /// The table right under "## Exported metrics" (not the ones in its subsections).
    var exported: [String: Metric] = [:]
    /// The table right under "## Process metrics": what the daemon writes itself.
    var process: [String: Metric] = [:]
    /// The names of the table under "## Proposed metrics".
    var proposed: Set<String> = []
    /// Each "#### `name`" section's text, up to the next heading.
    var sections: [String: String] = [:]

    init(text: String) throws {
        var heading = ""
        var section: String?
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if line.hasPrefix("#") {
                section = nil
                heading = line
                if line.hasPrefix("#### `"), line.hasSuffix("`") {
                    let name = String(line.dropFirst("#### `".count).dropLast())
                    section = name
                    sections[name] = ""
                }
                continue
            }
            if let section { sections[section, default: ""] += line + "\n" }
            guard line.hasPrefix("| `") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { trimmed($0, " ") }
            guard cells.count >= 4 else { continue }
            let name = cells[1].filter { $0 != "`" }
            if heading == "## Exported metrics" || heading == "## Process metrics" {
                guard exported[name] == nil, process[name] == nil else { throw TestFailure("docs/metrics.md lists \(name) twice") }
                let labels = cells[3].split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
                let metric = Metric(type: cells[2], labels: Set(labels))
                if heading == "## Exported metrics" { exported[name] = metric } else { process[name] = metric }
            } else if heading == "## Proposed metrics" {
                proposed.insert(name)
            }
        }
        guard !exported.isEmpty else { throw TestFailure("docs/metrics.md has no table under '## Exported metrics'") }
        guard !process.isEmpty else { throw TestFailure("docs/metrics.md has no table under '## Process metrics'") }
    }
}

// MARK: - What the sources register

struct RegisteredMetric {
    var type: String
    var labels: Set<String>
    var file: String
}

/// Every swift-metrics constructor under `root` (`Counter(label: "…", dimensions: [("key", …)])`
/// and the like): name, Prometheus type as swift-prometheus maps it, label keys. A label that is
/// not a string literal is a problem: it could not be documented.
func registeredMetrics(under root: String) -> (metrics: [String: RegisteredMetric], problems: [String]) {
    // swift-prometheus: counters are counters; Gauge and Meter gauges; Timer and an aggregating
    // Recorder histograms (a Recorder with `aggregate: false` is a gauge).
    let types = ["Counter": "counter", "FloatingPointCounter": "counter", "Gauge": "gauge", "Meter": "gauge",
                 "Recorder": "histogram", "Timer": "histogram"]
    var metrics: [String: RegisteredMetric] = [:]
    var problems: [String] = []
    // Not `\b`: Swift's default word boundaries keep `Metrics.Timer` one word.
    let constructor = try! Regex(#"(?:^|[^A-Za-z0-9_])(Counter|FloatingPointCounter|Gauge|Meter|Recorder|Timer)\(\s*label:\s*"#).anchorsMatchLineEndings()
    let key = try! Regex(#"\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*,"#)
    for path in swiftFiles(under: root) {
        guard let text = try? readText(path) else { continue }
        let file = String(path.dropFirst(root.count + 1))
        for match in text.matches(of: constructor) {
            let at = match.output[1].range!.lowerBound
            let lineStart = text[..<at].lastIndex(of: "\n").map { text.index(after: $0) } ?? text.startIndex
            if trimmed(text[lineStart..<at], " \t").hasPrefix("//") { continue }
            let kind = String(text[match.output[1].range!])
            let rest = text[match.range.upperBound...]
            guard rest.first == "\"", let close = rest.dropFirst().firstIndex(of: "\"") else {
                problems.append("\(file): \(kind)(label: \(rest.prefix(40))…)")
                continue
            }
            let name = String(rest[rest.index(after: rest.startIndex)..<close])
            // The call's arguments: up to the parenthesis that closes the constructor's.
            var depth = 1
            var end = match.range.upperBound
            while end < text.endIndex, depth > 0 {
                if text[end] == "(" { depth += 1 } else if text[end] == ")" { depth -= 1 }
                end = text.index(after: end)
            }
            let arguments = text[match.range.upperBound..<end]
            let dimensions = arguments.firstRange(of: "dimensions:").map { arguments[$0.upperBound...] } ?? ""
            let labels = Set(dimensions.matches(of: key).map { String(dimensions[$0.output[1].range!]) })
            var type = types[kind]!
            if kind == "Recorder" && arguments.contains("aggregate: false") { type = "gauge" }
            if let known = metrics[name], known.type != type || known.labels != labels {
                problems.append("\(name) is registered as \(known.type) \(known.labels.sorted()) in \(known.file) and as \(type) \(labels.sorted()) in \(file)")
            }
            metrics[name] = RegisteredMetric(type: type, labels: labels, file: file)
        }
    }
    return (metrics, problems)
}

// MARK: - What ProcessMetrics writes

/// The process metrics in ProcessMetrics.swift's text: each name is a `"process_…"` literal
/// followed by its type's literal (`metric("process_open_fds", "gauge", …)`). A `process_` literal
/// without a type after it is a problem: it could be a metric written another way.
func processMetrics(in text: String) -> (metrics: [String: String], problems: [String]) {
    let literal = try! Regex(#""(process_[a-z0-9_]+)"(\s*,\s*"(counter|gauge|histogram|summary|untyped)")?"#)
    let other = try! Regex(#"process_[a-z0-9_]+"#)
    var metrics: [String: String] = [:]
    var problems: [String] = []
    // Comment lines left out (a comment after code is read as code).
    let code = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !trimmed($0, " \t").hasPrefix("//") }.joined(separator: "\n")
    var covered: [Range<String.Index>] = []
    for match in code.matches(of: literal) {
        covered.append(match.range)
        let name = String(code[match.output[1].range!])
        guard let typeRange = match.output[3].range else {
            problems.append("\"\(name)\" without a type literal after it")
            continue
        }
        let type = String(code[typeRange])
        if let known = metrics[name], known != type { problems.append("\(name) written as a \(known) and as a \(type)") }
        metrics[name] = type
    }
    for match in code.matches(of: other) where !covered.contains(where: { $0.contains(match.range.lowerBound) }) {
        problems.append("\(code[match.range]) outside a name literal")
    }
    return (metrics, problems)
}

/// `text` without the characters of `set` at either end.
func trimmed<S: StringProtocol>(_ text: S, _ set: String) -> String {
    String(text.drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
}

func swiftFiles(under dir: String) -> [String] {
    directoryEntries(dir).flatMap { name -> [String] in
        let path = dir + "/" + name
        var st = stat()
        guard stat(path, &st) == 0 else { return [] }
        if (st.st_mode & S_IFMT) == S_IFDIR { return swiftFiles(under: path) }
        return name.hasSuffix(".swift") ? [path] : []
    }
}

// MARK: - What /metrics serves

/// Prometheus' text format, as far as this test needs it: `# TYPE` lines, and each sample's
/// name and label names.
struct Exposition {
    struct Sample {
        var name: String
        var labels: Set<String>
        var line: String
        /// The number after the name and labels, as written.
        var value: String
    }

    var types: [String: String] = [:]
    var samples: [Sample] = []

    init(text: String) throws {
        for raw in text.split(separator: "\n") {
            let line = String(raw)
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4 else { throw TestFailure("a malformed TYPE line: \(line)") }
                types[String(parts[2])] = String(parts[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            samples.append(try Self.sample(line))
        }
    }

    /// `name{key="value",…} number`: the value may hold spaces, commas and escaped quotes.
    static func sample(_ line: String) throws -> Sample {
        let chars = Array(line)
        var i = 0
        while i < chars.count, chars[i] != "{", chars[i] != " " { i += 1 }
        let name = String(chars[0..<i])
        var labels: Set<String> = []
        if i < chars.count, chars[i] == "{" {
            i += 1
            while i < chars.count, chars[i] != "}" {
                let start = i
                while i < chars.count, chars[i] != "=" { i += 1 }
                labels.insert(trimmed(String(chars[start..<i]), ", "))
                guard i + 1 < chars.count, chars[i + 1] == "\"" else { throw TestFailure("a malformed sample: \(line)") }
                i += 2
                while i < chars.count, chars[i] != "\"" { i += chars[i] == "\\" ? 2 : 1 }
                i += 1
                if i < chars.count, chars[i] == "," { i += 1 }
            }
            guard i < chars.count else { throw TestFailure("a malformed sample: \(line)") }
            i += 1
        }
        let value = String(chars[min(i, chars.count)...]).split(separator: " ").first.map(String.init) ?? ""
        return Sample(name: name, labels: labels, line: line, value: value)
    }

    /// The metric a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` are its own.
    func family(of sample: String) -> String {
        if types[sample] != nil { return sample }
        for suffix in ["_bucket", "_sum", "_count"] where sample.hasSuffix(suffix) {
            let base = String(sample.dropLast(suffix.count))
            if types[base] == "histogram" || types[base] == "summary" { return base }
        }
        return sample
    }
}
