import Control
import Essentials
import FoundationEssentials
import KioskdTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the API acknowledged survives the daemon's death: appends on several connections at
/// once, kioskd SIGKILLed in the middle of them, and after the restart every event that got its
/// 201 is there, with the number it was given, in order, with no gaps — on both stores.
@Suite("durability")
struct DurabilityTests {
    struct Ack: Sendable {
        let writer: Int, n: Int, seq: Int
        /// 1 for the first acknowledged append, over all writers.
        let ordinal: Int
    }

    final class AckCount: Sendable {
        private let value = Atomic(0)
        func next() -> Int { value.add(1, ordering: .relaxed).newValue }
    }

    static let writers = 6
    /// Appends acknowledged before the kill (the burst goes on while it lands).
    static let beforeKill = 240

    @Test(arguments: ["sqlite", "postgres"])
    func everyAcknowledgedAppendSurvivesASIGKILL(store: String) async throws {
        let kioskd = try builtProduct("kioskd")
        let dir = try makeTempDir("kioskd-durability")
        defer { removeTree(dir) }
        var storeConfig = ""
        if store == "postgres" {
            let url = try await PostgresFixture.shared.value.createDatabase("durability_\(UInt32.random(in: 0...UInt32.max))")
            storeConfig = "store:\n  url: \"\(url)\"\n"
        }
        try writeFile(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: try freePort(), storeConfig + """
            sessions:
              displays: 850-899
              ports: 13000-13499
            """))
        func start() async throws -> DaemonProcess {
            let daemon = try DaemonProcess(executable: kioskd, arguments: ["serve", "--config", dir + "/kioskd.yaml"],
                                           environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text"], directory: dir)
            try await daemon.log.wait(for: "the control socket", timeout: .seconds(60)) { $0.contains("kioskd/control: ready") }
            return daemon
        }
        let client = ControlClient(socketPath: dir + "/run/control.sock")
        let first = try await start()
        let created = try await client.request(.POST, "/v1/tasks?wait=true", json: #"{"task_id":"d1","url":"data:text/html,durable"}"#)
        #expect(created.status == 201, "\(created.text)")

        // Each writer appends on its own connection until the daemon is gone; what got a 201
        // is recorded with the seq it was given.
        let acknowledged = Recorder<Ack>(), count = AckCount()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<Self.writers {
                group.addTask {
                    try? await client.withConnection { connection in
                        for n in 0... {
                            let answer = try await connection.request(.POST, "/v1/tasks/d1/events", json: #"{"type":"burst","data":{"w":\#(writer),"n":\#(n)}}"#)
                            guard answer.status == 201 else { throw TestFailure("append \(writer)/\(n): \(answer.status) \(answer.text)") }
                            let seq = Int(try JSONDecoder().decode(JSONValue.self, from: Data(answer.body))["seq"]?.number ?? -1)
                            acknowledged.record(Ack(writer: writer, n: n, seq: seq, ordinal: count.next()))
                        }
                    }
                }
            }
            try await acknowledged.wait(for: "\(Self.beforeKill) acknowledged appends", timeout: .seconds(60)) { $0.ordinal >= Self.beforeKill }
            first.signal(SIGKILL)
            try await group.waitForAll()
        }
        #expect(try await first.waitExit() == 128 + SIGKILL)

        let second = try await start()
        var events: [JSONValue] = []
        while true {
            let page = try JSONDecoder().decode(JSONValue.self, from: Data(try await client.request(.GET, "/v1/tasks/d1/events?since=\(events.count)&limit=1000").body)).array ?? []
            if page.isEmpty { break }
            events += page
        }
        let seqs = events.map { Int($0["seq"]?.number ?? 0) }
        #expect(seqs == (0..<seqs.count).map { $0 + 1 }, "seq 1…n with no gap")
        let stored = Dictionary(events.compactMap { e -> (String, Int)? in
            guard e["type"]?.string == "burst", let w = e["data"]?["w"]?.number, let n = e["data"]?["n"]?.number else { return nil }
            return ("\(Int(w))/\(Int(n))", Int(e["seq"]?.number ?? 0))
        }, uniquingKeysWith: { a, _ in a })
        let acked = acknowledged.items
        #expect(acked.count >= Self.beforeKill)
        let lost = acked.filter { stored["\($0.writer)/\($0.n)"] != $0.seq }
        #expect(lost.isEmpty, "\(lost.count) of \(acked.count) acknowledged appends missing or renumbered after the restart: \(lost.prefix(5))")
        // Each writer's appends are stored in the order it made them.
        for writer in 0..<Self.writers {
            let order = events.filter { $0["data"]?["w"]?.number == Double(writer) }.map { Int($0["data"]?["n"]?.number ?? -1) }
            #expect(order == order.sorted() && Set(order).count == order.count, "writer \(writer): \(order.prefix(20))")
        }
        #expect(events.last?["data"]?["to"]?.string == "interrupted", "the restart ends the task after the burst")
        second.signal(SIGTERM)
        #expect(try await second.waitExit() == 0, "\(second.stderr.suffix(2000))")
    }
}
