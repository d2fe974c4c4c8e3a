import Kiosk
import KioskdTestSupport
import Logging
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("X displays, cookies and Xvfb")
struct DisplayAllocatorTests {
    let dir: String

    init() throws { dir = try makeTempDir("kioskd-x") }

    /// An allocator over private lock/socket directories, for the leftover rules.
    func privateAllocator(_ range: ClosedRange<Int>) throws -> DisplayAllocator {
        mkdir(dir + "/sockets", 0o755)
        return DisplayAllocator(range: range, lockDir: dir, socketDir: dir + "/sockets")
    }

    func writeLock(_ n: Int, pid: Int32) throws {
        let text = String(repeating: " ", count: max(0, 10 - String(pid).count)) + "\(pid)\n"
        let f = fopen(dir + "/.X\(n)-lock", "w")
        fputs(text, f)
        fclose(f)
    }

    /// A socket file nobody listens on any more (its server died).
    func deadSocket(_ n: Int) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        _ = withUnixSocketAddress("\(dir)/sockets/X\(n)") { bind(fd, $0, $1) }
        close(fd)
    }

    func deadPID() async throws -> Int32 {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(argv[0]) }
        #expect(spawnWithDefaultSignals(&pid, "/bin/true", nil, argv, [nil]) == 0)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return pid
    }

    @Test func theLowestFreeDisplayIsReservedUntilReleased() async throws {
        defer { removeTree(dir) }
        let displays = try privateAllocator(50...52)
        #expect(try await displays.allocate() == 50)
        #expect(try await displays.allocate() == 51)
        await displays.release(50)
        #expect(try await displays.allocate() == 50)
        #expect(try await displays.allocate() == 52)
        await #expect(throws: DisplayError.exhausted(50...52)) { try await displays.allocate() }
    }

    @Test func aLockWhosePIDIsDeadIsCleanedWithItsSocket() async throws {
        defer { removeTree(dir) }
        let displays = try privateAllocator(60...61)
        let dead = try await deadPID()
        try writeLock(60, pid: dead)
        deadSocket(60)
        #expect(await displays.state(of: 60) == .stale("lock PID \(dead) is not running"))
        #expect(try await displays.allocate() == 60)
        #expect(access(dir + "/.X60-lock", F_OK) != 0 && access(dir + "/sockets/X60", F_OK) != 0)
    }

    @Test func aLockWhosePIDWasReusedByANonXProcessIsStale() async throws {
        defer { removeTree(dir) }
        let displays = try privateAllocator(61...61)
        try writeLock(61, pid: getpid())  // alive, but this test binary is no X server
        guard case .stale(let why) = await displays.state(of: 61) else { Issue.record("should be stale"); return }
        #expect(why.contains("not an X server"))
        #expect(try await displays.allocate() == 61)
    }

    @Test func anUnreadableLockOrABoundAbstractSocketIsLeftAlone() async throws {
        defer { removeTree(dir) }
        let displays = try privateAllocator(62...63)
        let f = fopen(dir + "/.X62-lock", "w")
        fputs("garbage\n", f)
        fclose(f)
        // Someone in this network namespace holds @<socketDir>/X63.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        #expect(withUnixSocketAddress("@\(dir)/sockets/X63") { bind(fd, $0, $1) } == 0)
        listen(fd, 1)
        await #expect(throws: DisplayError.exhausted(62...63)) { try await displays.allocate() }
        #expect(access(dir + "/.X62-lock", F_OK) == 0, "a lock we cannot read is not ours to delete")
    }

    @Test func theCookieFileHasTheXauFormat() throws {
        defer { removeTree(dir) }
        let cookie = XCookie(bytes: Array(0..<16))
        let entry = XAuthority.entry(display: 42, cookie: cookie)
        #expect(entry == [0xFF, 0xFF, 0, 0, 0, 2, 0x34, 0x32, 0, 18] + Array("MIT-MAGIC-COOKIE-1".utf8) + [0, 16] + Array(0..<16))
        #expect(XCookie.random() != XCookie.random())
        try XAuthority.write(path: dir + "/xauth", display: 42, cookie: cookie)
        var st = stat()
        stat(dir + "/xauth", &st)
        #expect(st.st_mode & 0o777 == 0o600)
    }

    @Test func xvfbStartsOnItsDisplayAndAdmitsOnlyCookieHolders() async throws {
        defer { removeTree(dir) }
        let xvfb = try systemProgram(Xvfb.executable, package: "xvfb")
        let xdpyinfo = try systemProgram("/usr/bin/xdpyinfo", package: "x11-utils")
        let display = try await hostDisplays.allocate()
        let auth = dir + "/xauth"
        try XAuthority.write(path: auth, display: display, cookie: .random())
        let bus = EventBus()
        let recorder = EventRecorder(bus)
        let sup = try Supervisor(name: "session", spec: SupervisorSpec(strategy: .restForOne, children: [
            Xvfb.childSpec(Xvfb.Settings(display: display, authFile: auth, width: 800, height: 600)),
        ]), events: bus, logger: Logger(label: "test"))
        // Scoped: however the test ends, the supervisor is cancelled (its Xvfb killed) and awaited.
        async let outcome = sup.run()
        try await sup.waitReady()
        #expect(recorder.events.contains { $0.kind == .ready(child: "xvfb", detail: "\(display)") }, "ready when -displayfd says so")
        #expect(xvfb == "/usr/bin/Xvfb")

        let env = ["DISPLAY": ":\(display)", "PATH": "/usr/bin:/bin"]
        #expect(try await runToExit(xdpyinfo, [], environment: env.merging(["XAUTHORITY": auth]) { $1 }) == 0)
        #expect(try await runToExit(xdpyinfo, [], environment: env.merging(["XAUTHORITY": dir + "/none"]) { $1 }) != 0,
                "without the cookie the server refuses")

        // A live X server the allocator did not reserve is never handed out or touched. (With
        // -displayfd Xvfb writes no lock file: its sockets are what show it is live.) The range
        // holds only this display: its neighbours may belong to tests running in parallel.
        let others = DisplayAllocator(range: display...display)
        guard case .live = await others.state(of: display) else { Issue.record("a running Xvfb must count as live"); return }
        await #expect(throws: DisplayError.self) { try await others.allocate() }
        #expect(access("/tmp/.X11-unix/X\(display)", F_OK) == 0)

        sup.shutdown()
        _ = await outcome
        // Checked while the display is still ours: once released, a parallel test may take it.
        #expect(await others.state(of: display) == .free, "Xvfb removes its socket on SIGTERM")
        await hostDisplays.release(display)
    }
}
