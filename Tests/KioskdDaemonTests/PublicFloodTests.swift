import KioskdTestSupport
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The probe's case end to end: `kioskd serve` with 190 open files and 200 idle connections on
/// its public listener. The listener's limits keep its connections below the open-file limit,
/// so the control socket (same process) and /health from another address are still answered.
@Suite("Public listener flood")
struct PublicFloodTests {
    @Test func idleConnectionsStarveNeitherTheControlSocketNorOtherAddresses() async throws {
        let kioskd = try builtProduct("kioskd")
        let prlimit = try systemProgram("/usr/bin/prlimit", package: "util-linux")
        let dir = try makeTempDir("kioskd-flood")
        defer { removeTree(dir) }
        let port = try freePort()
        let path = dir + "/kioskd.yaml"
        try writeFile(path, testDaemonConfig(dir: dir, port: port))
        let notify = try NotifyListener(path: dir + "/notify.sock")
        defer { notify.close() }
        let daemon = try DaemonProcess(executable: prlimit, arguments: ["--nofile=190:190", kioskd, "serve", "--config", path],
                                       environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text", "NOTIFY_SOCKET": notify.path],
                                       directory: dir)
        try await notify.wait(for: "READY=1") { $0.hasPrefix("READY=1") }

        let idle = try (0..<200).map { _ in try connectLoopback(port: port) }
        defer { idle.forEach { close($0) } }
        let control = try connectUnix(dir + "/run/control.sock")
        defer { close(control) }
        sendAll(control, Array("GET /v1/health HTTP/1.1\r\nHost: kioskd\r\nConnection: close\r\n\r\n".utf8))
        #expect(readAnswer(control).status == 200, "the control socket answers")
        let other = try connect(port: port, from: "127.0.0.2")
        defer { close(other) }
        sendAll(other, Array("GET /health HTTP/1.1\r\nHost: kioskd\r\nConnection: close\r\n\r\n".utf8))
        let health = readAnswer(other)
        #expect(health.status == 200, "another address gets /health: \(health)")
        // The flood's own address: answered (429) rather than left hanging.
        let more = try connectLoopback(port: port)
        defer { close(more) }
        sendAll(more, Array("GET /health HTTP/1.1\r\nHost: kioskd\r\nConnection: close\r\n\r\n".utf8))
        #expect(readAnswer(more).status == 429)

        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0, "\(daemon.stderr.suffix(2000))")
    }

    /// A connection from `source` (any 127.x address is this host's loopback).
    func connect(port: Int, from source: String) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, withLoopbackAddress(port: port, { Glibc.connect(fd, $0, $1) }) == 0 else {
            close(fd)
            throw TestFailure("cannot connect from \(source) to 127.0.0.1:\(port): errno \(errno)")
        }
        return fd
    }
}
