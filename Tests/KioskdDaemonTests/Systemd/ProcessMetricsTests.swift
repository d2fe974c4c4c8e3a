import FoundationEssentials
import Testing
@testable import KioskdDaemon

/// The daemon's process figures, read from /proc for this (test) process.
@Suite struct ProcessMetricsTests {
    @Test func theStandardProcessMetricsAreThereWithPlausibleValues() throws {
        let text = ProcessMetrics.exposition()
        var values: [String: Double] = [:]
        var types: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.hasPrefix("# TYPE "), words.count == 4 { types[String(words[2])] = String(words[3]) }
            if !line.hasPrefix("#"), words.count == 2 { values[String(words[0])] = Double(words[1]) }
        }
        #expect(types == ["process_start_time_seconds": "gauge", "process_cpu_seconds_total": "counter", "process_resident_memory_bytes": "gauge",
                          "process_open_fds": "gauge", "process_max_fds": "gauge"])
        let now = Date().timeIntervalSince1970
        let started = try #require(values["process_start_time_seconds"])
        #expect(started <= now + 1 && started > now - 86400, "this process started within the day: \(started) vs \(now)")
        #expect(try #require(values["process_resident_memory_bytes"]) > Double(1 << 20))
        #expect(try #require(values["process_open_fds"]) >= 3)
        #expect(try #require(values["process_max_fds"]) >= values["process_open_fds"]!)
        #expect(try #require(values["process_cpu_seconds_total"]) > 0)
    }
}
