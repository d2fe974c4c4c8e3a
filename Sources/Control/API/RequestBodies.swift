import Essentials
import FoundationEssentials
import Kiosk
import Store
import ViewerInput

/// A JSON object body read strictly: unknown fields, wrong types and out-of-range values are
/// refused with a message naming the field, before anything is stored.
struct BodyFields {
    let object: [String: JSONValue]

    init(_ bytes: [UInt8], allowed: Set<String>) throws(APIError) {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            object = [:]
            return
        }
        let value: JSONValue
        do {
            // Not JSONDecoder: its cost grows with values × depth (`JSONValue(parsing:)`).
            value = try JSONValue(parsing: bytes)
        } catch {
            throw .badRequest("the body is not valid JSON")
        }
        guard case .object(let object) = value else { throw .badRequest("the body must be a JSON object") }
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw .badRequest("unknown field '\(unknown)' (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
        self.object = object
    }

    /// A non-empty string of at most `maxLength` UTF-8 bytes.
    func string(_ name: String, maxLength: Int, required: Bool = false) throws(APIError) -> String? {
        guard let s = try anyString(name, required: required) else { return nil }
        guard !s.isEmpty, s.utf8.count <= maxLength else { throw .badRequest("field '\(name)' must be 1–\(maxLength) bytes") }
        return s
    }

    /// A non-empty string of at most `maxCharacters` Unicode code points: what JSON Schema's
    /// `maxLength` counts, for free text (its bytes are at most 4 × that).
    func text(_ name: String, maxCharacters: Int, required: Bool = false) throws(APIError) -> String? {
        guard let s = try anyString(name, required: required) else { return nil }
        guard !s.isEmpty, s.unicodeScalars.count <= maxCharacters else { throw .badRequest("field '\(name)' must be 1–\(maxCharacters) characters") }
        return s
    }

    private func anyString(_ name: String, required: Bool) throws(APIError) -> String? {
        guard let value = object[name], value != .null else {
            if required { throw .badRequest("field '\(name)' is required") }
            return nil
        }
        guard let s = value.string else { throw .badRequest("field '\(name)' must be a string") }
        return s
    }

    func integer(_ name: String, _ range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let value = object[name], value != .null else { return nil }
        guard let n = value.number, n == n.rounded(), let i = Int(exactly: n) else { throw .badRequest("field '\(name)' must be a whole number") }
        guard range.contains(i) else { throw .badRequest("field '\(name)' must be from \(range.lowerBound) to \(range.upperBound), got \(i)") }
        return i
    }

    func choice<T: RawRepresentable & CaseIterable>(_ name: String, _: T.Type) throws(APIError) -> T? where T.RawValue == String {
        guard let s = try string(name, maxLength: 64) else { return nil }
        guard let v = T(rawValue: s) else {
            throw .badRequest("field '\(name)' must be one of \(T.allCases.map(\.rawValue).joined(separator: ", ")), got '\(s)'")
        }
        return v
    }

    /// A JSON object field, re-encoded compactly; at most `maxBytes` once encoded.
    func objectText(_ name: String, maxBytes: Int) throws(APIError) -> String? {
        guard let value = object[name], value != .null else { return nil }
        guard case .object = value else { throw .badRequest("field '\(name)' must be a JSON object") }
        let text = Self.encode(value)
        guard text.utf8.count <= maxBytes else { throw APIError(.contentTooLarge, "field_too_large", "field '\(name)' is \(text.utf8.count) bytes; at most \(maxBytes)") }
        return text
    }

    static func encode(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "null"
    }
}

/// `POST /v1/tasks`.
public struct CreateTask: Sendable, Equatable {
    public var taskID: String?
    public var url: String
    public var width: Int?
    public var height: Int?
    public var input: ViewerRole?
    public var timeoutSeconds: Int?
    public var maxLifetimeSeconds: Int?
    /// The session's memory limit (its cgroup's) in MiB, instead of `sessions.memory_max`.
    public var memoryMaxMB: Int?
    /// The caller's own JSON object (correlation ids and the like), kept with the task.
    public var metadata: String?

    static let fields: Set<String> = ["task_id", "url", "width", "height", "input", "timeout_s", "max_lifetime_s", "memory_max_mb", "metadata"]
    /// `timeout_s`: how long the task may take to be running.
    static let timeoutSeconds = 1...3600
    /// `max_lifetime_s`: from creation, at most a week.
    static let maxLifetimeSeconds = 10...7 * 86400
    /// `memory_max_mb`: below 64 MiB no browser starts.
    static let memoryMaxMB = 64...(1 << 20)
    /// `metadata`, re-encoded compactly with sorted keys; more is 413 field_too_large.
    static let metadataMaxBytes = 16 * 1024

    public init(taskID: String? = nil, url: String, width: Int? = nil, height: Int? = nil, input: ViewerRole? = nil,
                timeoutSeconds: Int? = nil, maxLifetimeSeconds: Int? = nil, memoryMaxMB: Int? = nil, metadata: String? = nil) {
        self.taskID = taskID
        self.url = url
        self.width = width
        self.height = height
        self.input = input
        self.timeoutSeconds = timeoutSeconds
        self.maxLifetimeSeconds = maxLifetimeSeconds
        self.memoryMaxMB = memoryMaxMB
        self.metadata = metadata
    }

    /// What `POST /v1/tasks` decodes (public so the bench's fuzzer runs the route's own path).
    public init(body: [UInt8]) throws(APIError) {
        let f = try BodyFields(body, allowed: Self.fields)
        taskID = try f.string("task_id", maxLength: SessionRules.idMaxBytes)
        if let id = taskID, !SessionRules.isValidID(id) { throw .badRequest("field 'task_id' must be \(SessionRules.idRule)") }
        url = try f.text("url", maxCharacters: SessionRules.urlMaxLength, required: true)!
        guard SessionRules.isValidURL(url) else { throw .badRequest("field 'url' must be \(SessionRules.urlRule)") }
        width = try f.integer("width", SessionRules.width)
        height = try f.integer("height", SessionRules.height)
        input = try f.choice("input", ViewerRole.self)
        timeoutSeconds = try f.integer("timeout_s", Self.timeoutSeconds)
        maxLifetimeSeconds = try f.integer("max_lifetime_s", Self.maxLifetimeSeconds)
        memoryMaxMB = try f.integer("memory_max_mb", Self.memoryMaxMB)
        metadata = try f.objectText("metadata", maxBytes: Self.metadataMaxBytes)
    }

    /// The request as stored: sorted keys, only what was given, so a retry with the same
    /// body compares equal and one with a different body does not.
    public var canonical: String {
        var w = JSONWriter()
        w.field("height", height.map(Int64.init))
        w.field("input", input?.rawValue)
        w.field("max_lifetime_s", maxLifetimeSeconds.map(Int64.init))
        // Only when given: a task stored before the field existed still compares equal.
        if let memoryMaxMB { w.field("memory_max_mb", Int64(memoryMaxMB)) }
        w.raw("metadata", metadata)
        w.field("timeout_s", timeoutSeconds.map(Int64.init))
        w.field("url", url)
        w.field("width", width.map(Int64.init))
        return w.text
    }
}

/// `POST /v1/tasks/{id}/events`: what the API layer appends (agent steps and the like).
public struct AppendEvent {
    public let type: String
    public let data: String

    /// `type`: 1–64 of a–z, 0–9, '_', '.', '-' (ASCII, so bytes and characters alike).
    static let typeMaxBytes = 64
    static let typePattern = "^[a-z0-9_.-]{1,\(typeMaxBytes)}$"
    /// `data`, re-encoded compactly with sorted keys; more is 413 field_too_large.
    static let dataMaxBytes = 64 * 1024

    public init(body: [UInt8]) throws(APIError) {
        let f = try BodyFields(body, allowed: ["type", "data"])
        let type = try f.string("type", maxLength: Self.typeMaxBytes, required: true)!
        guard type.utf8.allSatisfy({ c in (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x5F || c == 0x2E || c == 0x2D }) else {
            throw .badRequest("field 'type' may hold only a–z, 0–9, '_', '.', '-'")
        }
        self.type = type
        data = try f.objectText("data", maxBytes: Self.dataMaxBytes) ?? "{}"
    }
}

/// The optional body of stop / complete / fail.
public struct EndRequest {
    public let reason: String?
    public let result: String?

    /// `reason`: free text, 1–1024 characters (Unicode code points, as JSON Schema counts).
    static let reasonMaxCharacters = 1024
    /// `result` (complete only), re-encoded compactly with sorted keys; more is 413 field_too_large.
    static let resultMaxBytes = 64 * 1024

    public init(body: [UInt8], allowResult: Bool) throws(APIError) {
        let f = try BodyFields(body, allowed: allowResult ? ["reason", "result"] : ["reason"])
        reason = try f.text("reason", maxCharacters: Self.reasonMaxCharacters)
        result = allowResult ? try f.objectText("result", maxBytes: Self.resultMaxBytes) : nil
    }
}

/// `POST /v1/tasks/{id}/viewer-token`.
public struct TokenRequest {
    /// view or control (a viewer), or agent (the task's CDP endpoint).
    public let role: TokenRole
    public let ttl: Int

    /// `ttl_s`: the token's lifetime.
    static let ttlSeconds = 10...3600
    static let ttlDefault = 300

    public init(body: [UInt8]) throws(APIError) {
        let f = try BodyFields(body, allowed: ["role", "ttl_s"])
        guard let role = try f.choice("role", TokenRole.self) else { throw .badRequest("field 'role' is required (view, control or agent)") }
        self.role = role
        ttl = try f.integer("ttl_s", Self.ttlSeconds) ?? Self.ttlDefault
    }
}

/// The query parameters' ranges and defaults.
enum QueryRules {
    /// `GET /v1/tasks?limit=`.
    static let taskLimit = 1...1000
    static let taskLimitDefault = 100
    /// `GET /v1/tasks/{id}/events?limit=`.
    static let eventLimit = 1...1000
    static let eventLimitDefault = 500
    /// `GET /v1/tasks/{id}/events?wait=`: seconds a long poll may hold the request.
    static let eventWaitSeconds = 0...25
    /// `POST /v1/drain?wait=`: seconds to wait for the last task to end (a scale-in hook's
    /// budget, over the Unix socket: no gateway cuts it).
    static let drainWaitSeconds = 0...3600
    /// `GET /v1/tasks/{id}/events?since=`: an event seq (int64).
    static let since = 0...Int.max
    /// `GET /v1/tasks?state=`: comma-separated task states (OpenAPI: an array, style form,
    /// explode false). Empty is the empty list (no task matches); an empty item is an error.
    static func states(_ text: String) throws(APIError) -> Set<TaskState> {
        guard !text.isEmpty else { return [] }
        return try Set(text.split(separator: ",", omittingEmptySubsequences: false).map { name throws(APIError) in
            guard let s = TaskState(rawValue: String(name)) else {
                throw APIError.badRequest("state must be among \(TaskState.allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'")
            }
            return s
        })
    }
}

extension CreateTask {
    /// The session this task asks for: the host's `defaults` with the request's overrides.
    public func session(from defaults: SessionSettings) -> SessionSettings {
        var s = defaults
        if let width { s.width = width }
        if let height { s.height = height }
        if let input { s.input = input }
        if let memoryMaxMB {
            let max = UInt64(memoryMaxMB) << 20
            s.limits.memoryMax = max
            s.limits.memoryHigh = max / 10 * 9
        }
        return s
    }
}
