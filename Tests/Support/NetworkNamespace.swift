import Essentials
import Supervision
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A network namespace joined to the root one by a veth pair on a private /30
/// (10.77.N.0/30: `outsideAddress`, .1, in the root namespace; `insideAddress`, .2, inside), so
/// two programs talk across a real link between two addresses and a test can take that link
/// down. Made with iproute2's `ip`, as root. Programs run inside with `nsenter --net` (see
/// `command`), which changes only the network namespace: `ip netns exec` also mounts a new
/// /sys, which hides /sys/fs/cgroup from kioskd.
///
/// Its name carries the test process's pid (`kioskd-t<pid>-<n>`, links `kt<pid>n<n>i|o`), so
/// what a killed run could not remove is found and removed by the next one (`removeLeftovers`).
/// Use `withNetworkNamespace`: it removes the namespace however the body ends.
public final class NetworkNamespace: Sendable {
    public let name: String
    /// The veth end inside the namespace, holding `insideAddress`.
    public let insideInterface: String
    /// The veth end in the root namespace, holding `outsideAddress`.
    public let outsideInterface: String
    public let insideAddress: String
    public let outsideAddress: String

    static let namePrefix = "kioskd-t"
    private static let made = Atomic<Int>(0)

    private init(name: String, inside: String, outside: String, subnet: Int) {
        self.name = name
        insideInterface = inside
        outsideInterface = outside
        insideAddress = "10.77.\(subnet).2"
        outsideAddress = "10.77.\(subnet).1"
    }

    /// The namespace's file, as `nsenter --net=` and `ip netns` know it.
    public var path: String { "/run/netns/" + name }

    /// A new namespace with its link up both ends (and its own loopback up: a session's CDP
    /// port is on 127.0.0.1 in there).
    public static func create() async throws -> NetworkNamespace {
        try await blocking { try makeNamespace() }
    }

    private static func makeNamespace() throws -> NetworkNamespace {
        guard geteuid() == 0 else { throw TestFailure("network namespaces need root (ip netns add): run the tests as root") }
        _ = try ipProgram()
        _ = try nsenterProgram()
        removeLeftovers()
        let n = made.add(1, ordering: .relaxed).newValue
        let pid = getpid()
        let namespace = NetworkNamespace(name: "\(namePrefix)\(pid)-\(n)", inside: "kt\(pid)n\(n)i", outside: "kt\(pid)n\(n)o",
                                         subnet: try freeSubnet(from: Int(pid) &+ n * 37))
        do {
            try ip(["netns", "add", namespace.name])
            try ip(["link", "add", namespace.outsideInterface, "type", "veth", "peer", "name", namespace.insideInterface, "netns", namespace.name])
            try ip(["addr", "add", namespace.outsideAddress + "/30", "dev", namespace.outsideInterface])
            try ip(["link", "set", "dev", namespace.outsideInterface, "up"])
            try ip(["-n", namespace.name, "addr", "add", namespace.insideAddress + "/30", "dev", namespace.insideInterface])
            try ip(["-n", namespace.name, "link", "set", "dev", "lo", "up"])
            try ip(["-n", namespace.name, "link", "set", "dev", namespace.insideInterface, "up"])
            try namespace.waitOperstate(up: true)
        } catch {
            namespace.remove()
            throw error
        }
        return namespace
    }

    /// Brings the inside end up or down, and waits until the outside end sees it (its
    /// operational state: a veth is up only while its peer is): down is a partition, for the
    /// namespace's programs (their routes out are gone) and for everyone reaching in.
    public func setLink(up: Bool) async throws {
        try await blocking { [self] in
            try Self.ip(["-n", name, "link", "set", "dev", insideInterface, up ? "up" : "down"])
            try waitOperstate(up: up)
        }
    }

    private func waitOperstate(up: Bool) throws {
        let file = "/sys/class/net/\(outsideInterface)/operstate"
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let state = ((try? readText(file)) ?? "?").split(whereSeparator: \.isWhitespace).first.map(String.init) ?? "?"
            if (state == "up") == up { return }
            guard ContinuousClock.now < deadline else { throw TestFailure("\(outsideInterface) still \(state) after 10 s (expected \(up ? "up" : "down"))") }
            usleep(10_000)
        }
    }

    /// Bytes the outside end received (sent from inside the namespace) and sent (into it), from
    /// the kernel's counters.
    public var outsideBytes: (received: Int, sent: Int) {
        let dir = "/sys/class/net/\(outsideInterface)/statistics/"
        func counter(_ name: String) -> Int { ((try? readText(dir + name)) ?? "").split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? -1 }
        return (counter("rx_bytes"), counter("tx_bytes"))
    }

    /// `executable arguments…` run inside the namespace: the program and arguments to spawn.
    /// nsenter execs it in place, so the spawned pid is the program's.
    public func command(_ executable: String, _ arguments: [String]) throws -> (executable: String, arguments: [String]) {
        (try Self.nsenterProgram(), ["--net=" + path, "--", executable] + arguments)
    }

    /// Kills what still runs inside (a test's daemons are stopped before), deletes the veth pair
    /// and the namespace, and checks they are gone. Never throws: it runs on every way out.
    public func remove() {
        Self.removeNamespace(name, outside: outsideInterface)
    }

    private static func removeNamespace(_ name: String, outside: String?) {
        if access("/run/netns/" + name, F_OK) == 0 {
            let pids = ((try? ip(["netns", "pids", name])) ?? "").split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
            for pid in pids where pid != getpid() { kill(pid, SIGKILL) }
        }
        // Deleting one end deletes the pair; the namespace's deletion does too, but later (the
        // kernel frees a namespace in the background), and never while a process holds it.
        if let outside, access("/sys/class/net/" + outside, F_OK) == 0 { _ = try? ip(["link", "del", "dev", outside]) }
        if access("/run/netns/" + name, F_OK) == 0 { _ = try? ip(["netns", "del", name]) }
    }

    /// Namespaces and links of test processes that are gone (killed before they could remove them).
    public static func removeLeftovers() {
        for entry in directoryEntries("/run/netns") where entry.hasPrefix(namePrefix) {
            let pid = entry.dropFirst(namePrefix.count).split(separator: "-").first.flatMap { Int32($0) }
            if let pid, pid == getpid() || isAlive(pid) { continue }
            removeNamespace(entry, outside: nil)
        }
        for entry in directoryEntries("/sys/class/net") where entry.hasPrefix("kt") && entry.hasSuffix("o") {
            guard let pid = entry.dropFirst(2).split(separator: "n").first.flatMap({ Int32($0) }), pid != getpid(), !isAlive(pid) else { continue }
            _ = try? ip(["link", "del", "dev", entry])
        }
    }

    /// A 10.77.N.0/24 no address of the root namespace is in (another test process's link).
    private static func freeSubnet(from seed: Int) throws -> Int {
        let used = try ip(["-o", "-4", "addr", "show"])
        for i in 0..<250 {
            let subnet = (abs(seed) + i) % 250 + 1
            if !used.contains(" 10.77.\(subnet).") { return subnet }
        }
        throw TestFailure("no free 10.77.N.0/24 for a veth link: \(used)")
    }

    static func ipProgram() throws -> String {
        for path in ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"] where access(path, X_OK) == 0 { return path }
        throw TestFailure("ip is missing (/usr/sbin/ip): install the Debian package 'iproute2' (scripts/setup.sh does)")
    }

    static func nsenterProgram() throws -> String {
        try systemProgram("/usr/bin/nsenter", package: "util-linux")
    }

    /// Runs `ip arguments…`; what it printed, or a failure with its output.
    @discardableResult
    static func ip(_ arguments: [String]) throws -> String {
        let program = try ipProgram()
        let (status, output) = try runCapturing(program, arguments)
        guard status == 0 else { throw TestFailure("ip \(arguments.joined(separator: " ")) failed with status \(status): \(output)") }
        return output
    }
}

/// A fresh network namespace for `body`, removed however `body` ends.
public func withNetworkNamespace<T>(_ body: (NetworkNamespace) async throws -> T) async throws -> T {
    let namespace = try await NetworkNamespace.create()
    do {
        let result = try await body(namespace)
        namespace.remove()
        return result
    } catch {
        namespace.remove()
        throw error
    }
}

/// Runs a short program to its end (blocking): its exit status and what it wrote to stdout and stderr.
func runCapturing(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let (pid, reader) = try spawnReadingOutput(path, arguments, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"], errors: true)
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(reader, &chunk, chunk.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output += chunk[0..<n]
    }
    close(reader)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f), String(decoding: output, as: UTF8.self))
}
