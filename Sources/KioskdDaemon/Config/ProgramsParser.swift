import Supervision
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// The `programs:` list: each entry a program the daemon supervises. Errors name the entry,
/// e.g. `programs[1].command`.
enum ProgramsParser {
    static let fields: [String: String] = [
        "name": "unique name: letters, digits, '-', '_', '.'",
        "command": "list: absolute executable path, then its arguments",
        "restart": "permanent (default), transient or temporary",
        "shutdown": "grace after SIGTERM before SIGKILL (5s), or brutal_kill",
        "significant": "true: when it ends (and is not restarted), the daemon stops",
        "ready": "readiness probe: one of tcp: host:port (with banner:), http: http://host:port/path, file: PATH, log_line: TEXT, notify_fd: N",
        "ready_timeout": "how long the probe may take (10s)",
        "user": "run as this user (needs root)",
        "group": "run with this group",
        "environment": "extra variables (mapping)",
        "working_directory": "absolute path",
        "nofile": "RLIMIT_NOFILE for the program",
    ]
    static let readyKinds = ["tcp", "http", "file", "log_line", "notify_fd"]

    static func parse(_ node: Node, source: String, issues: inout [ConfigIssue]) -> [Config.Program] {
        guard let sequence = node.sequence else {
            issues.append(ConfigIssue(key: "programs", message: "must be a list of programs (- name: …)", source: ConfigLoader.where_(source, node)))
            return []
        }
        var programs: [Config.Program] = []
        for (index, entry) in sequence.enumerated() {
            let prefix = "programs[\(index)]"
            guard let mapping = entry.mapping else {
                issues.append(ConfigIssue(key: prefix, message: "must be a mapping with name: and command:", source: ConfigLoader.where_(source, entry)))
                continue
            }
            if let program = parseOne(mapping, prefix: prefix, source: source, issues: &issues) {
                programs.append(program)
            }
        }
        return programs
    }

    private static func parseOne(_ mapping: Node.Mapping, prefix: String, source: String, issues: inout [ConfigIssue]) -> Config.Program? {
        var values: [String: Node] = [:]
        for (k, v) in mapping {
            let name = ConfigLoader.keyName(k)
            guard fields[name] != nil else {
                let suggestion = closest(name, among: Array(fields.keys))
                issues.append(ConfigIssue(key: "\(prefix).\(name)", message: "unknown key" + (suggestion.map { " (did you mean \($0)?)" } ?? "") + "; allowed: " + fields.keys.sorted().joined(separator: ", "), source: ConfigLoader.where_(source, k)))
                continue
            }
            values[name] = v
        }
        let before = issues.count
        func fail(_ field: String, _ message: String) {
            let at = values[field].map { ConfigLoader.where_(source, $0) } ?? ConfigLoader.where_(source, Node.mapping(mapping))
            issues.append(ConfigIssue(key: "\(prefix).\(field)", message: message, source: at))
        }
        func scalar(_ field: String) -> String? {
            guard let node = values[field] else { return nil }
            guard let s = node.scalar?.string else { fail(field, "must be a single value"); return nil }
            return s
        }
        func parsed<T>(_ field: String, _ parse: (String) throws(ValueError) -> T) -> T? {
            guard let text = scalar(field) else { return nil }
            do { return try parse(text) } catch { fail(field, error.message); return nil }
        }

        let name = scalar("name") ?? ""
        if values["name"] == nil { fail("name", "is required") }
        else if name.isEmpty || !name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) || !name.unicodeScalars.allSatisfy(\.isASCII) {
            fail("name", "must be letters, digits, '-', '_' or '.', got \"\(name)\"")
        }
        var command: [String] = []
        if let node = values["command"] {
            if let list = node.sequence, list.allSatisfy({ $0.scalar != nil }) {
                command = list.map { $0.scalar!.string }
            } else {
                fail("command", "must be a list such as [\"/usr/bin/sleep\", \"infinity\"]")
            }
            if let first = command.first {
                if !first.hasPrefix("/") { fail("command", "the executable must be an absolute path, got \"\(first)\"") }
                else if access(first, X_OK) != 0 { fail("command", "\(first) is not an executable file (\(String(cString: strerror(errno))))") }
            } else if node.sequence != nil {
                fail("command", "must not be empty")
            }
        } else {
            fail("command", "is required")
        }
        var program = Config.Program(name: name, command: command)
        if let restart = parsed("restart", ConfigSchema.choice(RestartType.self)) { program.restart = restart }
        if let text = scalar("shutdown") {
            if text == "brutal_kill" { program.shutdown = .brutalKill }
            else {
                do { program.shutdown = .timeout(try ConfigSchema.parseDuration(text)) }
                catch { fail("shutdown", error.message + " or brutal_kill") }
            }
        }
        if let text = scalar("significant") {
            switch text {
            case "true": program.significant = true
            case "false": program.significant = false
            default: fail("significant", "must be true or false, got \"\(text)\"")
            }
        }
        if program.significant && program.restart == .permanent {
            fail("significant", "a significant program must have restart: transient or temporary")
        }
        if let timeout = parsed("ready_timeout", ConfigSchema.duration(min: .milliseconds(1))) { program.readyTimeout = timeout }
        if let node = values["ready"] { program.ready = parseReady(node, fail: { fail("ready", $0) }) }
        if let user = scalar("user") {
            if getpwnam(user) == nil { fail("user", "no such user \"\(user)\"") }
            program.user = user
        }
        if let group = scalar("group") {
            if getgrnam(group) == nil { fail("group", "no such group \"\(group)\"") }
            if values["user"] == nil { fail("group", "needs user: as well") }
            program.group = group
        }
        if let node = values["environment"] {
            if let env = node.mapping, env.allSatisfy({ $0.key.scalar != nil && $0.value.scalar != nil }) {
                for (k, v) in env { program.environment[k.scalar!.string] = v.scalar!.string }
            } else {
                fail("environment", "must be a mapping of NAME: value")
            }
        }
        program.workingDirectory = parsed("working_directory", ConfigSchema.absolutePath)
        if let nofile = parsed("nofile", ConfigSchema.integer(16...1_048_576)) { program.nofile = UInt64(nofile) }
        return issues.count == before ? program : nil
    }

    private static func parseReady(_ node: Node, fail: (String) -> Void) -> Config.Readiness? {
        guard let mapping = node.mapping else {
            fail("must be a mapping with one of " + readyKinds.joined(separator: ", "))
            return nil
        }
        var entries: [String: String] = [:]
        for (k, v) in mapping {
            guard let key = k.scalar?.string, let value = v.scalar?.string else { fail("must hold single values"); return nil }
            entries[key] = value
        }
        let kinds = entries.keys.filter(readyKinds.contains)
        guard kinds.count == 1, let kind = kinds.first else {
            fail("must have exactly one of " + readyKinds.joined(separator: ", "))
            return nil
        }
        let extra = Set(entries.keys).subtracting([kind, "banner"])
        if !extra.isEmpty || (entries["banner"] != nil && kind != "tcp") {
            fail("unexpected " + (extra.sorted().first ?? "banner") + " (banner: goes only with tcp:)")
            return nil
        }
        let value = entries[kind]!
        do throws(ValueError) {
            switch kind {
            case "tcp": return .tcp(try ConfigSchema.hostPort(value), banner: entries["banner"])
            case "http":
                guard value.hasPrefix("http://") else { throw ValueError(message: "http: must be http://host:port/path, got \"\(value)\"") }
                let rest = value.dropFirst("http://".count)
                let slash = rest.firstIndex(of: "/") ?? rest.endIndex
                return .http(try ConfigSchema.hostPort(String(rest[..<slash])), path: slash == rest.endIndex ? "/" : String(rest[slash...]))
            case "file": return .file(try ConfigSchema.absolutePath(value))
            case "log_line":
                guard !value.isEmpty else { throw ValueError(message: "log_line: must not be empty") }
                return .logLine(value)
            default:
                guard let fd = Int32(value), (3...255).contains(fd) else { throw ValueError(message: "notify_fd: must be 3–255, got \"\(value)\"") }
                return .notifyFD(fd)
            }
        } catch {
            fail(error.message)
            return nil
        }
    }

    /// Checks across entries: unique names.
    static func crossCheck(_ programs: [Config.Program]) -> [ConfigIssue] {
        var seen: Set<String> = []
        var issues: [ConfigIssue] = []
        for (i, p) in programs.enumerated() where !seen.insert(p.name).inserted {
            issues.append(ConfigIssue(key: "programs[\(i)].name", message: "\"\(p.name)\" is used by an earlier program", source: "programs"))
        }
        return issues
    }
}
