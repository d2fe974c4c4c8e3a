@testable import Control
import Essentials
import FoundationEssentials
import Kiosk
import KioskdTestSupport
import Testing

/// Memory admission, the queue's bound, pressure and the warm pool as the API layer sees them,
/// with fake sessions (the real ones, in a real memory cgroup: KioskdDaemonTests' capacity tests).
@Suite("Capacity over the API")
struct CapacityAPITests {
    static let mib: UInt64 = 1 << 20

    func create(_ h: ControlHarness, _ id: String, url: String = "https://example.com/") async throws -> ControlClient.Answer {
        try await h.client.request(.POST, "/v1/tasks", json: #"{"task_id":"\#(id)","url":"\#(url)"}"#)
    }

    @Test func tasksStartWhileTheirMemoryFitsThenQueueAndEndedSessionsLetTheNextStart() async throws {
        try await ControlHarness.with(capacity: CapacitySettings(sessionEstimate: 300 * Self.mib), budget: 1000 * Self.mib) { h in
            for id in ["a", "b", "c"] {
                #expect(try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"\#(id)","url":"https://example.com/"}"#).json?["state"]?.string == "running")
            }
            #expect(try await create(h, "d").json?["state"]?.string == "queued", "a fourth 300 MiB session does not fit in 1000 MiB")
            let capacity = try #require(try await h.client.request(.GET, "/v1/capacity").json)
            #expect(capacity["active"]?.int == 3 && capacity["queued"]?.int == 1 && capacity["available"]?.int == 0)
            #expect(capacity["memory_budget_bytes"]?.int == Int(1000 * Self.mib) && capacity["memory_committed_bytes"]?.int == Int(900 * Self.mib))
            #expect(capacity["session_estimate_bytes"]?.int == Int(300 * Self.mib) && capacity["slots_free"]?.int == 5)

            // A session's working set (not the kernel's peak, which counts the file cache) teaches
            // the estimate: every session is now expected to reach 400 MiB.
            h.sessions.setMemory("a", MemoryReading(current: 320 * Self.mib, peak: 600 * Self.mib, oomKills: 0))
            try await waitUntil("the measurement", on: h.service.load) { await h.service.capacity().estimate == 400 * Self.mib }
            #expect(await h.service.capacity().committed == 1200 * Self.mib)

            #expect(try await h.client.request(.POST, "/v1/tasks/b/stop", json: "{}").status == 200)
            #expect(try await h.client.request(.POST, "/v1/tasks/c/stop", json: "{}").status == 200)
            try await h.waitState("d", .running)
        }
    }

    @Test func beyondTheQueueACreateIs503WithRetryAfterAndNothingIsStored() async throws {
        var limits = TaskLimits()
        limits.maxSessions = 1
        limits.maxQueued = 1
        try await ControlHarness.with(limits: limits) { h in
            #expect(try await create(h, "running").status == 201)
            #expect(try await create(h, "waiting").json?["state"]?.string == "queued")
            let refused = try await create(h, "refused")
            #expect(refused.status == 503 && refused.errorCode == "queue_full", "\(refused.text)")
            #expect(refused.headers.first(name: "Retry-After") == "\(Capacity.retryAfterSeconds)")
            #expect(try await h.client.request(.GET, "/v1/tasks/refused").status == 404, "a refused task is not stored")
            #expect(try await create(h, "waiting").status == 200, "a replayed create of a queued task still answers")
        }
    }

    @Test func aHostWhoseBudgetCannotHoldOneSessionRefusesWithTheFigures() async throws {
        try await ControlHarness.with(capacity: CapacitySettings(sessionEstimate: 300 * Self.mib), budget: 200 * Self.mib) { h in
            let refused = try await create(h, "big")
            #expect(refused.status == 503 && refused.errorCode == "over_budget")
            #expect(refused.json?["error"]?["message"]?.string?.contains("300 MiB") == true && refused.headers.first(name: "Retry-After") == nil,
                    "waiting would not help: \(refused.text)")
            // A task whose own limit fits can never use more: it runs.
            let small = try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"small","url":"https://example.com/","memory_max_mb":150}"#)
            #expect(small.json?["state"]?.string == "running", "\(small.text)")
            #expect(try await h.client.request(.POST, "/v1/tasks", json: #"{"url":"https://example.com/","memory_max_mb":32}"#).status == 400)
        }
    }

    @Test func memoryPressureHoldsNewTasksUntilItFallsBelowTheLowMark() async throws {
        let pressure = Pressure()
        try await ControlHarness.with(capacity: CapacitySettings(pressureHigh: 20, pressureLow: 10), pressure: pressure) { h in
            pressure.value = 35
            try await waitUntil("pressure to be seen", on: h.service.load) { await h.service.capacity().pressured }
            #expect(try await create(h, "held").json?["state"]?.string == "queued")
            let capacity = try #require(try await h.client.request(.GET, "/v1/capacity").json)
            #expect(capacity["pressured"] == .bool(true) && capacity["memory_pressure"]?.number == 35)
            pressure.value = 15
            try await waitUntil("a sample between the marks", on: h.service.load) { await h.service.capacity().pressure == 15 }
            #expect(try await h.store.task("held")?.state == .queued, "between the marks admission stays shut")
            pressure.value = 5
            try await h.waitState("held", .running)
        }
    }

    @Test func aTaskTakesAWarmSessionThePoolRefillsAndADrainEmptiesIt() async throws {
        try await ControlHarness.with(capacity: CapacitySettings(warm: 1)) { h in
            try await waitUntil("a warm session", on: h.service.load) { await h.service.capacity().warmReady == 1 }
            let warm = try #require(h.sessions.created.first)
            #expect(warm.hasPrefix("w-"))

            let task = try #require(try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"fast","url":"https://example.com/a"}"#).json)
            #expect(task["state"]?.string == "running")
            #expect(h.sessions.adopted == [warm: "https://example.com/a"], "the warm session opened the task's page")
            let events = try await h.store.events("fast", after: 0, limit: 100)
            #expect(events.contains { $0.type == "session_booting" && $0.data.contains(warm) })

            try await waitUntil("the pool to refill", on: h.service.load) { await h.service.capacity().warmReady == 1 }
            #expect(h.sessions.created.count == 2, "a new session, never the used one")

            // Another size cannot take it: it starts cold.
            #expect(try await h.client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"wide","url":"https://example.com/","width":1920}"#).json?["state"]?.string == "running")
            #expect(h.sessions.created.last == "wide")

            // The task's end stops the session it took (by the session's own id).
            #expect(try await h.client.request(.POST, "/v1/tasks/fast/stop", json: "{}").status == 200)
            try await waitUntil("the taken session to stop", on: h.service.load) { await !h.sessions.listSessions().map(\.id).contains(warm) }

            _ = try await h.client.request(.POST, "/v1/drain")
            try await waitUntil("the pool to empty", on: h.service.load) {
                let live = await h.sessions.listSessions().map(\.id)
                return await h.service.capacity().warmReady == 0 && !live.contains { $0.hasPrefix("w-") }
            }
        }
    }
}
