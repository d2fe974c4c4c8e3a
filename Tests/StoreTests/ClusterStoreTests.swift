import Essentials
import KioskdTestSupport
import Logging
import Store
import Testing

/// The cluster's contract on a real PostgreSQL: leases, claims, fencing, rescue, NOTIFY.
@Suite("The cluster store on PostgreSQL")
struct ClusterStoreTests {
    static let idle = HostLoad(maxSessions: 2, active: 0, available: 2, draining: false)

    /// A fresh migrated database and `n` stores on it, one per "host" (each its own pool).
    func with(_ name: String, hosts n: Int = 1, _ body: ([PostgresTaskStore]) async throws -> Void) async throws {
        let url = try await PostgresFixture.shared.value.createDatabase(name + "_" + String(UInt32.random(in: 0...UInt32.max), radix: 16))
        guard case .postgres(let settings) = try StoreLocation(url: url) else { throw TestFailure("not a postgres URL: \(url)") }
        let stores = try (0..<n).map { _ in try PostgresTaskStore(settings, logger: Logger(label: "test.cluster")) }
        do {
            try await stores[0].migrate()
            try await body(stores)
        } catch {
            for store in stores { await store.close() }
            throw error
        }
        for store in stores { await store.close() }
    }

    func queued(_ id: String, origin: String?, at time: Int64 = 1000) -> TaskRecord {
        TaskRecord(id: id, state: .queued, request: #"{"url":"about:blank"}"#, createdAt: time, updatedAt: time, origin: origin)
    }

    func start(_ store: PostgresTaskStore, _ id: String, _ fence: Fence) async throws -> TransitionResult {
        try await store.transition(id, from: [.queued], to: .starting, update: TaskUpdate(time: 2000), event: event("state_changed"), fence: fence)
    }

    /// Waits on the store's own clock (the one leases are measured on) until `host`'s lease is over.
    func untilExpired(_ store: PostgresTaskStore, _ host: String) async throws {
        try await withTimeout(.seconds(10), "the lease of \(host) to end") {
            while true {
                let view = try await store.view()
                if let record = view.hosts.first(where: { $0.id == host }), !view.alive(record) { return }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    @Test func hostsRegisterRenewAndAreListedOnTheStoresClock() async throws {
        try await with("cluster_members") { stores in
            let store = stores[0]
            let a = try await store.register(host: "a", address: "10.0.0.1:8081", version: "t", load: Self.idle, ttlMS: 60_000)
            let b = try await store.register(host: "b", address: "10.0.0.2:8081", version: "t", load: Self.idle, ttlMS: 60_000)
            #expect(b.epoch > a.epoch, "epochs come from one sequence: every registration's is new and larger")
            var load = Self.idle
            load.active = 1
            load.available = 1
            #expect(try await store.renew(a, load: load, ttlMS: 60_000))
            let view = try await store.view()
            #expect(view.hosts.map(\.id) == ["a", "b"] && view.live.count == 2)
            #expect(view.hosts.first?.load == load && view.hosts.first?.address == "10.0.0.1:8081")
            // Another machine under a live host's id is refused, naming the holder.
            await #expect(throws: StoreError.self) {
                _ = try await store.register(host: "a", address: "10.0.0.9:8081", version: "t", load: Self.idle, ttlMS: 60_000)
            }
            // The same host again (a restart) gets a new epoch; the old fence is over.
            let again = try await store.register(host: "a", address: "10.0.0.1:8081", version: "t", load: Self.idle, ttlMS: 60_000)
            #expect(again.epoch > b.epoch)
            #expect(try await store.renew(a, load: Self.idle, ttlMS: 60_000) == false, "a replaced epoch cannot renew")
            try await store.leave(again)
            #expect(try await store.view().live.map(\.id) == ["b"])
        }
    }

    @Test func concurrentClaimsNeverTakeOneTaskTwice() async throws {
        try await with("cluster_claims", hosts: 3) { stores in
            var fences: [Fence] = []
            for (i, store) in stores.enumerated() {
                fences.append(try await store.register(host: "h\(i)", address: "127.0.0.1:\(9000 + i)", version: "t", load: Self.idle, ttlMS: 60_000))
            }
            for n in 0..<60 { _ = try await stores[n % 3].create(queued("t\(n)", origin: "h\(n % 3)", at: Int64(1000 + n)), event: event("state_changed")) }
            // Every host claims in small bites at once until the queue is empty.
            let taken = try await withThrowingTaskGroup(of: [(String, String)].self) { group in
                for (store, fence) in zip(stores, fences) {
                    group.addTask {
                        var mine: [(String, String)] = []
                        while true {
                            let batch = try await store.claim(fence, limit: 3, graceMS: 0)
                            if batch.isEmpty, try await store.view().queued == 0 { return mine }
                            mine += batch.map { ($0.id, fence.host) }
                        }
                    }
                }
                var all: [(String, String)] = []
                for try await part in group { all += part }
                return all
            }
            #expect(taken.count == 60 && Set(taken.map(\.0)).count == 60, "each task claimed exactly once")
            for (id, host) in taken {
                let stored = try await stores[0].task(id)
                #expect(stored?.host == host && stored?.state == .queued)
                let claims = try await stores[0].events(id, after: 0, limit: 10).filter { $0.type == "claimed" }
                #expect(claims.count == 1 && claims.first?.data == #"{"host":"\#(host)"}"#)
            }
            let view = try await stores[0].view()
            #expect(view.queued == 0 && view.claimed == 60)
        }
    }

    @Test func aHostClaimsItsOwnFirstAndOthersOnlyAfterTheGrace() async throws {
        try await with("cluster_grace") { stores in
            let store = stores[0]
            let a = try await store.register(host: "a", address: "127.0.0.1:1", version: "t", load: Self.idle, ttlMS: 60_000)
            let b = try await store.register(host: "b", address: "127.0.0.1:2", version: "t", load: Self.idle, ttlMS: 60_000)
            _ = try await store.create(queued("older-from-b", origin: "b", at: 1000), event: event("state_changed"))
            _ = try await store.create(queued("newer-from-a", origin: "a", at: 2000), event: event("state_changed"))
            #expect(try await store.claim(b, limit: 5, graceMS: 60_000).map(\.id) == ["older-from-b"], "within the grace only its own")
            _ = try await store.create(queued("from-b-again", origin: "b", at: 3000), event: event("state_changed"))
            #expect(try await store.claim(a, limit: 5, graceMS: 0).map(\.id) == ["newer-from-a", "from-b-again"], "its own first, then the oldest")
        }
    }

    @Test func aStaleEpochOrAnExpiredLeaseIsFencedOut() async throws {
        try await with("cluster_fence") { stores in
            let store = stores[0]
            let old = try await store.register(host: "a", address: "127.0.0.1:1", version: "t", load: Self.idle, ttlMS: 60_000)
            _ = try await store.create(queued("x", origin: "a"), event: event("state_changed"))
            _ = try await store.create(queued("y", origin: "a"), event: event("state_changed"))
            #expect(try await store.claim(old, limit: 2, graceMS: 0).count == 2)
            guard case .moved = try await start(store, "x", old) else { throw TestFailure("the owner's write under its lease was refused") }
            // The host restarts: its new epoch replaces the lease the claims were made under.
            let new = try await store.register(host: "a", address: "127.0.0.1:1", version: "t", load: Self.idle, ttlMS: 60_000)
            await #expect(throws: StoreError.self) { _ = try await store.append("x", event: event("late"), fence: old) }
            await #expect(throws: StoreError.self) { _ = try await start(store, "y", old) }
            await #expect(throws: StoreError.self, "a new epoch does not own the old epoch's claims either") { _ = try await start(store, "y", new) }
            let x = try await store.task("x"), xEvents = try await store.events("x", after: 0, limit: 10)
            #expect(x?.state == .starting && xEvents.map(\.type) == ["state_changed", "claimed", "state_changed"])
            // A lease that ran out fences its own epoch's claims too, before any rescue.
            let short = try await store.register(host: "b", address: "127.0.0.1:2", version: "t", load: Self.idle, ttlMS: 300)
            _ = try await store.create(queued("z", origin: "b"), event: event("state_changed"))
            #expect(try await store.claim(short, limit: 1, graceMS: 0).map(\.id) == ["z"])
            try await untilExpired(store, "b")
            await #expect(throws: StoreError.self) { _ = try await start(store, "z", short) }
            #expect(try await store.claim(short, limit: 1, graceMS: 0).isEmpty)
            #expect(try await store.renew(short, load: Self.idle, ttlMS: 300) == false)
        }
    }

    @Test func rescueInterruptsADeadHostsRunningTasksAndQueuesItsUnstartedOnes() async throws {
        try await with("cluster_rescue", hosts: 2) { stores in
            let (a, b) = (stores[0], stores[1])
            let dead = try await a.register(host: "dead", address: "127.0.0.1:1", version: "t", load: Self.idle, ttlMS: 2000)
            let live = try await b.register(host: "live", address: "127.0.0.1:2", version: "t", load: Self.idle, ttlMS: 60_000)
            for id in ["run", "wait"] { _ = try await a.create(queued(id, origin: "dead"), event: event("state_changed")) }
            #expect(try await a.claim(dead, limit: 2, graceMS: 0).count == 2)
            _ = try await start(a, "run", dead)
            _ = try await a.transition("run", from: [.starting], to: .running, update: TaskUpdate(time: 3000), event: event("state_changed"), fence: dead)
            #expect(try await b.rescue().isEmpty, "nothing to rescue while the lease lasts")
            try await untilExpired(b, "dead")
            let rescued = try await b.rescue()
            #expect(rescued.map(\.task.id).sorted() == ["run", "wait"] && rescued.allSatisfy { $0.host == "dead" })
            let run = try await b.task("run"), wait = try await b.task("wait")
            #expect(run?.state == .interrupted && run?.reason?.contains("host dead stopped renewing its lease") == true && run?.host == "dead")
            #expect(wait?.state == .queued && wait?.host == nil)
            let runEvents = try await b.events("run", after: 0, limit: 10)
            #expect(runEvents.last?.data.contains(#""to":"interrupted""#) == true && runEvents.last?.data.contains(#""host":"dead""#) == true)
            #expect(try await b.events("wait", after: 0, limit: 10).last?.type == "requeued")
            #expect(try await b.rescue().isEmpty, "a rescue is done once")
            #expect(try await b.claim(live, limit: 5, graceMS: 0).map(\.id) == ["wait"], "the requeued task runs elsewhere")
        }
    }

    @Test func aDrainPutsOnlyItsOwnUnstartedClaimsBack() async throws {
        try await with("cluster_requeue") { stores in
            let store = stores[0]
            let a = try await store.register(host: "a", address: "127.0.0.1:1", version: "t", load: Self.idle, ttlMS: 60_000)
            let b = try await store.register(host: "b", address: "127.0.0.1:2", version: "t", load: Self.idle, ttlMS: 60_000)
            for id in ["w1", "w2", "started"] { _ = try await store.create(queued(id, origin: "a"), event: event("state_changed")) }
            _ = try await store.create(queued("theirs", origin: "b"), event: event("state_changed"))
            #expect(try await store.claim(a, limit: 3, graceMS: 60_000).count == 3)
            #expect(try await store.claim(b, limit: 1, graceMS: 60_000).map(\.id) == ["theirs"])
            _ = try await start(store, "started", a)
            let back = try await store.requeue(a, ids: ["w1", "w2", "started", "theirs"], reason: "host a is draining")
            #expect(back.map(\.task.id).sorted() == ["w1", "w2"], "a started task and another host's claim stay")
            let w1 = try await store.task("w1"), theirs = try await store.task("theirs")
            #expect(w1?.host == nil && w1?.state == .queued && theirs?.host == "b")
            #expect(try await store.events("w1", after: 0, limit: 10).last?.data == #"{"host":"a","reason":"host a is draining"}"#)
            #expect(try await store.view().queued == 2)
        }
    }

    @Test func everyHostHearsEveryChange() async throws {
        try await with("cluster_notify", hosts: 2) { stores in
            let heard = Recorder<ClusterChange>()
            let listening = Task { [stream = stores[1].changes()] in for await change in stream { heard.record(change) } }
            defer { listening.cancel() }
            // LISTEN is in place once a change made after it is heard: a new task each round
            // until one is (the round's wait is for that notification, not a pause).
            var probe = ""
            for n in 1...50 {
                let id = "probe\(n)"
                probe = id
                _ = try await stores[0].create(queued(id, origin: "a"), event: event("state_changed"))
                if (try? await heard.wait(for: "a notification", timeout: .milliseconds(200)) { $0 == .task(id: id, state: .queued, host: nil) }) != nil { break }
            }
            let id = probe
            #expect(heard.items.contains(.task(id: id, state: .queued, host: nil)), "a new task is heard with its state")
            _ = try await stores[0].append(id, event: event("step"))
            try await heard.wait(for: "the event's notification") { $0 == .event(taskID: id, seq: 2) }
            let fence = try await stores[0].register(host: "a", address: "127.0.0.1:1", version: "t", load: Self.idle, ttlMS: 60_000)
            _ = try await stores[0].claim(fence, limit: 1, graceMS: 0)
            try await heard.wait(for: "the claim's notification") { if case .task(_, .queued, "a") = $0 { true } else { false } }
        }
    }
}
