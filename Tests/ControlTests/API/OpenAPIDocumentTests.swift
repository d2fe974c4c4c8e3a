@testable import Control
import Essentials
import FoundationEssentials
import Kiosk
import NIOHTTP1
import Store
import Supervision
import Testing
import ViewerInput

/// openapi.json carries the server's own rules, so that a client (or schemathesis) that keeps to
/// the document is never refused and one that breaks it always is. Every value here is read from
/// where the server keeps it (SessionRules, the request parsers' constants, the router), never
/// copied: a rule changed on one side only fails this suite.
@Suite("OpenAPI document")
struct OpenAPIDocumentTests {
    let doc: Doc

    init() throws {
        doc = try JSONDecoder().decode(Doc.self, from: Data(OpenAPI.document.utf8))
    }

    // MARK: - What the router registers

    @Test func documentsExactlyTheRoutesTheRouterRegisters() async throws {
        try await ControlHarness.with { h in
            let routes = ControlRoutes(service: h.service, storeKind: "sqlite") { TreeNode(id: "kioskd", kind: "supervisor", status: "running") }
            let registered = routes.table(allowlist: PeerAllowlist(uids: [], gids: [])).registered
            let served = Set(registered.flatMap { route in route.methods.map { "\($0.rawValue) \(route.path)" } })
            let documented = Set(doc["paths"].entries.flatMap { path, item in item.keys.map { "\($0.uppercased()) \(path)" } })
            #expect(served.count == registered.reduce(0) { $0 + $1.methods.count }, "no path+method registered twice")
            #expect(served.subtracting(documented).isEmpty, "registered, not documented: \(served.subtracting(documented).sorted())")
            #expect(documented.subtracting(served).isEmpty, "documented, not registered: \(documented.subtracting(served).sorted())")
        }
    }

    /// Any method a path does not document (QUERY, WebDAV's, not a fixed list) is 405 with
    /// `Allow` naming exactly the documented ones, in the documented error shape. (A method
    /// NIO's HTTP parser does not know, BREW say, never reaches the router: the parser answers 400.)
    @Test func everyOtherMethodOnADocumentedPathIs405WithAllow() async throws {
        try await ControlHarness.with { h in
            let methods: [HTTPMethod] = [.GET, .HEAD, .POST, .PUT, .PATCH, .DELETE, .OPTIONS, .TRACE, .CONNECT, .RAW(value: "QUERY"), .PROPFIND, .MKCOL, .LINK]
            for (path, item) in doc["paths"].entries {
                let documented = Set(item.keys.map { $0.uppercased() })
                let concrete = path.replacingOccurrences(of: "{id}", with: "no-such-task")
                for method in methods where !documented.contains(method.rawValue) {
                    let answer = try await h.client.request(method, concrete)
                    #expect(answer.status == 405, "\(method.rawValue) \(path): \(answer.status) \(answer.text.prefix(200))")
                    let allow = Set(answer.headers["Allow"].flatMap { $0.split(separator: ",") }.map { String($0.filter { $0 != " " }) })
                    #expect(allow == documented, "\(method.rawValue) \(path): Allow \(allow.sorted()), documented \(documented.sorted())")
                    // A HEAD answer has no body; neither has NIO's answer to a CONNECT (it would be a tunnel).
                    if method != .HEAD && method != .CONNECT {
                        #expect(answer.errorCode == "method_not_allowed", "\(method.rawValue) \(path): \(answer.text)")
                    }
                }
            }
            let unknown = try await h.client.request(.RAW(value: "QUERY"), "/v1/no-such-path")
            #expect(unknown.status == 404 && unknown.errorCode == "not_found", "an unknown path stays 404: \(unknown.text)")
        }
    }

    // MARK: - Errors

    @Test func everyErrorStatusIsTheDocumentedErrorAndEveryOperationHasTheCommonOnes() {
        let error = doc.resolve(doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"])
        #expect(Set(error["required"].strings) == ["error"])
        #expect(Set(error["properties"]["error"]["required"].strings) == ["code", "message"])
        for (path, item) in doc["paths"].entries {
            for (method, operation) in item.entries {
                let responses = operation["responses"]
                for (status, response) in responses.entries where (Int(status) ?? 0) >= 400 {
                    #expect(response["$ref"].string == "#/components/responses/Error", "\(method) \(path) \(status)")
                }
                // The peer check, a bug, the store or a stop: any operation.
                for status in ["403", "500", "503"] {
                    #expect(responses[status] != .null, "\(method) \(path) documents \(status)")
                }
                // A body is read: it can be malformed or too large.
                if operation["requestBody"] != .null {
                    #expect(responses["400"] != .null && responses["413"] != .null, "\(method) \(path) documents 400 and 413")
                }
                if path.contains("{id}") { #expect(responses["404"] != .null, "\(method) \(path) documents 404") }
            }
        }
    }

    // MARK: - Ids, states, query ranges

    @Test func everyTaskIdIsSessionRulesId() {
        let createTaskID = doc["components"]["schemas"]["CreateTask"]["properties"]["task_id"]
        var schemas = [("CreateTask.task_id", createTaskID)]
        for (path, item) in doc["paths"].entries {
            for (method, operation) in item.entries {
                let inPath = operation["parameters"].items.filter { $0["in"].string == "path" }
                #expect(inPath.map { $0["name"].string } == (path.contains("{id}") ? ["id"] : []), "\(method) \(path)")
                for parameter in inPath {
                    #expect(parameter["required"] == .bool(true), "\(method) \(path)")
                    schemas.append(("\(method) \(path) id", parameter["schema"]))
                }
            }
        }
        for (name, schema) in schemas {
            #expect(schema["pattern"].string == SessionRules.idPattern, "\(name)")
            #expect(schema["maxLength"].int == SessionRules.idMaxBytes, "\(name)")
            #expect(schema["minLength"].int == 1, "\(name)")
        }
        // The pattern says what isValidID does.
        let samples = ["a", "A9_-", "_x", "-a", "a-", "", String(repeating: "a", count: SessionRules.idMaxBytes),
                       String(repeating: "a", count: SessionRules.idMaxBytes + 1), "a b", "a/b", "../x", "é", "a\n", "a.b"]
        for sample in samples {
            #expect(accepts(createTaskID, sample) == SessionRules.isValidID(sample), "task_id \(sample.debugDescription)")
        }
    }

    @Test func theStateFilterIsAListOfTaskStates() throws {
        let states = doc["components"]["schemas"]["TaskState"]
        #expect(states["enum"].strings == TaskState.allCases.map(\.rawValue))
        #expect(doc["components"]["schemas"]["Task"]["properties"]["state"]["$ref"].string == "#/components/schemas/TaskState")
        let filter = try #require(parameter("/v1/tasks", "get", "state"))
        #expect(filter["in"].string == "query")
        #expect(filter["style"].string == "form" && filter["explode"] == .bool(false), "comma-separated")
        #expect(filter["schema"]["type"].string == "array")
        #expect(filter["schema"]["items"]["$ref"].string == "#/components/schemas/TaskState")
        // What the route parses is that list: each state, any of them, none (empty); nothing else.
        for state in TaskState.allCases { #expect(try QueryRules.states(state.rawValue) == [state]) }
        #expect(try QueryRules.states(TaskState.allCases.map(\.rawValue).joined(separator: ",")) == Set(TaskState.allCases))
        #expect(try QueryRules.states("") == [])
        for wrong in ["sleeping", "running,", ",running", "running,,queued", "Running", " running"] {
            #expect(throws: APIError.self, "\(wrong.debugDescription)") { try QueryRules.states(wrong) }
        }
    }

    @Test func queryRangesAreTheRoutes() throws {
        let taskLimit = try #require(parameter("/v1/tasks", "get", "limit"))["schema"]
        #expect(range(taskLimit) == QueryRules.taskLimit && taskLimit["default"].int == QueryRules.taskLimitDefault)
        let eventLimit = try #require(parameter("/v1/tasks/{id}/events", "get", "limit"))["schema"]
        #expect(range(eventLimit) == QueryRules.eventLimit && eventLimit["default"].int == QueryRules.eventLimitDefault)
        let wait = try #require(parameter("/v1/tasks/{id}/events", "get", "wait"))["schema"]
        #expect(range(wait) == QueryRules.eventWaitSeconds)
        let since = try #require(parameter("/v1/tasks/{id}/events", "get", "since"))["schema"]
        #expect(range(since) == QueryRules.since, "int64's maximum, exactly")
        #expect(since["format"].string == "int64" && since["default"].int == 0)
        let drainWait = try #require(parameter("/v1/drain", "post", "wait"))["schema"]
        #expect(range(drainWait) == QueryRules.drainWaitSeconds)
        for schema in [taskLimit, eventLimit, wait, since, drainWait] { #expect(schema["type"].string == "integer") }
        #expect(try #require(parameter("/v1/tasks", "post", "wait"))["schema"]["type"].string == "boolean")
    }

    // MARK: - Bodies

    @Test func createTaskIsSessionRulesAndCreateTasksLimits() throws {
        let schema = doc["components"]["schemas"]["CreateTask"]
        let p = schema["properties"]
        #expect(Set(p.keys) == CreateTask.fields)
        #expect(schema["required"].strings == ["url"] && schema["additionalProperties"] == .bool(false))
        #expect(range(p["width"]) == SessionRules.width && range(p["height"]) == SessionRules.height)
        #expect(range(p["timeout_s"]) == CreateTask.timeoutSeconds)
        #expect(range(p["max_lifetime_s"]) == CreateTask.maxLifetimeSeconds)
        #expect(range(p["memory_max_mb"]) == CreateTask.memoryMaxMB)
        #expect(p["url"]["pattern"].string == SessionRules.urlPattern)
        #expect(p["url"]["maxLength"].int == SessionRules.urlMaxLength && p["url"]["minLength"].int == 1)
        #expect(p["url"]["description"].string?.contains("\(SessionRules.urlMaxLength) characters") == true)
        #expect(Set(p["input"]["enum"].strings) == Set(ViewerRole.allCases.map(\.rawValue)))
        #expect(p["metadata"]["description"].string?.contains("\(CreateTask.metadataMaxBytes) bytes") == true)
        // An optional field given as null is one left out: the document says so, the parser does so.
        for name in CreateTask.fields.subtracting(["url"]) {
            #expect(p[name]["type"].strings.contains("null") || p[name]["enum"].items.contains(.null), "\(name) may be null")
        }
        let explicitNulls = try CreateTask(body: Array(#"{"url":"about:blank","task_id":null,"width":null,"height":null,"input":null,"timeout_s":null,"max_lifetime_s":null,"memory_max_mb":null,"metadata":null}"#.utf8))
        #expect(explicitNulls == CreateTask(url: "about:blank"))
        // The url's pattern and bounds say what isValidURL does.
        let url = p["url"]
        for sample in ["http://x", "https://example.com/a?b#c", "about:blank", "data:text/html,<p>", "", "file:///etc/passwd", "javascript:alert(1)",
                       "chrome://settings", "HTTP://x", " https://x", "https:/x", "https://" + String(repeating: "a", count: SessionRules.urlMaxLength - 8),
                       "https://" + String(repeating: "a", count: SessionRules.urlMaxLength - 7), "https://例え.jp/"] {
            #expect(accepts(url, sample) == ((try? CreateTask(body: body(["url": sample]))) != nil), "url \(sample.prefix(40).debugDescription)")
        }
        // The scheme is compared by bytes (a combining mark or emoji modifier right after it
        // must not hide it) and the length in code points, as the document's maxLength counts.
        for sample in ["about:\u{1F3FB}", "https://\u{301}x", "https://" + String(repeating: "é", count: SessionRules.urlMaxLength - 8),
                       "https://" + String(repeating: "é", count: SessionRules.urlMaxLength - 7)] {
            #expect(accepts(url, sample) == ((try? CreateTask(body: body(["url": sample]))) != nil),
                    "url of \(sample.unicodeScalars.count) code points, \(sample.utf8.count) bytes: \(sample.prefix(12).debugDescription)")
        }
    }

    @Test func endBodiesAreEndRequestsLimits() throws {
        for (name, fields) in [("stop", ["reason"]), ("complete", ["reason", "result"]), ("fail", ["reason"])] {
            let path = "/v1/tasks/{id}/\(name)"
            let schema = requestSchema(path)
            #expect(Set(schema["properties"].keys) == Set(fields), "\(path)")
            #expect(schema["additionalProperties"] == .bool(false) && doc["paths"][path]["post"]["requestBody"]["required"] == .bool(false), "\(path)")
            let reason = schema["properties"]["reason"]
            #expect(reason["minLength"].int == 1 && reason["maxLength"].int == EndRequest.reasonMaxCharacters, "\(path)")
            #expect(reason["type"].strings == ["string", "null"], "\(path)")
        }
        let result = requestSchema("/v1/tasks/{id}/complete")["properties"]["result"]
        #expect(result["type"].strings == ["object", "null"])
        #expect(result["description"].string?.contains("\(EndRequest.resultMaxBytes) bytes") == true)
        // maxLength counts code points, and so does the parser: 1024 'é' are 2048 bytes, and fine.
        let reason = requestSchema("/v1/tasks/{id}/stop")["properties"]["reason"]
        let max = EndRequest.reasonMaxCharacters
        for sample in ["", "x", String(repeating: "é", count: max), String(repeating: "x", count: max + 1), String(repeating: "🙂", count: max)] {
            #expect(accepts(reason, sample) == ((try? EndRequest(body: body(["reason": sample]), allowResult: false)) != nil),
                    "reason of \(sample.unicodeScalars.count) code points")
        }
    }

    @Test func appendedEventsAreAppendEventsLimits() throws {
        let schema = requestSchema("/v1/tasks/{id}/events")
        #expect(Set(schema["properties"].keys) == ["type", "data"] && schema["required"].strings == ["type"])
        let type = schema["properties"]["type"]
        #expect(type["pattern"].string == AppendEvent.typePattern)
        #expect(type["maxLength"].int == AppendEvent.typeMaxBytes && type["minLength"].int == 1)
        #expect(doc["components"]["schemas"]["Event"]["properties"]["type"]["pattern"].string == AppendEvent.typePattern)
        #expect(schema["properties"]["data"]["description"].string?.contains("\(AppendEvent.dataMaxBytes) bytes") == true)
        // The pattern says what the parser does.
        let samples = ["a", "step", "agent.step-2_b", "0", "-", ".", "_", String(repeating: "a", count: AppendEvent.typeMaxBytes),
                       String(repeating: "a", count: AppendEvent.typeMaxBytes + 1), "", "Step", "a b", "a/b", "é", "a\n", "a:b"]
        for sample in samples {
            #expect(accepts(type, sample) == ((try? AppendEvent(body: body(["type": sample]))) != nil), "type \(sample.debugDescription)")
        }
    }

    @Test func viewerTokensAreTokenRequestsLimits() {
        let schema = requestSchema("/v1/tasks/{id}/viewer-token")
        #expect(schema["required"].strings == ["role"] && schema["additionalProperties"] == .bool(false))
        #expect(Set(schema["properties"]["role"]["enum"].strings) == Set(TokenRole.allCases.map(\.rawValue)))
        #expect(!schema["properties"]["role"]["enum"].items.contains(.null), "role is required: null is refused")
        let ttl = schema["properties"]["ttl_s"]
        #expect(range(ttl) == TokenRequest.ttlSeconds && ttl["default"].int == TokenRequest.ttlDefault)
        let answer = doc["paths"]["/v1/tasks/{id}/viewer-token"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
        #expect(Set(answer["properties"]["role"]["enum"].strings) == Set(TokenRole.allCases.map(\.rawValue)))
    }

    // MARK: - Helpers

    private func parameter(_ path: String, _ method: String, _ name: String) -> Doc? {
        doc["paths"][path][method]["parameters"].items.first { $0["name"].string == name }
    }

    private func requestSchema(_ path: String) -> Doc {
        doc.resolve(doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])
    }

    private func range(_ schema: Doc) -> ClosedRange<Int>? {
        guard let low = schema["minimum"].int, let high = schema["maximum"].int, low <= high else { return nil }
        return low...high
    }

    private func body(_ fields: [String: String]) throws -> [UInt8] {
        Array(try JSONEncoder().encode(fields))
    }

    /// Whether a string satisfies a string schema the way JSON Schema reads it: lengths in code
    /// points, the pattern (ECMA-262, unanchored unless it says so) on code points too.
    private func accepts(_ schema: Doc, _ value: String) -> Bool {
        let length = value.unicodeScalars.count
        if let min = schema["minLength"].int, length < min { return false }
        if let max = schema["maxLength"].int, length > max { return false }
        if let pattern = schema["pattern"].string {
            guard let regex = try? Regex(pattern).matchingSemantics(.unicodeScalar) else {
                Issue.record("the pattern \(pattern) does not compile")
                return false
            }
            return value.firstMatch(of: regex) != nil
        }
        return true
    }
}

/// A JSON document with whole numbers kept exact (Int64's maximum does not survive a Double).
enum Doc: Decodable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case number(Double)
    case string(String)
    case array([Doc])
    case object([String: Doc])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([Doc].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: Doc].self))
        }
    }

    /// A member, or null when there is none (so lookups chain).
    subscript(key: String) -> Doc {
        if case .object(let o) = self { o[key] ?? .null } else { .null }
    }

    var string: String? { if case .string(let s) = self { s } else { nil } }
    var int: Int? { if case .int(let i) = self { i } else { nil } }
    var items: [Doc] { if case .array(let a) = self { a } else { [] } }
    /// An array's strings, or a lone string as one (`type` is either).
    var strings: [String] { if case .string(let s) = self { [s] } else { items.compactMap(\.string) } }
    var entries: [(key: String, value: Doc)] { if case .object(let o) = self { o.sorted { $0.key < $1.key } } else { [] } }
    var keys: [String] { entries.map(\.key) }

    /// Follows a local `$ref`.
    func resolve(_ node: Doc) -> Doc {
        guard let ref = node["$ref"].string, ref.hasPrefix("#/") else { return node }
        return ref.dropFirst(2).split(separator: "/").reduce(self) { $0[String($1)] }
    }
}
