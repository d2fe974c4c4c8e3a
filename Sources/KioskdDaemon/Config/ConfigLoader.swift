import Control
import Supervision
import Kiosk
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// One mistake in the configuration: which key, where, what is wrong and what is allowed.
public struct ConfigIssue: Error, Equatable, CustomStringConvertible {
    public let key: String
    public let message: String
    /// "path/to/kioskd.yaml:12" or "environment KIOSKD_X".
    public let source: String

    public var description: String { "\(source): \(key): \(message)" }
}

public struct ConfigErrors: Error, CustomStringConvertible {
    public let issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// Defaults, then the file, then `KIOSKD_*` variables. Every mistake is collected, not just the first.
public enum ConfigLoader {
    /// Variables that are not configuration keys but belong to the CLI.
    static let otherVariables: Set<String> = ["KIOSKD_SOCKET", "KIOSKD_CONFIG"]

    public static func load(path: String?, environment: [String: String]) throws(ConfigErrors) -> Config {
        guard let path else { return try load(yaml: nil, source: "", environment: environment) }
        switch readFile(path) {
        case .failure(let why):
            throw ConfigErrors(issues: [ConfigIssue(key: "(file)", message: why.message, source: path)])
        case .success(let text):
            return try load(yaml: text, source: path, environment: environment)
        }
    }

    /// The same from the file's text (nil: no file); `source` names it in the issues. Public for
    /// the bench's fuzzer, which loads mutated YAML without files.
    public static func load(yaml: String?, source: String, environment: [String: String]) throws(ConfigErrors) -> Config {
        var config = Config()
        var issues: [ConfigIssue] = []
        if let yaml { apply(yaml: yaml, source: source, to: &config, issues: &issues) }
        applyEnvironment(environment, to: &config, issues: &issues)
        issues += ProgramsParser.crossCheck(config.programs)
        issues += crossCheck(config.publicListener)
        issues += crossCheck(config.capacity, config.sessions)
        issues += socketPathCheck(config)
        issues += crossCheck(config.cluster, storeURL: config.store.url)
        if !issues.isEmpty { throw ConfigErrors(issues: issues) }
        return config
    }

    /// Keys that only make sense together: TLS needs both PEM files, identity-provider keys
    /// need the issuer and audience to check.
    static func crossCheck(_ listener: Config.PublicListener) -> [ConfigIssue] {
        var issues: [ConfigIssue] = []
        func missing(_ key: String, _ why: String) { issues.append(ConfigIssue(key: key, message: "required \(why)", source: "public")) }
        if listener.tlsCertFile.isEmpty != listener.tlsKeyFile.isEmpty {
            listener.tlsCertFile.isEmpty ? missing("public.tls.cert_file", "with public.tls.key_file") : missing("public.tls.key_file", "with public.tls.cert_file")
        }
        let jwt = listener.jwt
        if !jwt.hs256SecretFile.isEmpty || !jwt.jwksFile.isEmpty {
            if jwt.issuer.isEmpty { missing("public.jwt.issuer", "when identity-provider keys are configured") }
            if jwt.audience.isEmpty { missing("public.jwt.audience", "when identity-provider keys are configured") }
        }
        return issues
    }

    /// Thresholds and limits that must be ordered.
    static func crossCheck(_ capacity: CapacitySettings, _ sessions: Config.SessionDefaults) -> [ConfigIssue] {
        var issues: [ConfigIssue] = []
        if capacity.pressureLow >= capacity.pressureHigh {
            issues.append(ConfigIssue(key: "capacity.pressure_low", message: "must be below capacity.pressure_high (\(capacity.pressureHigh.rendered)), got \(capacity.pressureLow.rendered)",
                                      source: "capacity"))
        }
        if let high = sessions.memoryHigh, let max = sessions.memoryMax, high > max {
            issues.append(ConfigIssue(key: "sessions.memory_high", message: "must not be above sessions.memory_max (\(max.rendered)), got \(high.rendered)",
                                      source: "sessions"))
        }
        return issues
    }

    /// Cluster mode needs what every host shares: PostgreSQL, the secret, an address to be
    /// reached at; a lease must outlast a few heartbeats.
    static func crossCheck(_ cluster: Config.Cluster, storeURL: String) -> [ConfigIssue] {
        guard cluster.settings.enabled else { return [] }
        var issues: [ConfigIssue] = []
        func issue(_ key: String, _ message: String) { issues.append(ConfigIssue(key: key, message: message, source: "cluster")) }
        if !storeURL.hasPrefix("postgres") { issue("store.url", "must be a postgres:// URL in cluster mode (the hosts share the store)") }
        if cluster.secretFile.isEmpty { issue("cluster.secret_file", "required in cluster mode (the same file on every host)") }
        if cluster.settings.address.isEmpty { issue("cluster.advertise", "required in cluster mode (this host's private address and the cluster.listen port)") }
        let heartbeat = cluster.settings.heartbeat, ttl = cluster.settings.leaseTTL
        if ttl < heartbeat * 3 {
            issue("cluster.lease_ttl", "must be at least 3 × cluster.heartbeat (\(heartbeat.rendered)), got \(ttl.rendered)")
        }
        return issues
    }

    /// Unix socket paths hold at most 107 bytes: the control socket, and every socket a session
    /// creates under runtime.dir (Chromium's singleton socket is the longest).
    static func socketPathCheck(_ config: Config) -> [ConfigIssue] {
        var issues: [ConfigIssue] = []
        let limit = SessionLayout.maxSocketPath
        if config.control.socket.utf8.count > limit {
            issues.append(ConfigIssue(key: "control.socket", message: "is \(config.control.socket.utf8.count) bytes long: a Unix socket path holds at most \(limit)",
                                      source: "control"))
        }
        let runtime = config.runtime.dir
        let longest = SessionLayout.directory(sessionsDir: runtime + "/sessions", display: config.sessions.displays.upperBound)
        let length = SessionLayout.longestSocketPath(directoryLength: longest.utf8.count)
        if length > limit {
            issues.append(ConfigIssue(key: "runtime.dir", message: "is \(runtime.utf8.count) bytes long: the sessions' socket paths under it would "
                + "reach \(length) bytes, over the \(limit) a Unix socket path holds; use at most \(runtime.utf8.count - (length - limit)) bytes "
                + "(with displays up to \(config.sessions.displays.upperBound))", source: "runtime"))
        }
        return issues
    }

    static func apply(yaml: String, source: String, to config: inout Config, issues: inout [ConfigIssue]) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            issues.append(ConfigIssue(key: "(syntax)", message: "not valid YAML: \(error)", source: source))
            return
        }
        guard let root else { return }  // an empty file: all defaults
        guard let mapping = root.mapping else {
            issues.append(ConfigIssue(key: "(top level)", message: "must be a mapping of keys (control:, public:, …)", source: where_(source, root)))
            return
        }
        walk(mapping, prefix: "", source: source, config: &config, issues: &issues)
    }

    private static func walk(_ mapping: Node.Mapping, prefix: String, source: String, config: inout Config, issues: inout [ConfigIssue]) {
        for (keyNode, value) in mapping {
            let name = keyName(keyNode)
            let path = prefix.isEmpty ? name : prefix + "." + name
            let at = where_(source, keyNode)
            if path == ConfigSchema.programsKey {
                config.programs = ProgramsParser.parse(value, source: source, issues: &issues)
                continue
            }
            if let key = (ConfigSchema.keys + ConfigSchema.deprecatedKeys).first(where: { $0.path == path }) {
                guard let scalar = value.scalar else {
                    issues.append(ConfigIssue(key: path, message: "must be a single value, not a list or mapping", source: at))
                    continue
                }
                do {
                    try key.apply(scalar.string, &config)
                } catch {
                    issues.append(ConfigIssue(key: path, message: error.message, source: at))
                }
                continue
            }
            if let nested = value.mapping, (ConfigSchema.keys + ConfigSchema.deprecatedKeys).contains(where: { $0.path.hasPrefix(path + ".") }) {
                walk(nested, prefix: path, source: source, config: &config, issues: &issues)
                continue
            }
            issues.append(ConfigIssue(key: path, message: unknownKeyMessage(path), source: at))
        }
    }

    static func applyEnvironment(_ environment: [String: String], to config: inout Config, issues: inout [ConfigIssue]) {
        let known = Dictionary(uniqueKeysWithValues: (ConfigSchema.keys + ConfigSchema.deprecatedKeys).map { ($0.environmentVariable, $0) })
        let programsVariable = ConfigSchema.environmentVariable(for: ConfigSchema.programsKey)
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix("KIOSKD_") {
            let source = "environment \(name)"
            if let key = known[name] {
                do {
                    try key.apply(value, &config)
                } catch {
                    issues.append(ConfigIssue(key: key.path, message: error.message, source: source))
                }
            } else if name == programsVariable {
                do {
                    if let node = try Yams.compose(yaml: value) {
                        config.programs = ProgramsParser.parse(node, source: source, issues: &issues)
                    } else {
                        config.programs = []
                    }
                } catch {
                    issues.append(ConfigIssue(key: "programs", message: "not valid YAML: \(error)", source: source))
                }
            } else if !otherVariables.contains(name) {
                let suggestion = closest(name, among: Array(known.keys) + [programsVariable])
                issues.append(ConfigIssue(key: name, message: "unknown variable" + (suggestion.map { " (did you mean \($0)?)" } ?? ""), source: "environment"))
            }
        }
    }

    /// A mapping key as issues name it: as written, but an empty one as "" (else the issue names
    /// nothing) and one that is not a scalar (a list or mapping as a key) as ?.
    static func keyName(_ node: Node) -> String {
        guard let name = node.scalar?.string else { return "?" }
        return name.isEmpty ? "\"\"" : name
    }

    static func unknownKeyMessage(_ path: String) -> String {
        // Sections too, so a misspelt section ("contrl") is recognised.
        let paths = ConfigSchema.keys.map(\.path)
        let sections = Set(paths.flatMap { path in
            let parts = path.split(separator: ".")
            return (1..<parts.count).map { parts.prefix($0).joined(separator: ".") }
        })
        let all = paths + sections.sorted() + [ConfigSchema.programsKey]
        return "unknown key" + (closest(path, among: all).map { " (did you mean \($0)?)" } ?? "")
    }

    static func where_(_ source: String, _ node: Node) -> String {
        guard let mark = node.mark, !source.hasPrefix("environment") else { return source }
        return "\(source):\(mark.line)"
    }

    struct ReadError: Error { let message: String }

    static func readFile(_ path: String) -> Result<String, ReadError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(ReadError(message: "cannot read the config file: \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return .failure(ReadError(message: "cannot read the config file: \(String(cString: strerror(errno)))")) }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > 1 << 20 { return .failure(ReadError(message: "the config file is larger than 1 MiB")) }
        }
        return .success(String(decoding: bytes, as: UTF8.self))
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
func closest(_ word: String, among candidates: [String]) -> String? {
    let scored = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }
    guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, word.count / 4) else { return nil }
    return best.0
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var previous = row[0]
        row[0] = i
        for j in 1...max(b.count, 1) where !b.isEmpty {
            let old = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
            previous = old
        }
    }
    return a.isEmpty ? b.count : row[b.count]
}
