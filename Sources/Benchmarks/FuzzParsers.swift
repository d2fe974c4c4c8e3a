// The control API's request bodies and the config loader under fuzzing.
//
// Requests: every body goes through each route's own decoder (CreateTask, EndRequest with and
// without a result, AppendEvent, TokenRequest). Properties: no trap; a refusal is 400
// invalid_request or 413 field_too_large whose message names the field (or says the body is
// not JSON / not an object / has an unknown field) and whose JSON answer parses back to the same
// code and message; an accepted body is a fixed point: what is stored (CreateTask's canonical
// text, the event's data …) decodes again to the same value; the routes' JSON parser
// (`JSONValue(parsing:)`) accepts and refuses what JSONDecoder does, value for value (on bodies
// at most 32 deep and 16 KiB, where JSONDecoder's own cost stays small).
//
// Config: mutated YAML (lines deleted, repeated, swapped, re-indented, values swapped between
// keys or replaced by edge values, YAML anchors, aliases, tags, documents, deep nesting, then
// byte mutations) and KIOSKD_* variables, through `ConfigLoader.load(yaml:)`. Properties: no
// trap; a config, or issues each naming a key, a message and where.
import Control
import Essentials
import FoundationEssentials
import KioskdDaemon

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Request bodies

private enum JSONGrammar {
    static let fields = ["task_id", "url", "width", "height", "input", "timeout_s", "max_lifetime_s", "memory_max_mb", "metadata",
                         "type", "data", "reason", "result", "role", "ttl_s"]
    static let strings = ["https://example.com/", "http://127.0.0.1:8080/a?b=c#d", "about:blank", "data:text/html,<h1>x</h1>", "file:///etc/passwd",
                          "javascript:alert(1)", "chrome://settings", "HTTPS://EXAMPLE.COM", "https:\u{301}//x", "", " ", "view", "control", "VIEW",
                          "admin", "task-1", "_x", "-x", "a b", "agent.step", "Agent", "x.y-z_1", "é", "\u{0}", "\u{7F}", "🙂", "\u{FEFF}", "\u{202E}"]
    static let numbers = ["0", "-0", "1", "-1", "9", "10", "64", "63", "199", "200", "319", "320", "4320", "4321", "7680", "7681", "300", "3600", "3601",
                          "604800", "604801", "1048576", "1048577", "1e2", "1E400", "-1e400", "1.5", "1.0", "2.5e1", "9007199254740993",
                          "18446744073709551616", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "1e-7", "2e-400",
                          "123456789012345678901234567890", "00", "+1", ".5", "5.", "0x10", "NaN", "Infinity"]
    /// Escapes as they appear inside a JSON string: NUL, lone and paired surrogates, a slash.
    static let escapes = ["\\u0000", "\\ud800", "\\udc00\\ud800", "\\ud83d\\ude00", "\\/", "\\\"", "\\\\", "\\b", "\\u00e9", "\\x", "\\u12"]
    static let tokens = ["{", "}", "[", "]", ",", ":", "\"", "null", "true", "1e999", "-", "\\", "\\u0000", "\u{0}", "\u{FF}", "{\"a\":", "[[[[", "\"url\""]
        .map { Array($0.utf8) }

    static func quoted(_ s: String, _ r: inout FuzzRandom) -> String {
        var out = "\""
        var i = 0
        for scalar in s.unicodeScalars {
            i += 1
            if i % 97 == 0 && r.chance(5) { out += r.pick(escapes) }
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += "\\u00" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        if r.chance(5) { out += r.pick(escapes) }
        return out + "\""
    }

    static func string(_ r: inout FuzzRandom) -> String {
        switch r.below(10) {
        case 0..<5: return r.pick(strings)
        case 5 where r.chance(30): return "https://" + String(repeating: "a", count: r.pick([8180, 8184, 8185, 9000]) + r.below(3))
        case 6: return String(repeating: r.pick(["a", "_", "-", "é"]), count: r.within(60...70))
        case 7: return String(String.UnicodeScalarView((0..<r.size(40)).compactMap { _ in Unicode.Scalar(UInt32(r.below(0x11_0000))) }))
        case 8: return r.pick(strings) + String(repeating: "x", count: r.size(2000))
        default: return String(decoding: r.bytes(r.size(32)), as: UTF8.self)
        }
    }

    static func value(_ r: inout FuzzRandom, depth: Int) -> String {
        switch r.below(100) {
        case 0..<32: return quoted(string(&r), &r)
        case 32..<58: return r.chance(70) ? r.pick(numbers) : String(Int64(truncatingIfNeeded: r.next()) >> r.below(64))
        case 58..<65: return r.pick(["true", "false", "null"])
        case 65..<82 where depth < 4: return object(&r, depth: depth + 1)
        case 82..<97 where depth < 4: return "[" + (0..<r.size(6)).map { _ in value(&r, depth: depth + 1) }.joined(separator: ",") + "]"
        case 65..<97: return r.pick(numbers)
        case 97:
            // Past the 16 KiB (metadata) and 64 KiB (data, result) bounds, or just under.
            let total = r.pick([16 * 1024, 64 * 1024, 70 * 1024])
            let each = 500
            return "{" + (0..<(total / (each + 10) + r.below(3))).map { "\"k\($0)\":\"\(String(repeating: "v", count: each))\"" }.joined(separator: ",") + "}"
        case 98:
            let n = r.pick([100, 511, 512, 513, 3000])
            return String(repeating: "[", count: n) + String(repeating: "]", count: n)
        default:
            let n = r.pick([100, 511, 512, 513, 3000])
            return String(repeating: "{\"a\":", count: n) + "1" + String(repeating: "}", count: n)
        }
    }

    static func space(_ r: inout FuzzRandom) -> String { r.chance(80) ? "" : r.pick([" ", "\n", "\t", "\r\n", "  "]) }

    static func object(_ r: inout FuzzRandom, depth: Int) -> String {
        var pairs: [String] = []
        for _ in 0..<r.size(8) {
            let key = r.chance(85) ? r.pick(fields) : string(&r)
            pairs.append(space(&r) + quoted(key, &r) + space(&r) + ":" + space(&r) + value(&r, depth: depth))
            if r.chance(5) { pairs.append(pairs[r.below(pairs.count)]) }
        }
        return "{" + pairs.joined(separator: ",") + space(&r) + "}"
    }

    static func body(_ r: inout FuzzRandom) -> [UInt8] {
        switch r.below(100) {
        case 0..<80: return Array((space(&r) + object(&r, depth: 0) + space(&r)).utf8)
        case 80..<92: return Array(value(&r, depth: 0).utf8)
        default: return Array(r.pick(["", " ", "\n\t ", "\u{FEFF}{}", "{}{}", "{} x"]).utf8)
        }
    }
}

private struct RouteDecoder: Sendable {
    let name: String
    let allowed: Set<String>
    /// nil when refused (the error checked); else the broken fixed point, if any.
    let run: @Sendable ([UInt8]) throws(APIError) -> String?
}

private func encodedBody(_ fill: (inout JSONWriter) -> Void) -> [UInt8] {
    var w = JSONWriter()
    fill(&w)
    return Array(w.text.utf8)
}

private let routeDecoders: [RouteDecoder] = [
    RouteDecoder(name: "POST /v1/tasks", allowed: ["task_id", "url", "width", "height", "input", "timeout_s", "max_lifetime_s", "memory_max_mb", "metadata"]) { body throws(APIError) in
        var task = try CreateTask(body: body)
        task.taskID = nil
        do {
            let again = try CreateTask(body: Array(task.canonical.utf8))
            return again == task ? nil : "the canonical text \(task.canonical) decodes to another request"
        } catch {
            return "the canonical text \(task.canonical) is refused: \(error)"
        }
    },
    RouteDecoder(name: "POST /v1/tasks/{id}/stop", allowed: ["reason"]) { body throws(APIError) in
        let end = try EndRequest(body: body, allowResult: false)
        let again = try? EndRequest(body: encodedBody { w in if let reason = end.reason { w.field("reason", reason) } }, allowResult: false)
        return again?.reason == end.reason && again?.result == nil ? nil : "the reason does not decode again"
    },
    RouteDecoder(name: "POST /v1/tasks/{id}/complete", allowed: ["reason", "result"]) { body throws(APIError) in
        let end = try EndRequest(body: body, allowResult: true)
        let again = try? EndRequest(body: encodedBody { w in
            if let reason = end.reason { w.field("reason", reason) }
            if let result = end.result { w.raw("result", result) }
        }, allowResult: true)
        return again?.reason == end.reason && again?.result == end.result ? nil : "the stored result \(end.result ?? "null") does not decode to itself"
    },
    RouteDecoder(name: "POST /v1/tasks/{id}/events", allowed: ["type", "data"]) { body throws(APIError) in
        let event = try AppendEvent(body: body)
        let again = try? AppendEvent(body: encodedBody { w in
            w.field("type", event.type)
            w.raw("data", event.data)
        })
        return again?.type == event.type && again?.data == event.data ? nil : "the stored data \(event.data) does not decode to itself"
    },
    RouteDecoder(name: "POST /v1/tasks/{id}/viewer-token", allowed: ["role", "ttl_s"]) { body throws(APIError) in
        let ask = try TokenRequest(body: body)
        let again = try? TokenRequest(body: encodedBody { w in
            w.field("role", ask.role.rawValue)
            w.field("ttl_s", Int64(ask.ttl))
        })
        return again?.role == ask.role && again?.ttl == ask.ttl ? nil : "the token request does not decode again"
    },
]

/// A refusal a client can act on: the status and code the API documents, a message naming the
/// field (or the body's fault), and a JSON answer that parses back to both.
private func refusalProblem(_ e: APIError, _ decoder: RouteDecoder) -> String? {
    let status = e.status.code
    guard (status == 400 && e.code == "invalid_request") || (status == 413 && e.code == "field_too_large") else {
        return "\(decoder.name) answered \(status) \(e.code)"
    }
    // By bytes: as Characters, a key starting with a combining mark merges with the quote.
    func starts(_ prefix: String) -> Bool { e.message.utf8.starts(with: prefix.utf8) }
    let precise = ["the body is not valid JSON", "the body must be a JSON object"].contains(e.message) || starts("unknown field '")
        || decoder.allowed.contains { starts("field '\($0)' ") }
    guard precise else { return "\(decoder.name) refused with a message naming no field: '\(e.message)'" }
    guard let answer = try? JSONDecoder().decode(JSONValue.self, from: Data(e.body.utf8)),
          answer["error"]?["code"]?.string == e.code, answer["error"]?["message"]?.string == e.message else {
        return "\(decoder.name): the error answer does not parse back: \(e.body)"
    }
    return nil
}

/// How deep brackets nest outside strings: JSONDecoder's cost grows with it.
private func nestingDepth(_ bytes: [UInt8]) -> Int {
    var depth = 0, deepest = 0, inString = false, escaped = false
    for c in bytes {
        if inString {
            if escaped { escaped = false } else if c == UInt8(ascii: "\\") { escaped = true } else if c == UInt8(ascii: "\"") { inString = false }
            continue
        }
        switch c {
        case UInt8(ascii: "\""): inString = true
        case UInt8(ascii: "["), UInt8(ascii: "{"): depth += 1; deepest = max(deepest, depth)
        case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
        default: break
        }
    }
    return deepest
}

/// Whether an object repeats a key (decoded: "a" and "\u0061" are one key).
private func repeatsAKey(_ b: [UInt8]) -> Bool {
    var open: [Set<String>?] = []  // per container: an object's keys so far, nil for an array
    var i = 0
    while i < b.count {
        switch b[i] {
        case UInt8(ascii: "{"): open.append([])
        case UInt8(ascii: "["): open.append(nil)
        case UInt8(ascii: "}"), UInt8(ascii: "]"): _ = open.popLast()
        case UInt8(ascii: "\""):
            let start = i
            i += 1
            while i < b.count && b[i] != UInt8(ascii: "\"") { i += b[i] == UInt8(ascii: "\\") ? 2 : 1 }
            let end = min(i + 1, b.count)
            var j = end
            while j < b.count && [0x20, 0x09, 0x0A, 0x0D].contains(b[j]) { j += 1 }
            if j < b.count, b[j] == UInt8(ascii: ":"), let last = open.last, var keys = last {
                let key = (try? JSONValue(parsing: b[start..<end]))?.string ?? String(decoding: b[start..<end], as: UTF8.self)
                if !keys.insert(key).inserted { return true }
                open[open.count - 1] = keys
            }
        default: break
        }
        i += 1
    }
    return false
}

/// The routes' parser against JSONDecoder, value for value, but for its two documented
/// refusals: a repeated key's value (JSONDecoder never reads it) and text with NUL bytes
/// (JSONDecoder may read it as UTF-16 or UTF-32; in UTF-8 JSON a NUL is never valid).
private func parserDisagreement(_ body: [UInt8]) -> String? {
    let mine = try? JSONValue(parsing: body)
    let reference = try? JSONDecoder().decode(JSONValue.self, from: Data(body))
    guard mine != reference, !(mine == nil && (body.contains(0) || repeatsAKey(body))) else { return nil }
    func show(_ v: JSONValue?) -> String { v.map { String("\($0)".prefix(200)) } ?? "an error" }
    return "JSONValue(parsing:) gives \(show(mine)), JSONDecoder \(show(reference))"
}

/// Returns the properties violated.
func fuzzRequests(inputs: Int, seed: UInt64, corpus directory: String) -> Int {
    var run = FuzzRun(target: "requests", seed: seed)
    defer { run.finish() }
    var r = FuzzRandom(seed: seed ^ 0x7265_7175_6573_7473)
    let corpus = FuzzCorpus.load(directory, "requests").map(\.bytes)
    var accepted = 0, compared = 0
    func check(_ body: [UInt8]) {
        run.check(body) {
            var problems: [String] = []
            if body.count <= 16 * 1024 && nestingDepth(body) <= 32 {
                compared += 1
                if let problem = parserDisagreement(body) { problems.append(problem) }
            }
            for decoder in routeDecoders {
                do throws(APIError) {
                    if let broken = try decoder.run(body) { problems.append("\(decoder.name): \(broken)") }
                    accepted += 1
                } catch {
                    if let problem = refusalProblem(error, decoder) { problems.append(problem) }
                }
            }
            return problems
        }
    }
    for body in corpus { check(body) }
    var previous = corpus[0]
    while run.inputs < inputs {
        var body = r.chance(15) ? r.pick(corpus) : JSONGrammar.body(&r)
        if r.chance(40) { Mutation.mutate(&body, other: previous, start: 1, tokens: JSONGrammar.tokens, &r) }
        check(body)
        previous = body
    }
    run.report(", \(routeDecoders.count) decoders each, \(accepted) decodes accepted, \(compared) compared with JSONDecoder, \(corpus.count) corpus files")
    return run.violations
}

// MARK: - Config

private enum YAMLGrammar {
    static let values = ["", "auto", "0", "-1", "1", "true", "false", "yes", "off", "~", "null", "9223372036854775807", "9223372036854775808",
                         "-9223372036854775809", "1e308", "1e309", "nan", ".nan", "inf", ".inf", "-inf", "0x10", "0o17", "1_000", "5x", "500ms", "0ms",
                         "1ms", "0.5s", "-5s", "99999999999999999999d", "1e300s", "9.3e12s", "106751992d", "2562047788015216h", "1.8e19", "18446744073709551615",
                         "17179869184TiB", "16EiB", "1.5GiB", "0.5K", "64MiB", "-0", "/", "/run/x", "relative/path", "\"/a\\0b\"", "1-2", "2-1",
                         "0-65535", "65535-65535", "a-b", "-", "Ctrl+W", "Ctrl+Alt+Delete", "Super", "Ctrl+", "+", ", ,", "F5, Ctrl+R", "http://",
                         "https://a", "https://a/b", "0.0.0.0:0", "[::1]:8080", "[::1]", ":80", "host:99999", "\"\"", "'single'", "[a, b]", "{a: 1}",
                         "&x 5", "*x", "!!str 5", "!!int x", "|", ">-", "\"\\u0000\"", "\"\\ud800\"", "postgres://u@h/db?sslmode=bogus",
                         "postgres://u@h:99999/db", "sqlite:///x", "sqlite://", "postgres://", "mysql://x", "kiosk_only", "agent", "builtin",
                         "websockify", "external", "view", "control", "one_for_all", "debug", "journal", "nobody", "root", "0,0,4294967296",
                         String(repeating: "a", count: 300), "/" + String(repeating: "d", count: 120), String(repeating: "ü", count: 40)]
    static let constructs = ["---", "...", "%YAML 1.1", "%TAG ! tag:x,2000:", "? [a, b]\n: c", "<<: *a", "anchor: &a {x: 1}", "alias: *a", "*undefined",
                             "key: !!binary aGVsbG8=", "key: |\n  text\n  more", "key: >-\n  folded", "{control: {socket: /x}}", "[1, 2, 3]", "- a\n- b",
                             "\"quoted\\u0000\": 1", "'': empty", "\"\": 1", "? : x", "a: &a [*a]", "~: 1", "? |\n  multi\n  line\n: v",
                             "a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c]",
                             "programs: &p [{name: a, command: [/bin/true]}]\nx: *p", "control: &c\n  socket: /a\npublic: *c",
                             String(repeating: "[", count: 1200) + String(repeating: "]", count: 1200),
                             "control: " + String(repeating: "{a: ", count: 1100) + "1" + String(repeating: "}", count: 1100)]
    static let programFields = ["restart", "shutdown", "significant", "ready", "ready_timeout", "user", "group", "environment",
                                "working_directory", "nofile", "bogus", "command", "name"]
    static let programValues = ["permanent", "transient", "temporary", "brutal_kill", "5s", "1e300s", "true", "false", "{tcp: 127.0.0.1:80}",
                                "{tcp: 127.0.0.1:80, banner: RFB}", "{http: http://127.0.0.1:80/x}", "{http: http://h}", "{file: /tmp/x}",
                                "{log_line: ready}", "{notify_fd: 3}", "{notify_fd: 99999999999999999999}", "{tcp: x, banner: y}", "{}",
                                "{a: 1, b: 2}", "[tcp]", "root", "nobody", "{A: b}", "{A: [b]}", "/tmp", "16", "15", "1048577", "[\"/bin/true\"]",
                                "[/bin/sleep, infinity]", "[]", "[relative]", "[[/bin/true]]", "[\"/nonexistent\"]", "a", "a b", "x.y-z", "é"]
    static let commands = ["[\"/bin/true\"]", "[\"/bin/true\"]", "[/bin/sleep, infinity]", "[]", "[relative]", "[[/bin/true]]",
                           "[\"/nonexistent\"]", "/bin/true", "{a: b}", "[\"/bin/true\", {a: b}]"]
    static let tokens = [": ", "- ", "&a ", "*a", "!!str ", "---\n", "? ", "|\n", "{", "}", "[", "]", "#", "\t", "'", "\"", "~", "<<: *a", "\n  ", ",", "\u{0}"]
        .map { Array($0.utf8) }

    /// Key paths written in the seeds (section.key, section.sub.key): the variables' names.
    static func keyPaths(_ text: String) -> [String] {
        var stack: [(indent: Int, name: String)] = []
        var out: Set<String> = []
        for line in text.split(separator: "\n") {
            let indent = line.prefix { $0 == " " }.count
            let rest = line.dropFirst(indent)
            guard !rest.hasPrefix("#"), !rest.hasPrefix("-"), let colon = rest.firstIndex(of: ":") else { continue }
            let name = String(rest[..<colon])
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { continue }
            while let last = stack.last, last.indent >= indent { stack.removeLast() }
            stack.append((indent, name))
            out.insert(stack.map(\.name).joined(separator: "."))
        }
        return out.sorted()
    }

    static func value(_ r: inout FuzzRandom, _ lines: [String]) -> String {
        switch r.below(10) {
        case 0..<5: return r.pick(values)
        case 5..<8:
            let line = r.pick(lines)
            return line.firstIndex(of: ":").map { String(line[line.index(after: $0)...]).trimmedSpaces() } ?? line
        case 8: return r.pick(values) + r.pick(["", "s", "ms", "GiB", " ", ",", "0"]) + r.pick(values)
        default: return String(decoding: r.bytes(r.size(24)).map { $0 == 0x0A ? 0x20 : $0 }, as: UTF8.self)
        }
    }

    static func programs(_ r: inout FuzzRandom) -> String {
        var s = "programs:\n"
        for _ in 0..<r.within(1...3) {
            s += "  - name: \(r.pick(["a", "web", "a b", "\"\"", "x.y-z", "é", "a"]))\n"
            s += "    command: \(r.pick(commands))\n"
            for _ in 0..<r.below(5) { s += "    \(r.pick(programFields)): \(r.pick(programValues + values))\n" }
        }
        return s
    }

    static func mutate(_ text: String, _ r: inout FuzzRandom, paths: [String]) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for _ in 0..<r.pick([1, 1, 2, 3, 6]) {
            if lines.isEmpty { lines.append("") }
            let i = r.below(lines.count)
            switch r.below(10) {
            case 0: lines.remove(at: i)
            case 1: lines.insert(lines[i], at: r.below(lines.count + 1))
            case 2, 3:
                if let colon = lines[i].firstIndex(of: ":") { lines[i] = String(lines[i][...colon]) + " " + value(&r, lines) }
            case 4: lines.swapAt(i, r.below(lines.count))
            case 5: lines[i] = r.pick(["", " ", "  ", "    ", "\t", "      "]) + lines[i].drop { $0 == " " }
            case 6:
                let path = r.chance(80) ? r.pick(paths) : String(decoding: r.bytes(r.within(1...12)), as: UTF8.self)
                let parts = path.split(separator: ".")
                lines.insert(String(repeating: "  ", count: r.below(max(parts.count, 1))) + (parts.last.map(String.init) ?? path) + ": " + value(&r, lines), at: i)
            case 7: lines.insert(r.pick(constructs), at: i)
            case 8: lines.insert(programs(&r), at: i)
            default: lines[i] += r.pick([" # c", " &a", " !!str", ":", " :", "  ", "\t", " *a"])
            }
        }
        return lines.joined(separator: "\n")
    }

    /// `#env NAME=value` lines at the top of an input are its environment, so a saved input
    /// replays with its variables.
    static func environment(_ text: String) -> [String: String] {
        var env: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            guard line.hasPrefix("#env ") else { break }
            let entry = line.dropFirst(5)
            guard let eq = entry.firstIndex(of: "=") else { continue }
            env[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        return env
    }

    static func environmentLines(_ r: inout FuzzRandom, paths: [String], lines: [String]) -> String {
        var out = ""
        for _ in 0..<r.within(1...3) {
            let name: String
            switch r.below(10) {
            case 0..<7: name = "KIOSKD_" + r.pick(paths).uppercased().replacingDots()
            case 7: name = "KIOSKD_PROGRAMS"
            default: name = "KIOSKD_" + String(decoding: r.bytes(r.within(1...10)).map { $0 == 0x0A || $0 == 0x3D ? 0x5F : $0 }, as: UTF8.self)
            }
            let text = name == "KIOSKD_PROGRAMS"
                ? r.pick(["[{name: a, command: [/bin/true]}]", "[]", "{}", "x", "[{name: a}]", "[{name: a, command: [/bin/true]}, {name: a, command: [/bin/true]}]", "[*a]", "&a [*a]"])
                : value(&r, lines)
            out += "#env \(name)=\(text.split(separator: "\n").joined(separator: " "))\n"
        }
        return out
    }
}

private extension String {
    func trimmedSpaces() -> String { String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
    func replacingDots() -> String { String(map { $0 == "." ? "_" : $0 }) }
}

/// Returns the properties violated.
func fuzzConfig(inputs: Int, seed: UInt64, corpus directory: String) -> Int {
    var run = FuzzRun(target: "config", seed: seed)
    defer { run.finish() }
    var r = FuzzRandom(seed: seed ^ 0x636F_6E66_6967)
    let corpus = FuzzCorpus.load(directory, "config").map(\.bytes)
    let paths = Array(Set(corpus.flatMap { YAMLGrammar.keyPaths(String(decoding: $0, as: UTF8.self)) })).sorted()
    var loaded = 0, issues = 0
    func check(_ input: [UInt8]) {
        run.check(input) {
            // As the file is read: bytes to text, invalid UTF-8 replaced.
            let text = String(decoding: input, as: UTF8.self)
            do throws(ConfigErrors) {
                _ = try ConfigLoader.load(yaml: text, source: "fuzz.yaml", environment: YAMLGrammar.environment(text))
                loaded += 1
                return []
            } catch {
                issues += error.issues.count
                if error.issues.isEmpty { return ["refused with no issue"] }
                return error.issues.compactMap { issue in
                    issue.key.isEmpty || issue.message.isEmpty || issue.source.isEmpty ? "an issue without its key, message or place: \(issue)" : nil
                }
            }
        }
    }
    for input in corpus { check(input) }
    var previous = corpus[0]
    while run.inputs < inputs {
        let base = String(decoding: r.pick(corpus), as: UTF8.self)
        let lines = base.split(separator: "\n").map(String.init)
        var text = YAMLGrammar.mutate(base, &r, paths: paths)
        if r.chance(15) { text = YAMLGrammar.environmentLines(&r, paths: paths, lines: lines) + text }
        var input = Array(text.utf8)
        if r.chance(30) { Mutation.mutate(&input, other: previous, start: 0, tokens: YAMLGrammar.tokens, &r) }
        check(input)
        previous = input
    }
    run.report(", \(loaded) loaded, \(issues) issues named, \(corpus.count) corpus files, \(paths.count) key paths from the seeds")
    return run.violations
}
