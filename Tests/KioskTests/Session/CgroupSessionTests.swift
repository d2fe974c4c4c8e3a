import Essentials
import KioskdTestSupport
import Logging
import Supervision
import Testing
@testable import Kiosk

#if canImport(Glibc)
import Glibc
#endif

/// Real sessions in real cgroups: placement, teardown, the memory limit. Needs root and a
/// writable cgroup v2 hierarchy (this host: hybrid, /sys/fs/cgroup/unified + v1 memory).
@Suite("Sessions in cgroups", .serialized)
struct CgroupSessionTests {
    @Test func everyProcessIsInTheSessionsGroupAndWhatEscapedDiesWithIt() async throws {
        try await SessionFixture.with("kioskd-cgroup", cgroups: .system) { f in
            _ = try requireCgroups(try #require(f.manager.host.cgroups))
            _ = try await f.manager.start()
            let session = try await f.manager.create(SessionSettings(id: "placed", url: testPage("placed"), width: 800, height: 600))
            let group = try #require(session.cgroup)
            let info = await session.info()
            #expect(group.directories.first?.hasSuffix("/d\(info.display.dropFirst())") == true, "named by the display: \(group.directories)")
            for (child, pid) in info.pids { #expect(isMember(pid, of: group), "\(child) is in the session's group") }
            let marked = processesWithEnvironment(containing: "KIOSKD_SESSION=\(info.directory)\0")
            #expect(marked.count > info.pids.count, "Chromium's helpers too: \(marked.count) processes")
            for pid in marked { #expect(isMember(pid, of: group), "pid \(pid) of the session is in its group") }

            let reading = try #require(await session.memory())
            #expect(reading.current > 32 << 20 && reading.peak >= reading.current && reading.oomKills == 0, "\(reading)")
            #expect(await f.manager.memory()["placed"] != nil)
            print("idle session in its cgroup: \(reading.current >> 20) MiB now, \(reading.peak >> 20) MiB peak, \(marked.count) processes")

            // Out of the tree's reach (no cookie, no marker, its own session): only the group holds it.
            let escapee = try await spawnEscapee(in: group)
            #expect(isMember(escapee, of: group))

            let end = await session.stop(reason: "done")
            #expect(end == SessionEnd(reason: "done", failed: false))
            #expect(!isAlive(escapee), "the escapee died with the group")
            #expect(group.directories.allSatisfy { access($0, F_OK) != 0 }, "every hierarchy's directory is removed")
            for (child, pid) in info.pids { #expect(!isAlive(pid), "\(child) is gone") }
            #expect(await session.memory() == nil)
        }
    }

    @Test func withoutCgroupsASessionRunsAsBeforeAndReadsItsMemoryFromProc() async throws {
        let dir = try makeTempDir("kioskd-cgroup-none")
        defer { KioskdTestSupport.removeTree(dir) }
        try writeFile(dir + "/cgroup", Array("0::/\n".utf8), mode: 0o644, owner: nil)
        try await SessionFixture.with("kioskd-cgroup", cgroups: CgroupRoots(mount: dir + "/nothing", membership: dir + "/cgroup")) { f in
            let mode = try #require(f.manager.host.cgroups).mode
            #expect(mode == .unavailable(reason: "no cgroup v2 hierarchy: \(dir)/nothing is not a cgroup2 mount and has no unified/"))
            _ = try await f.manager.start()
            let session = try await f.manager.create(SessionSettings(id: "pss", url: testPage("pss"), width: 800, height: 600))
            #expect(session.cgroup == nil)
            let reading = try #require(await session.memory())
            // Chromium alone is well over 32 MiB of PSS; nothing is counted twice, so far under 2 GiB.
            #expect(reading.current > 32 << 20 && reading.current < 2 << 30 && reading.peak >= reading.current && reading.oomKills == 0, "\(reading)")
            print("idle session by PSS: \(reading.current >> 20) MiB")
            await session.stop(reason: "done")
        }
    }

    /// The limit is the idle session's usage (~150–190 MiB measured here) with room to spare; the
    /// page's allocations are what cross it.
    static let limit: UInt64 = 320 << 20

    /// Allocates 16 MiB every 20 ms and touches it, unless it is a reload (the watch reloads a
    /// crashed tab): so after one OOM kill the session comes back to a page that stays small.
    static let hogPage = "data:text/html,<title>hog</title><script>if (performance.getEntriesByType('navigation')[0].type !== 'reload') "
        + "{ const keep = []; setInterval(() => { const a = new Uint8Array(16 << 20); a.fill(1); keep.push(a); document.title = 'hog ' + keep.length; }, 20); }</script>"

    @Test func aPageThatAllocatesWithoutBoundIsKilledInsideItsSessionOnly() async throws {
        try await SessionFixture.with("kioskd-cgroup", cgroups: .system) { f in
            _ = try requireCgroups(try #require(f.manager.host.cgroups))
            _ = try await f.manager.start()
            let hog = try await f.manager.create(SessionSettings(id: "hog", url: testPage("hog-start"), width: 800, height: 600,
                                                                 limits: SessionLimits(memoryMax: Self.limit)))
            let calm = try await f.manager.create(SessionSettings(id: "calm", url: testPage("calm"), width: 800, height: 600))
            let idle = try #require(await hog.memory())
            print("idle session before the hog: \(idle.current >> 20) MiB of \(Self.limit >> 20) MiB")
            let ownOOMKills = ownGroupOOMKills()

            // The other session answers CDP all along: checked every 100 ms until the test ends.
            let calmPort = try #require(Int((await calm.info()).cdpURL.split(separator: ":").last ?? ""))
            let probes = Recorder<Bool>()
            let watcher = Task {
                while !Task.isCancelled {
                    probes.record(await browserDebuggerURL(cdpPort: calmPort) != nil)
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            defer { watcher.cancel() }

            let mark = f.recorder.count
            let started = ContinuousClock.now
            try await withPage(await hog.info()) { cdp, page in
                try await cdp.send("Page.navigate", ["url": .string(Self.hogPage)], session: page)
            }
            let event = try await f.recorder.wait(for: "the memory limit event", after: mark, timeout: .seconds(60)) { e in
                if e.session == "hog", case .memoryLimit = e.event { true } else { false }
            }
            let seenAfter = ContinuousClock.now - started
            guard case .memoryLimit(let kills, let usage, let limit) = event.event else { throw TestFailure("unreachable") }
            #expect(kills >= 1 && limit == Self.limit && usage <= Self.limit, "\(event.event)")
            #expect(event.event.taskEvent?.type == "memory_limit" && event.event.taskEvent?.fields["limit"] == "\(Self.limit)")

            // It comes back: the watch reloads the crashed tab (or, had the browser itself been
            // the victim, the supervisor restarts it), and CDP answers again.
            try await f.recorder.wait(for: "the session's recovery", after: mark, timeout: .seconds(60)) { e in
                guard e.session == "hog" else { return false }
                if case .browser(.tabReloaded) = e.event { return true }
                if case .supervision(let s) = e.event, case .ready("chromium", _) = s.kind { return true }
                return false
            }
            let title = try await withPage(await hog.info()) { cdp, page in try await evaluate(cdp, page, loadedTitle) }
            let recoveredAfter = ContinuousClock.now - started
            #expect(["hog", "hog-start"].contains(title), "the session shows a page again: \(title)")
            let reading = try #require(await hog.memory())
            #expect(reading.oomKills >= 1 && reading.peak <= Self.limit, "\(reading)")
            print("hog: memory_limit event \(seenAfter) after the navigation, CDP back after \(recoveredAfter); \(reading)")

            // Nothing outside the group was touched.
            let states = (await hog.info().state, await calm.info().state)
            #expect(states == (.ready, .ready))
            #expect(try #require(await calm.memory()).oomKills == 0)
            #expect(ownGroupOOMKills() == ownOOMKills, "the test process's own memory group saw no OOM kill")
            // A loaded machine probes slowly: three more answers after the recovery, however long they take.
            for _ in 0..<3 { try await probes.wait(for: "a probe of the calm session", after: probes.count, timeout: .seconds(30)) { _ in true } }
            watcher.cancel()
            _ = await watcher.value
            #expect(probes.count >= 3 && !probes.items.contains(false), "the calm session answered every probe: \(probes.items.filter { !$0 }.count) of \(probes.count) failed")
            #expect(try await withPage(await calm.info()) { cdp, page in try await evaluate(cdp, page, loadedTitle) } == "calm")
        }
    }

    /// oom_kill of the test process's own v1 memory group (0 on a pure v2 host, where it has none).
    func ownGroupOOMKills() -> UInt64 {
        guard let own = (try? readText("/proc/self/cgroup"))?.split(separator: "\n").first(where: { $0.contains(":memory:") })?.split(separator: ":").last,
              let text = try? readText("/sys/fs/cgroup/memory" + (own == "/" ? "" : own) + "/memory.oom_control") else { return 0 }
        return keyedValue(text, "oom_kill") ?? 0
    }
}
