import Essentials
import KioskdTestSupport
import Supervision
import Testing
@testable import KioskdDaemon

#if canImport(Glibc)
import Glibc
#endif

@Suite("socket activation")
struct SocketActivationTests {
    @Test func namesSelectWhichSocketIsWhich() throws {
        let pid: pid_t = 4242
        let both = try SocketActivation.parse(["LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "public:control"], pid: pid)
        #expect(both == SocketActivation(control: 4, publicListener: 3))
        let one = try SocketActivation.parse(["LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "control"], pid: pid)
        #expect(one == SocketActivation(control: 3, publicListener: nil))
        // Not for this process (inherited from a parent), or no activation at all: nothing.
        #expect(try SocketActivation.parse(["LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "control:public"], pid: pid) == nil)
        #expect(try SocketActivation.parse(["LISTEN_FDS": "2"], pid: pid) == nil)
        #expect(try SocketActivation.parse([:], pid: pid) == nil)
    }

    @Test func aMistakeInTheSocketUnitsIsASetupErrorNamingIt() {
        func error(_ env: [String: String]) -> String {
            do {
                _ = try SocketActivation.parse(env.merging(["LISTEN_PID": "7"]) { $1 }, pid: 7)
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(error(["LISTEN_FDS": "2", "LISTEN_FDNAMES": "control:metrics"]).contains("LISTEN_FDNAMES: a socket is named 'metrics'"))
        #expect(error(["LISTEN_FDS": "2", "LISTEN_FDNAMES": "control:control"]).contains("two sockets are named 'control'"))
        #expect(error(["LISTEN_FDS": "2", "LISTEN_FDNAMES": "control"]).contains("2 sockets passed but 1 names"))
        // systemd's default name (the unit's) when FileDescriptorName= is missing.
        #expect(error(["LISTEN_FDS": "1"]).contains("FileDescriptorName="))
        #expect(error(["LISTEN_FDS": "lots", "LISTEN_FDNAMES": "control"]).hasPrefix("LISTEN_FDS: 'lots'"))
    }

    /// What systemd does for kioskd.socket and kioskd-public.socket: it binds and listens, and a
    /// client connects while no kioskd runs (before the first start, after a kill -9); kioskd,
    /// started with the sockets, answers every such client — none is refused.
    @Test func clientsThatConnectedWhileNoDaemonRanAreServed() async throws {
        let kioskd = try builtProduct("kioskd")
        let dir = try makeTempDir("kioskd-activation")
        defer { removeTree(dir) }
        if let error = makeDirectories(dir + "/run", mode: 0o755) { throw TestFailure("mkdir \(dir)/run: \(error)") }
        let path = dir + "/run/control.sock"
        let control = try listeningUnix(path), (listener, port) = try listeningLoopback()
        defer { close(control); close(listener) }
        // public.listen names another port: systemd's socket replaces it.
        try writeFile(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: try freePort()))
        func start() throws -> DaemonProcess {
            try DaemonProcess(executable: "/bin/sh", arguments: ["-c", "LISTEN_PID=$$ exec \"$0\" serve --config \"$1\"", kioskd, dir + "/kioskd.yaml"],
                              environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "public:control"],
                              directory: dir, passing: [listener, control])
        }
        func waiting() throws -> (control: Int32, health: Int32) {
            let c = try connectUnix(path, timeout: 30), h = try connectLoopback(port: port, timeout: 30)
            sendAll(c, Array("GET /v1/health HTTP/1.1\r\nHost: kioskd\r\nConnection: close\r\n\r\n".utf8))
            sendAll(h, Array("GET /health HTTP/1.1\r\nHost: kioskd\r\nConnection: close\r\n\r\n".utf8))
            return (c, h)
        }

        let early = try waiting()
        var daemon = try start()
        for fd in [early.control, early.health] {
            let answer = readAnswer(fd)
            close(fd)
            #expect(answer.status == 200, "a client that connected before kioskd started: \(answer)")
        }
        daemon.signal(SIGKILL)
        #expect(try await daemon.waitExit() == 128 + SIGKILL)
        let late = try waiting()
        daemon = try start()
        for fd in [late.control, late.health] {
            let answer = readAnswer(fd)
            close(fd)
            #expect(answer.status == 200, "a client that connected while kioskd was down: \(answer)")
        }
        #expect(daemon.stderr.contains("the public socket systemd passed is not on public.listen's port"), "\(daemon.stderr.suffix(2000))")
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0)
        // The socket is systemd's: kioskd's stop leaves its file, and it still accepts.
        let after = try connectUnix(path)
        close(after)
    }

    @Test func aSocketOfTheWrongKindStopsTheStartNamingIt() async throws {
        let kioskd = try builtProduct("kioskd")
        let dir = try makeTempDir("kioskd-activation")
        defer { removeTree(dir) }
        let (listener, _) = try listeningLoopback()
        defer { close(listener) }
        try writeFile(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: try freePort()))
        let daemon = try DaemonProcess(executable: "/bin/sh", arguments: ["-c", "LISTEN_PID=$$ exec \"$0\" serve --config \"$1\"", kioskd, dir + "/kioskd.yaml"],
                                       environment: ["PATH": "/usr/bin:/bin", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "control"],
                                       directory: dir, passing: [listener])
        #expect(try await daemon.waitExit() == 78)
        #expect(daemon.stderr.contains("LISTEN_FDNAMES: the socket named 'control' (fd 3) must be a Unix stream socket"), "\(daemon.stderr)")
    }

    private func listeningUnix(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard withUnixSocketAddress(path, { bind(fd, $0, $1) }) == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw TestFailure("cannot listen on \(path): errno \(errno)")
        }
        return fd
    }

    private func listeningLoopback() throws -> (Int32, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in(), length = socklen_t(MemoryLayout<sockaddr_in>.size)
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok, listen(fd, 16) == 0 else {
            close(fd)
            throw TestFailure("cannot listen on 127.0.0.1: errno \(errno)")
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }
}

/// kioskd as the packaged unit runs it: its own unprivileged user, without capabilities. Tests
/// run as root, where a socket option only root may set (SO_DEBUG, set by mistake for
/// TCP_NODELAY) passed unseen while every viewer of an unprivileged kioskd hung.
@Suite("kioskd unprivileged")
struct UnprivilegedServeTests {
    @Test func bothListenersAnswerWhenKioskdRunsAsItsOwnUser() async throws {
        let kioskd = try builtProduct("kioskd")
        let dir = try makeTempDir("kioskd-unprivileged")
        defer { removeTree(dir) }
        guard let user = getpwnam("kioskd") else { throw TestFailure("no user kioskd: scripts/setup.sh creates it") }
        let (uid, gid) = (user.pointee.pw_uid, user.pointee.pw_gid)
        guard chown(dir, uid, gid) == 0 else { throw TestFailure("chown \(dir): errno \(errno)") }
        let port = try freePort()
        try writeFile(dir + "/kioskd.yaml", testDaemonConfig(dir: dir, port: port, "sessions:\n  port_guard: false\n"))
        _ = chown(dir + "/kioskd.yaml", uid, gid)
        let notify = try NotifyListener(path: dir + "/notify.sock")
        defer { notify.close() }
        _ = chmod(dir + "/notify.sock", 0o666)
        let daemon = try DaemonProcess(executable: try systemProgram("/usr/bin/setpriv", package: "util-linux"),
                                       arguments: ["--reuid=kioskd", "--regid=kioskd", "--init-groups", "--inh-caps=-all", "--bounding-set=-all",
                                                   kioskd, "serve", "--config", dir + "/kioskd.yaml"],
                                       environment: ["PATH": "/usr/bin:/bin", "KIOSKD_LOG_FORMAT": "text", "NOTIFY_SOCKET": dir + "/notify.sock"], directory: dir)
        try await notify.wait(for: "READY=1") { $0.hasPrefix("READY=1") }
        // /health, and an upgrade refused for its token: a plain answer and the bridge's own.
        for request in ["GET /health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n",
                        "GET /api/v1/vnc/ws?task_id=t&token=bad HTTP/1.1\r\nHost: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                            + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"] {
            let fd = try connectLoopback(port: port, timeout: 10)
            sendAll(fd, Array(request.utf8))
            let answer = readAnswer(fd)
            close(fd)
            #expect(answer.status == 200 || answer.code == "token_invalid", "\(answer)")
        }
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitExit() == 0, "\(daemon.stderr.suffix(2000))")
    }
}
