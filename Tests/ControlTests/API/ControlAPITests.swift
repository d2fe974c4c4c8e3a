import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import NIOHTTP1
import Store
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The control API over its real Unix socket, with fake sessions (the real ones are covered
/// end to end in ServeTests).
@Suite("Control API")
struct ControlAPITests {
    @Test func aTaskGoesFromStartingToRunningToCancelledWithGaplessEvents() async throws {
        try await ControlHarness.with { h in
            let created = try await h.client.request(.POST, "/v1/tasks", json: #"{"task_id":"t1","url":"https://example.com/","metadata":{"run":"r-9"}}"#)
            #expect(created.status == 201, "\(created.text)")
            let body = try ControlHarness.json(created)
            #expect(body["task_id"]?.string == "t1")
            #expect(["starting", "running"].contains(body["state"]?.string ?? ""), "answers at once: \(body)")
            #expect(body["request"]?["metadata"]?["run"]?.string == "r-9")
            try await h.waitState("t1", .running)

            let task = try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/t1"))
            #expect(task["state"]?.string == "running")
            #expect(task["session"]?["cdp_url"]?.string == "http://127.0.0.1:29222")
            #expect(task["session"]?["viewer_path"]?.string == "/viewer?task_id=t1")

            let stop = try await h.client.request(.POST, "/v1/tasks/t1/stop", json: #"{"reason":"user closed the tab"}"#)
            #expect(stop.status == 200 && stop.json?["state"]?.string == "cancelled")
            let again = try await h.client.request(.POST, "/v1/tasks/t1/stop")
            #expect(again.status == 409)
            let conflict = try ControlHarness.json(again)
            #expect(conflict["error"]?["code"]?.string == "illegal_transition")
            #expect(conflict["error"]?["state"]?.string == "cancelled")
            #expect(conflict["error"]?["message"]?.string == "cannot cancel a task that is cancelled")
            #expect(try await h.client.request(.POST, "/v1/tasks/t1/complete").status == 409)

            let events = try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/t1/events")).array ?? []
            let seqs = events.compactMap { $0["seq"]?.int }
            #expect(seqs == Array(1...seqs.count), "1, 2, 3… with no gaps: \(seqs)")
            let states = events.filter { $0["type"]?.string == "state_changed" }.compactMap { $0["data"]?["to"]?.string }
            #expect(states == ["queued", "starting", "running", "cancelled"])
            #expect(events.contains { $0["type"]?.string == "session_booting" })
            #expect(events.last?["data"]?["reason"]?.string == "user closed the tab" || events.contains { $0["data"]?["reason"]?.string == "user closed the tab" })
        }
    }

    @Test func aRetriedCreateNeverStartsASecondBrowser() async throws {
        try await ControlHarness.with { h in
            let body = #"{"task_id":"same","url":"https://example.com/"}"#
            let answers = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 { group.addTask { try await h.client.request(.POST, "/v1/tasks", json: body).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(answers.sorted() == [200, 200, 200, 200, 200, 200, 200, 201], "one create, seven replays: \(answers)")
            try await h.waitState("same", .running)
            #expect(h.sessions.created == ["same"], "one session")
            let other = try await h.client.request(.POST, "/v1/tasks", json: #"{"task_id":"same","url":"https://other.example/"}"#)
            #expect(other.status == 409 && other.errorCode == "task_id_reused")
        }
    }

    @Test func waitTrueAnswersOnceRunningAndAFailedBootFailsTheTaskWithItsReason() async throws {
        try await ControlHarness.with { h in
            let running = try ControlHarness.json(try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"url":"https://example.com/"}"#))
            #expect(running["state"]?.string == "running")
            #expect(running["task_id"]?.string?.hasPrefix("t-") == true, "an id is made up when none is given")

            let failed = try ControlHarness.json(try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"bad","url":"https://fail.example/"}"#))
            #expect(failed["state"]?.string == "failed")
            #expect(failed["reason"]?.string?.contains("chromium: exited with status 1") == true, "\(failed)")
        }
    }

    @Test(arguments: [
        ("POST", "/v1/tasks", "{not json", 400, "invalid_request", "the body is not valid JSON"),
        ("POST", "/v1/tasks", #"["url"]"#, 400, "invalid_request", "the body must be a JSON object"),
        ("POST", "/v1/tasks", #"{"url":"https://x/","colour":"red"}"#, 400, "invalid_request", "unknown field 'colour'"),
        ("POST", "/v1/tasks", #"{"url":42}"#, 400, "invalid_request", "field 'url' must be a string"),
        ("POST", "/v1/tasks", #"{"width":800}"#, 400, "invalid_request", "field 'url' is required"),
        ("POST", "/v1/tasks", #"{"url":"file:///etc/passwd"}"#, 400, "invalid_request", "field 'url' must be an http(s), about: or data: URL"),
        ("POST", "/v1/tasks", #"{"url":"https://x/","width":10}"#, 400, "invalid_request", "field 'width' must be from 320 to 7680, got 10"),
        ("POST", "/v1/tasks", #"{"url":"https://x/","width":800.5}"#, 400, "invalid_request", "field 'width' must be a whole number"),
        ("POST", "/v1/tasks", #"{"url":"https://x/","task_id":"../etc"}"#, 400, "invalid_request", "field 'task_id' must be 1–64 letters"),
        ("POST", "/v1/tasks", #"{"url":"https://x/","input":"admin"}"#, 400, "invalid_request", "field 'input' must be one of view, control, got 'admin'"),
        ("POST", "/v1/tasks?wait=maybe", #"{"url":"https://x/"}"#, 400, "invalid_request", "query 'wait' must be true or false"),
        ("GET", "/v1/tasks?limit=abc", "", 400, "invalid_request", "query 'limit' must be a whole number from 1 to 1000"),
        ("GET", "/v1/tasks?state=sleeping", "", 400, "invalid_request", "state must be among"),
        ("GET", "/v1/tasks/nope", "", 404, "task_not_found", "no task with id 'nope'"),
        ("POST", "/v1/tasks/nope/stop", "", 404, "task_not_found", "no task with id 'nope'"),
        ("GET", "/v1/tasks/nope/events", "", 404, "task_not_found", "no task with id 'nope'"),
        ("POST", "/v1/tasks/nope/events", #"{"type":"step"}"#, 404, "task_not_found", "no task with id 'nope'"),
        ("POST", "/v1/tasks/nope/viewer-token", #"{"role":"view"}"#, 404, "task_not_found", "no task with id 'nope'"),
        ("GET", "/v1/nothing", "", 404, "not_found", "no route GET /v1/nothing"),
    ])
    func badInputGetsItsStatusAndANamedErrorAndStoresNothing(method: String, path: String, body: String, status: Int, code: String, message: String) async throws {
        try await ControlHarness.with { h in
            let answer = try await h.client.request(HTTPMethod(rawValue: method), path, json: body.isEmpty ? nil : body)
            #expect(answer.status == status, "\(answer.text)")
            let error = try ControlHarness.json(answer)["error"]
            #expect(error?["code"]?.string == code)
            #expect(error?["message"]?.string?.contains(message) == true, "\(answer.text)")
            #expect(try await h.store.tasks(states: nil, limit: 10).isEmpty, "nothing stored")
            #expect(try await h.client.request(.GET, "/v1/health").status == 200, "and the daemon keeps serving")
        }
    }

    @Test func oversizedBodiesAre413AndTheConnectionSurvivesForTheNext() async throws {
        try await ControlHarness.with { h in
            let huge = #"{"url":"https://x/","metadata":{"blob":""# + String(repeating: "a", count: 2 << 20) + #""}}"#
            let answer = try await h.client.request(.POST, "/v1/tasks", json: huge)
            #expect(answer.status == 413 && answer.errorCode == "body_too_large", "\(answer.status) \(answer.text.prefix(200))")
            let bigMetadata = #"{"url":"https://x/","metadata":{"blob":""# + String(repeating: "a", count: 20_000) + #""}}"#
            let field = try await h.client.request(.POST, "/v1/tasks", json: bigMetadata)
            #expect(field.status == 413 && field.errorCode == "field_too_large")
            #expect(try await h.store.tasks(states: nil, limit: 10).isEmpty)
            #expect(try await h.client.request(.POST, "/v1/tasks", json: #"{"url":"https://x/"}"#).status == 201)
        }
    }

    @Test func eventsAppendThenReadSinceNLongPollAndStreamWithResume() async throws {
        try await ControlHarness.with { h in
            _ = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"ev","url":"https://example.com/"}"#)
            let appended = try await h.client.request(.POST, "/v1/tasks/ev/events", json: #"{"type":"agent.step","data":{"n":1,"action":"click"}}"#)
            #expect(appended.status == 201)
            let seq = try ControlHarness.json(appended)["seq"]?.int ?? 0
            #expect(try await h.store.events("ev", after: Int64(seq - 1), limit: 1).first?.type == "agent.step", "stored before acknowledged")

            let after = try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/ev/events?since=\(seq - 1)")).array ?? []
            #expect(after.map { $0["type"]?.string } == ["agent.step"] && after.first?["data"]?["action"]?.string == "click")
            #expect((try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/ev/events?since=\(seq)")).array ?? []).isEmpty)

            // A long poll is answered by the next append, not by its deadline.
            async let polled = h.client.request(.GET, "/v1/tasks/ev/events?since=\(seq)&wait=20")
            async let appender = h.client.request(.POST, "/v1/tasks/ev/events", json: #"{"type":"agent.step","data":{"n":2}}"#)
            let woke = try ControlHarness.json(try await polled).array ?? []
            _ = try await appender
            #expect(woke.first?["data"]?["n"]?.int == 2, "\(woke)")

            // A parameter out of its range is refused whichever form was asked for.
            for bad in ["limit=0", "wait=999"] {
                let refused = try await h.client.request(.GET, "/v1/tasks/ev/events?\(bad)", headers: [("Accept", "text/event-stream")])
                #expect(refused.status == 400 && refused.text.contains("query '"), "\(bad): \(refused.text)")
            }

            // The stream resumes after Last-Event-ID and ends once the task is final.
            _ = try await h.client.request(.POST, "/v1/tasks/ev/complete", json: #"{"result":{"ok":true}}"#)
            let text = try await h.client.withConnection { conn in
                var collected: [UInt8] = []
                let status = try await conn.stream("/v1/tasks/ev/events", headers: [("Last-Event-ID", "\(seq)")]) { chunk in
                    collected += chunk
                    return true
                }
                #expect(status == 200)
                return String(decoding: collected, as: UTF8.self)
            }
            let ids = text.split(separator: "\n").filter { $0.hasPrefix("id: ") }.compactMap { Int($0.dropFirst(4)) }
            #expect(ids.first == seq + 1 && ids == Array(ids.first!...ids.last!), "resumed after \(seq), no gaps: \(ids)")
            #expect(text.contains("event: state_changed") && text.contains(#""to":"completed""#) && text.contains(#""result":{"ok":true}"#))
        }
    }

    @Test func aViewerTokenIsBoundToItsTaskAndRole() async throws {
        try await ControlHarness.with { h in
            _ = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"tok","url":"https://example.com/"}"#)
            let answer = try await h.client.request(.POST, "/v1/tasks/tok/viewer-token", json: #"{"role":"view","ttl_s":60}"#)
            #expect(answer.status == 201)
            let body = try ControlHarness.json(answer)
            let token = try #require(body["token"]?.string)
            let granted = try await h.service.tokens.verify(token)
            #expect(granted.task == "tok" && granted.role == .view)
            var forged = Array(token.utf8)
            forged[forged.count - 3] = forged[forged.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            await #expect(throws: (any Error).self) { _ = try await h.service.tokens.verify(String(decoding: forged, as: UTF8.self)) }
            #expect(try await h.client.request(.POST, "/v1/tasks/tok/viewer-token", json: #"{"role":"admin"}"#).status == 400)
            #expect(try await h.client.request(.POST, "/v1/tasks/tok/viewer-token", json: #"{"role":"view","ttl_s":99999}"#).status == 400)
            _ = try await h.client.request(.POST, "/v1/tasks/tok/stop")
            let late = try await h.client.request(.POST, "/v1/tasks/tok/viewer-token", json: #"{"role":"control"}"#)
            #expect(late.status == 409 && late.errorCode == "task_finished")
        }
    }

    @Test func aPeerNotOnTheAllowlistIsRefused() async throws {
        try await ControlHarness.with(allow: PeerAllowlist(uids: [54321], gids: [54321])) { h in
            let answer = try await h.client.request(.POST, "/v1/tasks", json: #"{"url":"https://example.com/"}"#)
            #expect(answer.status == 403)
            #expect(try ControlHarness.json(answer)["error"]?["code"]?.string == "peer_not_allowed")
            #expect(try await h.store.tasks(states: nil, limit: 10).isEmpty)
            var st = stat()
            #expect(stat(h.dir + "/control.sock", &st) == 0 && st.st_mode & 0o777 == 0o660, "the socket is 0660")
        }
    }

    @Test func sessionsThatDieFailTheirTaskAndTimeoutsAndCapacityAreKept() async throws {
        var limits = TaskLimits()
        limits.maxSessions = 1
        try await ControlHarness.with(limits: limits) { h in
            _ = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"one","url":"https://example.com/"}"#)
            let second = try ControlHarness.json(try await h.client.request(.POST, "/v1/tasks", json: #"{"task_id":"two","url":"https://example.com/"}"#))
            #expect(second["state"]?.string == "queued", "one slot, taken")
            let capacity = try ControlHarness.json(try await h.client.request(.GET, "/v1/capacity"))
            #expect(capacity["active"]?.int == 1 && capacity["queued"]?.int == 1 && capacity["available"]?.int == 0)

            h.sessions.crash("one")
            try await h.waitState("one", .failed)
            let one = try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/one"))
            #expect(one["reason"]?.string == "session ended: restart budget spent")
            let events = try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/one/events")).array ?? []
            #expect(events.contains { $0["type"]?.string == "key_blocked" && $0["data"]?["combo"]?.string == "Ctrl+W" })
            try await h.waitState("two", .running)

            _ = try await h.client.request(.POST, "/v1/tasks/two/stop")
            let slow = try ControlHarness.json(try await h.client.request(.POST, "/v1/tasks", json: #"{"task_id":"slow","url":"https://hold.example/","timeout_s":1}"#))
            #expect(slow["state"]?.string != "running")
            try await h.waitState("slow", .timedOut)
            #expect(try await h.store.task("slow")?.reason?.contains("not running after") == true)
            h.sessions.release("slow")
        }
    }

    @Test func aRunningTaskIsTimedOutAtItsMaximumLifetimeAndItsSessionStopped() async throws {
        var limits = TaskLimits()
        limits.maxLifetime = .seconds(1)
        try await ControlHarness.with(limits: limits) { h in
            _ = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"old","url":"https://example.com/"}"#)
            try await h.waitState("old", .timedOut)
            #expect(try await h.store.task("old")?.reason == "reached its maximum lifetime of 1.0 seconds")
            let events = try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/old/events")).array ?? []
            try await waitUntil("the session's end to be recorded", on: h.service.appended) {
                try await h.store.events("old", after: 0, limit: 100).contains { $0.type == "session_ended" }
            }
            #expect(events.contains { $0["data"]?["to"]?.string == "timed_out" })
            #expect(await h.sessions.listSessions().isEmpty, "its session was stopped")
        }
    }

    @Test func drainingRefusesNewTasksAndHealthSaysSo() async throws {
        try await ControlHarness.with { h in
            _ = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"before","url":"https://example.com/"}"#)
            #expect(try await h.client.request(.POST, "/v1/drain").status == 200)
            let refused = try await h.client.request(.POST, "/v1/tasks", json: #"{"url":"https://example.com/"}"#)
            #expect(refused.status == 503 && refused.errorCode == "draining")
            #expect(try ControlHarness.json(try await h.client.request(.GET, "/v1/health"))["status"]?.string == "draining")
            #expect(try await h.client.request(.POST, "/v1/tasks", json: #"{"task_id":"before","url":"https://example.com/"}"#).status == 200,
                    "a replayed create of an existing task still answers")
            #expect(try ControlHarness.json(try await h.client.request(.GET, "/v1/tasks/before"))["state"]?.string == "running", "running tasks go on")
        }
    }

    /// What a scale-in hook does: drain, and wait for the last task (its slot is given back once
    /// its session has ended). A wakeup that never came would hold the second drain for an hour.
    @Test(.timeLimit(.minutes(1))) func aDrainWithWaitAnswersOnceTheLastTaskHasEndedOrAtItsDeadline() async throws {
        try await ControlHarness.with { h in
            _ = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"last","url":"https://example.com/"}"#)
            let early = try ControlHarness.json(try await h.client.request(.POST, "/v1/drain?wait=1"))
            #expect(early["active"]?.int == 1 && early["queued"]?.int == 0 && early["drained"] == .bool(false), "at its deadline, what is left")
            #expect(try await h.client.request(.POST, "/v1/drain?wait=3601").status == 400, "an hour at most")

            async let drained = h.client.request(.POST, "/v1/drain?wait=3600")
            #expect(try await h.client.request(.POST, "/v1/tasks/last/stop", json: "{}").status == 200)
            let answer = try ControlHarness.json(try await drained)
            #expect(answer["active"]?.int == 0 && answer["queued"]?.int == 0 && answer["drained"] == .bool(true), "\(answer)")
            #expect(await h.service.capacity().active == 0)
        }
    }

    @Test func aRestartMarksUnfinishedTasksInterruptedWithAnEvent() async throws {
        let dir = try makeTempDir("kioskd-control")
        defer { removeTree(dir) }
        try await ControlHarness.with(dir: dir) { first in
            _ = try await first.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"orphan","url":"https://example.com/"}"#)
        }
        // The daemon died: the scope's end cancelled its server and closed its store, and
        // nothing stopped the task.
        try await ControlHarness.with(dir: dir) { second in
            let task = try ControlHarness.json(try await second.client.request(.GET, "/v1/tasks/orphan"))
            #expect(task["state"]?.string == "interrupted")
            let events = try ControlHarness.json(try await second.client.request(.GET, "/v1/tasks/orphan/events")).array ?? []
            #expect(events.last?["data"]?["to"]?.string == "interrupted")
        }
    }

    /// Every operation of the OpenAPI document answers with one of the statuses it documents.
    @Test func everyDocumentedRouteAnswersAsDocumented() async throws {
        try await ControlHarness.with { h in
            let doc = try JSONDecoder().decode(JSONValue.self, from: Data(OpenAPI.document.utf8))
            #expect(doc["openapi"]?.string == "3.1.0")
            guard case .object(let paths)? = doc["paths"] else { Issue.record("no paths"); return }
            let served = try ControlHarness.json(try await h.client.request(.GET, "/v1/openapi.json"))
            #expect(served == doc)

            _ = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"doc","url":"https://example.com/"}"#)
            let bodies = ["/v1/tasks": #"{"url":"https://example.com/"}"#, "/v1/tasks/{id}/events": #"{"type":"step"}"#,
                          "/v1/tasks/{id}/viewer-token": #"{"role":"view"}"#]
            var checked = 0
            for (path, item) in paths.sorted(by: { $0.key > $1.key }) {
                guard case .object(let operations) = item else { continue }
                for (method, operation) in operations.sorted(by: { $0.key < $1.key }) {
                    guard case .object(let responses)? = operation["responses"] else { Issue.record("\(method) \(path): no responses"); continue }
                    let concrete = path.replacingOccurrences(of: "{id}", with: "doc")
                    let answer = try await h.client.request(HTTPMethod(rawValue: method.uppercased()), concrete,
                                                            json: method == "post" ? bodies[path] : nil)
                    #expect(responses.keys.contains(String(answer.status)), "\(method.uppercased()) \(path) answered \(answer.status): \(answer.text.prefix(200))")
                    let type = answer.headers["Content-Type"].first ?? ""
                    let documented = operation["responses"]?[String(answer.status)]?["content"]
                    let promised = documented.flatMap { if case .object(let o) = $0 { Array(o.keys) } else { nil } } ?? ["application/json"]
                    #expect(promised.contains { type.hasPrefix($0) }, "\(method.uppercased()) \(path) answers \(type), documented \(promised)")
                    checked += 1
                }
            }
            #expect(checked == 17, "every operation was called")
        }
    }
}
