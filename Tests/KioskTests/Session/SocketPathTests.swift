import Kiosk
import KioskdTestSupport
import Logging
import Supervision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Session directories are named by display, so a session's socket paths do not depend on its
/// id; the runtime directory's length is what bounds them, and a browser that dies of it says so.
@Suite("Session socket paths", .serialized)
struct SocketPathTests {
    /// The longest runtime.dir `config check` accepts for displays up to 999.
    static let longestRuntime = SessionLayout.maxSocketPath
        - SessionLayout.longestSocketPath(directoryLength: SessionLayout.directory(sessionsDir: "/sessions", display: 999).utf8.count)

    /// A runtime directory of exactly `length` bytes that the session user can walk through.
    static func runtimeDir(_ base: String, length: Int) throws -> String {
        var path = base
        guard mkdir(path, 0o755) == 0 else { throw TestFailure("mkdir \(path): errno \(errno)") }
        while path.utf8.count < length {
            path += "/" + String(repeating: "r", count: min(40, max(1, length - path.utf8.count - 1)))
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw TestFailure("mkdir \(path): errno \(errno)") }
        }
        guard path.utf8.count == length else { throw TestFailure("\(path) is not \(length) bytes") }
        return path
    }

    /// Three-digit displays, as long as the limit was computed for: the check is to the byte.
    static let displays = DisplayAllocator(range: 980...989)

    static func manager(_ runtime: String) throws -> SessionManager {
        SessionManager(host: SessionHost(sessionsDir: runtime + "/sessions", recordsDir: runtime + "/records",
                                         user: try SessionHost.sessionUser(named: sessionUserName),
                                         displays: displays, ports: hostPorts, logger: Logger(label: "test")))
    }

    @Test func aLongTaskIdBootsUnderTheLongestRuntimeDirAndOneByteMoreIsChromiumsFatalInTheReason() async throws {
        let base = try makeTempDir("ksp")
        defer { removeTree(base) }
        chmod(base, 0o755)
        #expect(Self.longestRuntime >= 40, "room for ordinary runtime directories: \(Self.longestRuntime)")
        let id = "task-" + String(repeating: "0123456789abcdef", count: 4).prefix(59)
        #expect(id.count == 64)

        let fits = try Self.manager(try Self.runtimeDir(base + "/a", length: Self.longestRuntime))
        _ = try await fits.start()
        let session = try await fits.create(SessionSettings(id: String(id), url: testPage("long id"), width: 800, height: 600))
        let info = await session.info()
        #expect(info.directory.hasSuffix("/sessions\(info.display.replacingColon)"), "named by its display: \(info.directory)")
        #expect(try await withPage(info) { cdp, s in try await evaluate(cdp, s, loadedTitle) } == "long id")
        await fits.stopAll(reason: "test over")

        let tooLong = try Self.manager(try Self.runtimeDir(base + "/b", length: Self.longestRuntime + 1))
        _ = try await tooLong.start()
        let error = await #expect(throws: SessionError.self) {
            try await tooLong.create(SessionSettings(id: "short", url: "about:blank", width: 800, height: 600))
        }
        let reason = "\(error.map { "\($0)" } ?? "")"
        #expect(reason.contains("chromium") && reason.contains("FATAL") && reason.contains("Socket path too long"),
                "the line that explains comes first: \(reason)")
        await tooLong.stopAll(reason: "test over")
    }
}

private extension String {
    /// ":12" → "/d12".
    var replacingColon: String { "/d" + dropFirst() }
}
