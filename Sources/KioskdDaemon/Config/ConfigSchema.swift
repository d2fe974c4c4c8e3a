import Display
import Store
import Kiosk
import Supervision

#if canImport(Glibc)
import Glibc
import ViewerInput
#endif

/// Every scalar configuration key: its path, what it means, how its text is checked and stored.
/// The environment variable is derived from the path (`control.socket` → `KIOSKD_CONTROL_SOCKET`).
struct ConfigKey: Sendable {
    let path: String
    let doc: String
    let current: @Sendable (Config) -> String
    let apply: @Sendable (String, inout Config) throws(ValueError) -> Void

    var environmentVariable: String { ConfigSchema.environmentVariable(for: path) }
}

/// A value that does not fit its key; the loader adds which key and where.
struct ValueError: Error, Equatable {
    let message: String
}

enum ConfigSchema {
    static func environmentVariable(for path: String) -> String {
        "KIOSKD_" + path.uppercased().map { $0 == "." ? "_" : $0 }.map(String.init).joined()
    }

    /// `programs` is a list of tables, checked by `ProgramsParser`; its variable holds YAML.
    static let programsKey = "programs"

    static let keys: [ConfigKey] = [
        key("control.socket", "Unix socket of the control API (HTTP/JSON).", \.control.socket, absolutePath),
        key("control.group", "Group of the control socket (mode 0660): the API layer's user must be in it. Empty: kioskd's group.", \.control.group, groupName),
        key("control.allow_uids", "Peer uids allowed on the control socket, comma-separated. Empty: root and kioskd's own uid.", \.control.allowUIDs, ids),
        key("control.allow_gids", "Peer primary gids allowed on the control socket, comma-separated. Empty: the socket's group.", \.control.allowGIDs, ids),
        key("tasks.max_sessions", "Tasks running at once on this host; more wait in queued.", \.tasks.maxSessions, integer(1...256)),
        key("tasks.max_queued", "Tasks waiting for room at once; a create beyond it is answered 503 with Retry-After.", \.tasks.maxQueued, integer(0...100_000)),
        key("capacity.memory", "A cap on what the sessions use together, besides kioskd's own cgroup limit and the machine's memory (the smallest wins). auto: those two alone.", \.capacity.memory, automatic(bytes(min: 64 << 20))),
        key("capacity.reserve", "Memory kept out of the sessions' budget for the daemon, the OS and the page cache.", \.capacity.reserve, bytes(min: 0)),
        key("capacity.session_estimate", "A session's expected peak memory until sessions have been measured (then learned: the largest recent peak and a quarter).", \.capacity.sessionEstimate, bytes(min: 16 << 20)),
        key("capacity.pressure_high", "Host memory pressure (PSI some avg10, percent) at which no task is admitted and the warm pool is given up.", \.capacity.pressureHigh, decimal(0.1...100)),
        key("capacity.pressure_low", "Host memory pressure below which admission resumes (below capacity.pressure_high).", \.capacity.pressureLow, decimal(0...100)),
        key("capacity.max_starting", "Sessions starting at once (booting, or running for less than 3 s): a burst is admitted a few at a time, each one's memory measured before more start (and boots share the CPU).", \.capacity.maxStarting, integer(1...256)),
        key("tasks.start_timeout", "Default timeout_s: how long a task may take to be running.", \.tasks.startTimeout, duration(min: .seconds(1))),
        key("tasks.max_lifetime", "Default max_lifetime_s of a task, from its creation.", \.tasks.maxLifetime, duration(min: .seconds(10))),
        key("tasks.retention", "Finished tasks and their events are deleted this long after they end.", \.tasks.retention, duration(min: .seconds(60))),
        key("public.listen", "host:port of the public listener (ALB health, VNC bridge, viewer page).", \.publicListener.listen, hostPort),
        key("public.origins", "Origins allowed to open the viewer WebSocket and frame the viewer page, comma-separated (https://app.example.com), besides the listener's own, which always is.", \.publicListener.bridge.origins, origins),
        key("public.ping_interval", "A WebSocket ping this often; a viewer that has not answered by the next one is closed.", \.publicListener.bridge.pingInterval, duration(min: .seconds(1))),
        key("public.idle_timeout", "A viewer connection with no bytes either way for this long is closed.", \.publicListener.bridge.idleTimeout, duration(min: .seconds(1))),
        key("public.max_lifetime", "The longest a viewer connection lives.", \.publicListener.bridge.maxLifetime, duration(min: .seconds(1))),
        key("public.max_viewers", "Viewers at once per task.", \.publicListener.bridge.maxViewers, integer(1...1000)),
        key("public.max_connections", "Connections open at once; beyond it the listener stops accepting until one closes. auto: half of what the open-file limit leaves after a quarter kept for the rest of kioskd (a larger number is lowered to that).", \.publicListener.bridge.maxConnections, automatic(integer(1...1_000_000))),
        key("public.max_connections_per_ip", "Connections open at once from one address; more are answered 429. auto: a quarter of max_connections. Behind a load balancer, keep it above the viewers one of its addresses carries.", \.publicListener.bridge.maxConnectionsPerPeer, automatic(integer(1...1_000_000))),
        key("public.header_timeout", "A request head must arrive within this of the connection's start or the previous answer (else 408); an idle kept-alive connection is closed then.", \.publicListener.bridge.headerTimeout, duration(min: .seconds(1))),
        key("public.auth_timeout", "A connection that has not become a viewer WebSocket within this is closed (after its current answer).", \.publicListener.bridge.authTimeout, duration(min: .seconds(1))),
        key("public.max_request_line", "Longest request line in bytes (the token rides in its query); longer is 414.", \.publicListener.bridge.maxRequestLine, integer(1024...1 << 20)),
        key("public.max_header_bytes", "Most bytes of header fields in one request; more is 431.", \.publicListener.bridge.maxHeaderBytes, integer(4096...1 << 20)),
        key("public.clipboard", "Let a control viewer's clipboard reach the session (never a view viewer's).", \.publicListener.bridge.clipboard, boolean),
        key("public.tls.cert_file", "PEM certificate chain: serve HTTPS/WSS (direct exposure). Empty: plain HTTP behind a load balancer.", \.publicListener.tlsCertFile, optionalPath),
        key("public.tls.key_file", "PEM private key for public.tls.cert_file.", \.publicListener.tlsKeyFile, optionalPath),
        key("public.jwt.hs256_secret_file", "A file holding the identity provider's HS256 secret; empty: none.", \.publicListener.jwt.hs256SecretFile, optionalPath),
        key("public.jwt.jwks_file", "A JWKS document (RS256/ES256 keys, e.g. Cognito's jwks.json saved locally); empty: none.", \.publicListener.jwt.jwksFile, optionalPath),
        key("public.jwt.issuer", "The iss an identity-provider token must carry.", \.publicListener.jwt.issuer, text),
        key("public.jwt.audience", "Must be in the token's aud, or be its client_id (Cognito access tokens).", \.publicListener.jwt.audience, text),
        key("public.jwt.task_claim", "The claim naming the task a token is for.", \.publicListener.jwt.taskClaim, nonEmpty),
        key("public.jwt.role_claim", "The claim naming the role (view or control; missing: view).", \.publicListener.jwt.roleClaim, nonEmpty),
        key("public.jwt.any_task", "Accept a token without the task claim for any task (only if the API layer checks ownership).", \.publicListener.jwt.anyTask, boolean),
        key("state.dir", "Persistent state: the SQLite store, the record of running sessions.", \.state.dir, absolutePath),
        key("runtime.dir", "Runtime files: sockets and per-session directories.", \.runtime.dir, absolutePath),
        key("store.url", "Task store: empty for SQLite in state.dir; sqlite:///path, or postgres://user@host/db?sslmode=…[&sslrootcert=/abs/ca.pem]", \.store.url, storeURL),
        key("log.level", "Lowest level logged: " + LogLevel.allCases.map(\.rawValue).joined(separator: ", ") + ".", \.log.level, choice(LogLevel.self)),
        key("log.format", "auto (journal under systemd, text otherwise), journal, or text.", \.log.format, choice(LogFormat.self)),
        key("supervisor.strategy", "Restart strategy of the programs group: one_for_one, one_for_all, rest_for_one.", \.supervisor.strategy, choice(Strategy.self)),
        key("supervisor.max_restarts", "Restarts allowed within supervisor.period before the group gives up.", \.supervisor.maxRestarts, integer(0...10_000)),
        key("supervisor.period", "Window for supervisor.max_restarts.", \.supervisor.period, duration(min: .milliseconds(1))),
        key("supervisor.backoff.initial", "Delay before the second consecutive restart (the first is immediate).", \.supervisor.backoff.initial, duration(min: .zero)),
        key("supervisor.backoff.multiplier", "Growth of the delay per further consecutive failure.", \.supervisor.backoff.multiplier, decimal(1...10)),
        key("supervisor.backoff.max", "Longest delay between restarts.", \.supervisor.backoff.max, duration(min: .zero)),
        key("supervisor.backoff.jitter", "Random spread of each delay, as a fraction (0.25 = ±25 %).", \.supervisor.backoff.jitter, decimal(0...1)),
        key("supervisor.backoff.reset_after", "Running this long counts as stable: the failure count starts over.", \.supervisor.backoff.resetAfter, duration(min: .zero)),
        key("shutdown.timeout", "Bound on an orderly stop (SIGTERM); whatever still runs after it is killed.", \.shutdown.timeout, duration(min: .milliseconds(100))),
        key("sessions.user", "Unprivileged user the session programs run as when kioskd runs as root (Chromium's sandbox needs one).", \.sessions.user, userName),
        key("sessions.displays", "X display numbers sessions may use (first-last).", \.sessions.displays, range(1...65535)),
        key("sessions.ports", "Loopback TCP ports for the sessions' CDP and websockify (first-last).", \.sessions.ports, range(1024...65535)),
        key("sessions.width", "Screen width in pixels.", \.sessions.width, integer(SessionRules.width)),
        key("sessions.height", "Screen height in pixels.", \.sessions.height, integer(SessionRules.height)),
        key("sessions.input", "What VNC viewers may do: control (keys, mouse, clicks) or view.", \.sessions.input, choice(ViewerRole.self)),
        key("sessions.bridge", "How viewers reach x11vnc: builtin (kioskd's bridge) or websockify (a relay process per session).", \.sessions.bridge, choice(BridgeMode.self)),
        key("sessions.warm", "Fresh sessions kept booted (at about:blank) for tasks of the default size and input to take at once; counted in the memory budget, refilled in the background.", \.capacity.warm, integer(0...256)),
        key("sessions.memory_max", "A session's memory limit (its cgroup's): past it the kernel kills inside that session only. auto: half the sessions' budget.", \.sessions.memoryMax, automatic(bytes(min: 64 << 20))),
        key("sessions.memory_high", "Where the kernel starts to reclaim and slow a session down (cgroup v2 memory.high; v1 has none). auto: nine tenths of sessions.memory_max.", \.sessions.memoryHigh, automatic(bytes(min: 32 << 20))),
        key("sessions.pids_max", "Processes and threads one session may have (its cgroup's pids.max).", \.sessions.pidsMax, integer(64...1_000_000)),
        key("sessions.max_restarts", "Restarts a session may spend per sessions.period (at each level of its tree) before it ends.", \.sessions.maxRestarts, integer(0...1000)),
        key("sessions.period", "Window for sessions.max_restarts.", \.sessions.period, duration(min: .seconds(1))),
        key("sessions.browser", "The Chromium binary (Debian's by default; not the /usr/bin/chromium wrapper).", \.sessions.browser, absolutePath),
        key("sessions.sandbox", "Chromium's sandbox. false only if you must: a hostile page could then reach the host.", \.sessions.sandbox, boolean),
        key("sessions.port_guard", "Refuse other local users' connections to the sessions' loopback ports (nftables): true (kioskd installs it; needs CAP_NET_ADMIN), false, or external (installed by `kioskd port-guard install` as root, the packaged unit's ExecStartPre=+).", \.sessions.portGuard, portGuardMode),
        key("sessions.cdp.allow_uids", "Local users (agents) whose connections to a session's CDP port pass the port guard, besides root and kioskd's uid.", \.sessions.cdpAllowUIDs, ids),
        key("sessions.cdp.allow_gids", "Primary groups whose connections to a session's CDP port pass the port guard.", \.sessions.cdpAllowGIDs, ids),
        key("sessions.lockdown.add", "Combinations the key grabber holds besides its default list, comma-separated (Ctrl+Shift+X, F9).", \.sessions.lockdownAdd, combos(inDefaults: false)),
        key("sessions.lockdown.remove", "Default combinations the key grabber leaves to the browser, comma-separated (F5, Ctrl+R).", \.sessions.lockdownRemove, combos(inDefaults: true)),
        key("sessions.lockdown.tabs", "Which tabs live besides the kiosk tab: agent (tabs a CDP client creates; the page's popups are closed) or kiosk_only (none).", \.sessions.tabs, choice(TabPolicy.self)),
        key("cluster.enabled", "Cluster mode: hosts on one PostgreSQL store (store.url) share one task queue, rescue each other's work and serve each other's viewers and agents.", \.cluster.settings.enabled, boolean),
        key("cluster.host_id", "This host's name in the cluster, unique among its hosts (letters, digits, . _ -). Empty: the machine's host name.", \.cluster.settings.hostID, hostID),
        key("cluster.advertise", "host:port at which the other hosts reach this host's internal listener (its private address, not 0.0.0.0).", \.cluster.settings.address, advertise),
        key("cluster.listen", "host:port of the internal listener: viewers and agents relayed by the other hosts, each request proven with the cluster secret.", \.cluster.listen, hostPort),
        key("cluster.secret_file", "A file of 32 or more random bytes, the same on every host (mode 0600): host-to-host requests are signed with it and viewer tokens minted on one host work on all.", \.cluster.secretFile, optionalPath),
        key("cluster.heartbeat", "How often a host renews its lease, reads the cluster and rescues dead hosts' tasks.", \.cluster.settings.heartbeat, duration(min: .milliseconds(100))),
        key("cluster.lease_ttl", "A host whose lease is not renewed for this long is dead: its running tasks are interrupted, its unstarted ones queued again (and a host that cannot renew stops its own sessions by then).", \.cluster.settings.leaseTTL, duration(min: .seconds(1))),
        key("cluster.claim_grace", "How long a new task waits for the host it was created on before any other host may claim it.", \.cluster.settings.claimGrace, duration(min: .zero)),
        key("demo.enabled", "Run one task with the daemon and print a viewer link (with a view token) and its CDP URL on standard output.", \.demo.enabled, boolean),
        key("demo.url", "The demo task's page.", \.demo.url, pageURL),
    ]

    /// Keys that still work but are no longer documented: each maps onto its replacement and is
    /// reported by `ConfigWarning`.
    static let deprecatedKeys: [ConfigKey] = [
        ConfigKey(path: "sessions.lockdown.close_extra_tabs", doc: "Replaced by sessions.lockdown.tabs (true: kiosk_only, false: agent).",
                  current: { $0.sessions.tabs == .kioskOnly ? "true" : "false" },
                  apply: { (text: String, config: inout Config) throws(ValueError) in
                      config.sessions.tabs = try boolean(text) ? .kioskOnly : .agent
                      config.deprecatedKeysUsed.append("sessions.lockdown.close_extra_tabs")
                  }),
    ]

    static func key<T>(_ path: String, _ doc: String, _ field: WritableKeyPath<Config, T> & Sendable,
                       _ parse: @escaping @Sendable (String) throws(ValueError) -> T) -> ConfigKey where T: ConfigRenderable {
        ConfigKey(
            path: path, doc: doc,
            current: { $0[keyPath: field].rendered },
            apply: { (text: String, config: inout Config) throws(ValueError) in config[keyPath: field] = try parse(text) })
    }

    // MARK: - Value parsers (shared by the file and the environment)

    static func absolutePath(_ text: String) throws(ValueError) -> String {
        guard text.hasPrefix("/") else { throw ValueError(message: "must be an absolute path, got \"\(text)\"") }
        guard !text.contains("\0") else { throw ValueError(message: "must not contain NUL") }
        return text
    }

    static func hostPort(_ text: String) throws(ValueError) -> HostPort {
        let host: Substring, port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw ValueError(message: "must be host:port, got \"\(text)\"") }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw ValueError(message: "must be host:port (e.g. 0.0.0.0:8080), got \"\(text)\"") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard let number = Int(port), (1...65535).contains(number) else {
            throw ValueError(message: "port must be 1–65535, got \"\(port)\"")
        }
        guard !host.isEmpty else { throw ValueError(message: "must name a host (0.0.0.0 for all interfaces), got \"\(text)\"") }
        return HostPort(host: String(host), port: number)
    }

    static func storeURL(_ text: String) throws(ValueError) -> String {
        if text.isEmpty { return text }
        do {
            _ = try StoreLocation(url: text)
        } catch {
            throw ValueError(message: error.description)
        }
        return text
    }


    /// Empty, or a group that exists on this host.
    static func groupName(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty else { return text }
        guard getgrnam(text) != nil else { throw ValueError(message: "no group named \"\(text)\" on this host") }
        return text
    }

    /// Empty, or a name other hosts and the store can carry.
    static func hostID(_ text: String) throws(ValueError) -> String {
        guard text.utf8.count <= 63, text.utf8.allSatisfy({ $0 < 0x80 && ($0 == 0x2D || $0 == 0x2E || $0 == 0x5F || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0)) }) else {
            throw ValueError(message: "must be at most 63 letters, digits, '.', '_' or '-', got \"\(text)\"")
        }
        return text
    }

    /// Empty, or a host:port the other hosts can connect to.
    static func advertise(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty else { return text }
        let address = try hostPort(text)
        guard !["0.0.0.0", "::"].contains(address.host) else {
            throw ValueError(message: "must be an address the other hosts can reach, not the wildcard \(address.host)")
        }
        return address.description
    }

    /// Empty, or an absolute path.
    static func optionalPath(_ text: String) throws(ValueError) -> String {
        text.isEmpty ? text : try absolutePath(text)
    }

    static func text(_ text: String) throws(ValueError) -> String { text }

    /// A page a session may open (`SessionRules`).
    static func pageURL(_ text: String) throws(ValueError) -> String {
        guard SessionRules.isValidURL(text) else { throw ValueError(message: "must be \(SessionRules.urlRule)") }
        return text
    }

    /// Comma-separated origins: scheme://host[:port], no path.
    static func origins(_ text: String) throws(ValueError) -> [String] {
        var out: [String] = []
        for part in text.split(separator: ",") {
            let origin = part.filter { !$0.isWhitespace }
            let rest = origin.hasPrefix("https://") ? origin.dropFirst(8) : origin.hasPrefix("http://") ? origin.dropFirst(7) : nil
            guard let rest, !rest.isEmpty, !rest.contains("/") else {
                throw ValueError(message: "each origin must be scheme://host[:port] with no path, got \"\(origin)\"")
            }
            out.append(origin)
        }
        return out
    }

    /// Comma-separated numeric ids.
    static func ids(_ text: String) throws(ValueError) -> NumericIDs {
        var out: [UInt32] = []
        for part in text.split(separator: ",") {
            let trimmed = part.filter { !$0.isWhitespace }
            guard let id = UInt32(trimmed) else { throw ValueError(message: "must be numeric ids separated by commas, got \"\(part)\"") }
            out.append(id)
        }
        return NumericIDs(values: out)
    }

    static func userName(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, text != "root", text.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw ValueError(message: "must be the name of an unprivileged user, got \"\(text)\"")
        }
        return text
    }

    static func nonEmpty(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty else { throw ValueError(message: "must not be empty") }
        return text
    }

    static func boolean(_ text: String) throws(ValueError) -> Bool {
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw ValueError(message: "must be true or false, got \"\(text)\"")
        }
    }

    static func portGuardMode(_ text: String) throws(ValueError) -> PortGuardMode {
        if text.lowercased() == PortGuardMode.external.rawValue { return .external }
        do {
            return try boolean(text) ? .on : .off
        } catch {
            throw ValueError(message: "must be true, false or external, got \"\(text)\"")
        }
    }

    /// A comma-separated list of combinations; `inDefaults`: each must be in the default list.
    static func combos(inDefaults: Bool) -> @Sendable (String) throws(ValueError) -> [KeyCombo] {
        { text throws(ValueError) in
            var out: [KeyCombo] = []
            for part in text.split(separator: ",") where !part.allSatisfy(\.isWhitespace) {
                do throws(ComboError) {
                    let combo = try KeyCombo(parsing: String(String(part.drop(while: \.isWhitespace).reversed()).drop(while: \.isWhitespace).reversed()))
                    if inDefaults, !GrabList.defaults.contains(where: { $0.combo == combo }) { throw .notInList(combo.description) }
                    out.append(combo)
                } catch {
                    throw ValueError(message: error.description)
                }
            }
            return out
        }
    }

    static func range(_ bounds: ClosedRange<Int>) -> @Sendable (String) throws(ValueError) -> ClosedRange<Int> {
        { (text: String) throws(ValueError) -> ClosedRange<Int> in
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let low = Int(parts[0].filter { $0 != " " }), let high = Int(parts[1].filter { $0 != " " }),
                  low <= high, bounds.contains(low), bounds.contains(high) else {
                throw ValueError(message: "must be first-last within \(bounds.lowerBound)-\(bounds.upperBound), got \"\(text)\"")
            }
            return low...high
        }
    }

    static func choice<T: RawRepresentable & CaseIterable & Sendable>(_: T.Type) -> @Sendable (String) throws(ValueError) -> T where T.RawValue == String {
        { (text: String) throws(ValueError) -> T in
            guard let value = T(rawValue: text) else {
                throw ValueError(message: "must be one of \(T.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
            }
            return value
        }
    }

    /// A size: bytes, or a number with KiB, MiB, GiB, TiB (K, M, G, T, KB, MB, GB, TB are read
    /// as the same powers of two: memory is counted in them).
    static func bytes(min: UInt64) -> @Sendable (String) throws(ValueError) -> UInt64 {
        { (text: String) throws(ValueError) -> UInt64 in
            let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
                                             ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40),
                                             ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40), ("B", 1)]
            let trimmed = text.filter { $0 != " " }
            let unit = units.first { trimmed.hasSuffix($0.0) }
            let number = unit.map { String(trimmed.dropLast($0.0.count)) } ?? trimmed
            guard let value = Double(number), value >= 0, value.isFinite else {
                throw ValueError(message: "must be a size like 512MiB or 4GiB, got \"\(text)\"")
            }
            let total = value * Double(unit?.1 ?? 1)
            guard total < 1.8e19, UInt64(total) >= min else {
                throw ValueError(message: "must be at least \(min.rendered), got \"\(text)\"")
            }
            return UInt64(total)
        }
    }

    static func integer(_ range: ClosedRange<Int>) -> @Sendable (String) throws(ValueError) -> Int {
        { (text: String) throws(ValueError) -> Int in
            guard let value = Int(text), range.contains(value) else {
                throw ValueError(message: "must be a whole number from \(range.lowerBound) to \(range.upperBound), got \"\(text)\"")
            }
            return value
        }
    }

    /// "auto" (nil: derived where it is used), or what `parse` accepts.
    static func automatic<T>(_ parse: @escaping @Sendable (String) throws(ValueError) -> T) -> @Sendable (String) throws(ValueError) -> T? {
        { (text: String) throws(ValueError) -> T? in
            if text == "auto" { return nil }
            do throws(ValueError) {
                return try parse(text)
            } catch {
                let rest = error.message.hasPrefix("must be ") ? String(error.message.dropFirst(8)) : error.message
                throw ValueError(message: "must be auto or \(rest)")
            }
        }
    }

    static func decimal(_ range: ClosedRange<Double>) -> @Sendable (String) throws(ValueError) -> Double {
        { (text: String) throws(ValueError) -> Double in
            guard let value = Double(text), range.contains(value) else {
                throw ValueError(message: "must be a number from \(range.lowerBound.rendered) to \(range.upperBound.rendered), got \"\(text)\"")
            }
            return value
        }
    }

    static func duration(min: Duration) -> @Sendable (String) throws(ValueError) -> Duration {
        { (text: String) throws(ValueError) -> Duration in
            let value = try parseDuration(text)
            guard value >= min else { throw ValueError(message: "must be at least \(min.rendered), got \"\(text)\"") }
            return value
        }
    }

    /// The longest duration, 100 years: any duration then fits 64-bit nanoseconds (NIO's
    /// TimeAmount) wherever it is converted.
    static let maxDuration = Duration.seconds(100 * 365 * 86400)

    static func parseDuration(_ text: String) throws(ValueError) -> Duration {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            // "5ms" must not be read as "5m" + "s".
            if suffix == "s", number.hasSuffix("m") { continue }
            if let value = Double(number), value >= 0, value.isFinite {
                // Before converting: "9.3e12s" is finite but past Int64 microseconds (a trap).
                guard value * scale <= Double(maxDuration.components.seconds) else {
                    throw ValueError(message: "must be at most \(maxDuration.rendered), got \"\(text)\"")
                }
                return .microseconds(Int64((value * scale * 1e6).rounded()))
            }
        }
        throw ValueError(message: "must be a duration such as 500ms, 5s, 2m, 1h or 7d, got \"\(text)\"")
    }
}

/// How a value is written back as configuration text (for `config defaults` and the docs test).
protocol ConfigRenderable: SendableMetatype { var rendered: String { get } }

extension String: ConfigRenderable { var rendered: String { self } }
extension Int: ConfigRenderable { var rendered: String { String(self) } }
extension Double: ConfigRenderable {
    var rendered: String { self == rounded() ? String(Int(self)) : String(self) }
}
extension HostPort: ConfigRenderable { var rendered: String { description } }
extension LogLevel: ConfigRenderable { var rendered: String { rawValue } }
extension LogFormat: ConfigRenderable { var rendered: String { rawValue } }
extension Strategy: ConfigRenderable { var rendered: String { rawValue } }
extension BridgeMode: ConfigRenderable { var rendered: String { rawValue } }
extension TabPolicy: ConfigRenderable { var rendered: String { rawValue } }
extension PortGuardMode: ConfigRenderable { var rendered: String { self == .on ? "true" : self == .off ? "false" : rawValue } }
extension ViewerRole: ConfigRenderable { var rendered: String { rawValue } }
/// An element of a list key, and how its list is written back (as the documentation writes it).
protocol ConfigListItem: ConfigRenderable { static var listSeparator: String { get } }
extension String: ConfigListItem { static var listSeparator: String { "," } }
extension KeyCombo: ConfigListItem {
    var rendered: String { description }
    static var listSeparator: String { ", " }
}
extension Array: ConfigRenderable where Element: ConfigListItem {
    var rendered: String { map(\.rendered).joined(separator: Element.listSeparator) }
}
extension NumericIDs: ConfigRenderable { var rendered: String { values.map(String.init).joined(separator: ",") } }
extension Optional: ConfigRenderable where Wrapped: ConfigRenderable { var rendered: String { map(\.rendered) ?? "auto" } }
/// Sizes, written back in the largest unit that divides them.
extension UInt64: ConfigRenderable {
    var rendered: String {
        for (unit, size) in [("TiB", UInt64(1) << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] where self >= size && self % size == 0 {
            return "\(self / size)\(unit)"
        }
        return "\(self)"
    }
}
extension Bool: ConfigRenderable { var rendered: String { self ? "true" : "false" } }
extension ClosedRange<Int>: ConfigRenderable { var rendered: String { "\(lowerBound)-\(upperBound)" } }
extension Duration: ConfigRenderable {
    var rendered: String {
        let (s, atto) = components
        let ms = s * 1000 + atto / 1_000_000_000_000_000
        if ms % 86_400_000 == 0 && ms > 0 { return "\(ms / 86_400_000)d" }
        if ms % 3_600_000 == 0 && ms > 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0 && ms > 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }
}
