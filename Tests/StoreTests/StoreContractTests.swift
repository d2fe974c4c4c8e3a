import KioskdTestSupport
import Logging
import Store
import Supervision
import Testing

/// One contract, two stores: every test runs against SQLite and against a real PostgreSQL.
enum Backend: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }

    /// A fresh, migrated store for `body`, closed (awaited) however the body ends.
    func with(_ name: String, _ body: (any TaskStore) async throws -> Void) async throws {
        switch self {
        case .sqlite:
            let dir = try makeTempDir("kioskd-store")
            defer { removeTree(dir) }
            try await using(try SQLiteTaskStore(path: dir + "/kioskd.sqlite"), migrated: true, body)
        case .postgres:
            let url = try await PostgresFixture.shared.value.createDatabase(name + "_" + String(UInt32.random(in: 0...UInt32.max), radix: 16))
            guard case .postgres(let settings) = try StoreLocation(url: url) else { throw TestFailure("not a postgres URL: \(url)") }
            try await using(try PostgresTaskStore(settings, logger: Logger(label: "test.pg")), migrated: true, body)
        }
    }
}

/// `body` with `store` (migrated first if asked), closed (awaited) however the body ends.
func using(_ store: any TaskStore, migrated: Bool = false, _ body: (any TaskStore) async throws -> Void) async throws {
    do {
        if migrated { try await store.migrate() }
        try await body(store)
    } catch {
        await store.close()
        throw error
    }
    await store.close()
}

func task(_ id: String, at time: Int64 = 1000) -> TaskRecord {
    TaskRecord(id: id, state: .queued, request: #"{"url":"about:blank"}"#, createdAt: time, updatedAt: time)
}

func event(_ type: String, _ time: Int64 = 1000) -> NewEvent { NewEvent(type: type, time: time, data: #"{"n":1}"#) }

@Suite("The task store contract")
struct StoreContractTests {
    @Test(arguments: Backend.allCases)
    func createIsIdempotentAndStoresTheFirstEventWithIt(_ backend: Backend) async throws {
        try await backend.with("create") { store in
            let (first, created) = try await store.create(task("a"), event: event("state_changed"))
            #expect(created && first.lastSeq == 1)
            var other = task("a", at: 2000)
            other.request = #"{"url":"https://example.com/"}"#
            let (again, createdAgain) = try await store.create(other, event: event("state_changed"))
            #expect(!createdAgain && again == first, "a retried create returns the stored task unchanged")
            let events = try await store.events("a", after: 0, limit: 10)
            #expect(events.map(\.seq) == [1] && events.first?.type == "state_changed")
            #expect(try await store.task("missing") == nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func aTransitionHappensOnlyFromTheStateTheCallerSaw(_ backend: Backend) async throws {
        try await backend.with("transition") { store in
            _ = try await store.create(task("t"), event: event("created"))
            let moved = try await store.transition("t", from: [.queued], to: .starting, update: TaskUpdate(time: 1100), event: event("state_changed", 1100))
            guard case .moved(let t, let e) = moved else { Issue.record("expected a move, got \(moved)"); return }
            #expect(t.state == .starting && t.updatedAt == 1100 && e.seq == 2)
            let stale = try await store.transition("t", from: [.queued], to: .cancelled, update: TaskUpdate(time: 1200), event: event("x"))
            guard case .conflict(let current) = stale else { Issue.record("expected a conflict, got \(stale)"); return }
            #expect(current.state == .starting)
            #expect(try await store.events("t", after: 0, limit: 10).count == 2, "a refused transition stores no event")
            let done = try await store.transition("t", from: [.starting], to: .failed, update: TaskUpdate(time: 1300, reason: "boom", session: #"{"a":1}"#),
                                                  event: event("state_changed", 1300))
            guard case .moved(let final, _) = done else { Issue.record("expected a move"); return }
            #expect(final.endedAt == 1300 && final.reason == "boom" && final.session == #"{"a":1}"#)
            #expect(try await store.task("t") == final)
            #expect(try await store.transition("nope", from: [.queued], to: .failed, update: TaskUpdate(time: 1), event: event("x")) == .notFound)
        }
    }

    @Test(arguments: Backend.allCases)
    func concurrentAppendsGetEverySequenceNumberOnce(_ backend: Backend) async throws {
        try await backend.with("appends") { store in
            _ = try await store.create(task("c"), event: event("created"))
            let seqs = try await withThrowingTaskGroup(of: Int64.self) { group in
                for i in 0..<60 { group.addTask { try await store.append("c", event: event("step", Int64(2000 + i)))!.seq } }
                return try await group.reduce(into: [Int64]()) { $0.append($1) }
            }
            #expect(seqs.sorted() == Array(2...61), "no gaps, no duplicates")
            let stored = try await store.events("c", after: 0, limit: 1000)
            #expect(stored.map(\.seq) == Array(1...61))
            #expect(try await store.events("c", after: 59, limit: 10).map(\.seq) == [60, 61])
            #expect(try await store.events("c", after: 10, limit: 3).map(\.seq) == [11, 12, 13])
            #expect(try await store.task("c")?.lastSeq == 61)
            #expect(try await store.append("missing", event: event("x")) == nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func listingFiltersByStateNewestFirst(_ backend: Backend) async throws {
        try await backend.with("list") { store in
            for (i, id) in ["x", "y", "z"].enumerated() { _ = try await store.create(task(id, at: Int64(1000 + i)), event: event("created")) }
            _ = try await store.transition("y", from: [.queued], to: .cancelled, update: TaskUpdate(time: 5000), event: event("s"))
            #expect(try await store.tasks(states: nil, limit: 10).map(\.id) == ["z", "y", "x"])
            #expect(try await store.tasks(states: [.queued], limit: 10).map(\.id) == ["z", "x"])
            #expect(try await store.tasks(states: [.queued, .cancelled], limit: 2).map(\.id) == ["z", "y"])
        }
    }

    @Test(arguments: Backend.allCases)
    func aRestartInterruptsWhatWasUnfinishedAndRetentionPrunesWhatEnded(_ backend: Backend) async throws {
        try await backend.with("recovery") { store in
            for id in ["q", "s", "r", "done"] { _ = try await store.create(task(id), event: event("created")) }
            _ = try await store.transition("s", from: [.queued], to: .starting, update: TaskUpdate(time: 1100), event: event("s"))
            _ = try await store.transition("r", from: [.queued], to: .starting, update: TaskUpdate(time: 1100), event: event("s"))
            _ = try await store.transition("r", from: [.starting], to: .running, update: TaskUpdate(time: 1200), event: event("s"))
            _ = try await store.transition("done", from: [.queued], to: .cancelled, update: TaskUpdate(time: 1300), event: event("s"))
            let interrupted = try await store.interruptUnfinished(update: TaskUpdate(time: 9000, reason: "restarted"), event: event("state_changed", 9000))
            #expect(Set(interrupted.map(\.id)) == ["q", "s", "r"])
            #expect(interrupted.allSatisfy { $0.state == .interrupted && $0.endedAt == 9000 && $0.reason == "restarted" })
            #expect(try await store.events("r", after: 0, limit: 10).last?.type == "state_changed")
            #expect(try await store.task("done")?.state == .cancelled, "finished tasks are untouched")
            #expect(try await store.interruptUnfinished(update: TaskUpdate(time: 9100), event: event("x")).isEmpty)

            #expect(try await store.prune(endedBefore: 5000) == 1, "only 'done' ended before 5000")
            #expect(try await store.task("done") == nil)
            #expect(try await store.events("done", after: 0, limit: 10).isEmpty)
            #expect(try await store.task("r") != nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func migratingAgainChangesNothing(_ backend: Backend) async throws {
        try await backend.with("migrate") { store in
            _ = try await store.create(task("m"), event: event("created"))
            try await store.migrate()
            #expect(try await store.task("m")?.id == "m")
        }
    }

    @Test func storeURLsAreParsedWithTheirMistakesNamed() throws {
        #expect(try StoreLocation(url: "sqlite:///var/lib/kioskd/k.sqlite") == .sqlite(path: "/var/lib/kioskd/k.sqlite"))
        let pg = try StoreLocation(url: "postgres://app:s%40cret@db.internal:6543/kioskd?sslmode=verify-full")
        #expect(pg == .postgres(PostgresSettings(host: "db.internal", port: 6543, user: "app", password: "s@cret", database: "kioskd", sslMode: .verifyFull)))
        let env = try StoreLocation(url: "postgresql://db/k", environment: ["PGPASSWORD": "pw"])
        #expect(env == .postgres(PostgresSettings(host: "db", port: 5432, user: "kioskd", password: "pw", database: "k", sslMode: .prefer)))
        #expect(throws: StoreURLError.self) { try StoreLocation(url: "mysql://x/y") }
        #expect(throws: StoreURLError.self) { try StoreLocation(url: "postgres://db:99999/k") }
        #expect(throws: StoreURLError.self) { try StoreLocation(url: "postgres://db/k?sslmode=maybe") }
        #expect(throws: StoreURLError.self) { try StoreLocation(url: "postgres://db") }
        #expect(throws: StoreURLError.self) { try StoreLocation(url: "sqlite://relative.db") }
    }

    @Test func anUnreachablePostgresIsAStoreErrorNotAHang() async throws {
        let port = try freePort()
        guard case .postgres(let settings) = try StoreLocation(url: "postgres://kioskd@127.0.0.1:\(port)/none?sslmode=disable") else { return }
        var quiet = Logger(label: "test.pg")
        quiet.logLevel = .critical
        try await using(try PostgresTaskStore(settings, timeout: .seconds(2), logger: quiet)) { store in
            do {
                try await store.migrate()
                Issue.record("migrating against nothing must fail")
            } catch let error as StoreError {
                #expect(error.description.contains("127.0.0.1:\(port) did not answer within 2"), "\(error)")
            }
            await #expect(throws: StoreError.unavailable("PostgreSQL at 127.0.0.1:\(port) did not answer within 2.0 seconds")) { _ = try await store.task("x") }
        }
    }
}
