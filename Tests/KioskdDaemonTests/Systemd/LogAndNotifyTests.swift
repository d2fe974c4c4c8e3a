import KioskdTestSupport
import Logging
import Supervision
import Testing
@testable import KioskdDaemon

#if canImport(Glibc)
import Glibc
#endif

@Suite("Logging and systemd notify")
struct LogAndNotifyTests {
    let epoch = timespec(tv_sec: 1_800_000_000, tv_nsec: 5_000_000)

    @Test func journalLinesCarryTheSyslogPriorityAndStayOnOneLine() {
        let line = LogOutput.format(style: .journal, level: .warning, label: "kioskd", message: "child crashed\nsecond line",
                                    metadata: ["child": "web", "session": "s 1"], time: epoch)
        #expect(line == "<4>child crashed\\nsecond line child=web session=\"s 1\"\n")
        #expect(LogOutput.priority(.critical) == 2 && LogOutput.priority(.error) == 3 && LogOutput.priority(.notice) == 5
                && LogOutput.priority(.info) == 6 && LogOutput.priority(.debug) == 7)
    }

    @Test func textLinesAreReadable() {
        let line = LogOutput.format(style: .text, level: .info, label: "kioskd", message: "ready", metadata: [:], time: epoch)
        #expect(line == "2027-01-15T08:00:00.005Z INFO     kioskd: ready\n")
    }

    @Test func journaldIsDetectedOnlyWhenJournalStreamMatchesStderr() {
        var st = stat()
        fstat(2, &st)
        #expect(LogOutput.stderrIsJournal(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino)"]))
        #expect(!LogOutput.stderrIsJournal(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino + 1)"]))
        #expect(!LogOutput.stderrIsJournal(environment: [:]))
    }

    @Test func notificationsReachThePathSocket() async throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let listener = try NotifyListener(path: dir + "/notify.sock")
        defer { listener.close() }
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": listener.path])
        notifier.ready(status: "2/2 programs running")
        notifier.watchdog()
        notifier.stopping()
        try await listener.wait(for: "READY") { $0 == "READY=1\nSTATUS=2/2 programs running" }
        try await listener.wait(for: "WATCHDOG") { $0 == "WATCHDOG=1" }
        try await listener.wait(for: "STOPPING") { $0 == "STOPPING=1\nSTATUS=stopping" }
    }

    @Test func abstractSocketsWork() async throws {
        // An abstract socket: bind "\0name", address it as "@name".
        let name = "kioskd-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        #expect(withUnixSocketAddress("@" + name) { bind(fd, $0, $1) } == 0)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name]).notify([("STATUS", "hello")]))
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        #expect(n > 0 && String(decoding: buffer[0..<max(n, 0)], as: UTF8.self) == "STATUS=hello")
    }

    @Test func withoutNotifySocketNothingIsSent() {
        let notifier = SystemdNotifier(environment: ["WATCHDOG_USEC": "1000000"])
        #expect(!notifier.isActive)
        #expect(!notifier.notify([("READY", "1")]))
        #expect(notifier.watchdogInterval == nil)
    }

    @Test func theWatchdogIsArmedForUsOnlyAndPingsAtHalfTheInterval() {
        let ours = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000"], pid: 42)
        #expect(ours.watchdogInterval == .milliseconds(1500))
        let mine = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "42"], pid: 42)
        #expect(mine.watchdogInterval == .milliseconds(1500))
        let other = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"], pid: 42)
        #expect(other.watchdogInterval == nil)
    }
}
