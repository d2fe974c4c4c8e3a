// Abuse of the public listener: slow headers, thousands of idle connections, one address over
// its limit, oversized request lines and headers, garbage, a burst of upgrades with forged
// tokens, a slow reader, stalled TLS handshakes. Each runs against the real daemon (production
// limits: the unit's LimitNOFILE=65536, or the host's hard limit, and the default timeouts)
// while /health is probed from another address (127.0.0.2) and a real viewer reads framebuffer
// updates through the bridge; then against Debian's websockify (its token plugin, on the same
// x11vnc) where the attack applies. websockify has no /health: its liveness is a WebSocket
// upgrade's latency. Every attack is bounded in count and time, on loopback (127.x source
// addresses stand for many peers).
//
// `--smoke` is the check scripts/test.sh runs: small counts, 1 s header and 2 s auth deadlines,
// and exit 1 when kioskd does not answer an attack as designed, a probe gets no answer or the
// viewer's frames stop. Latency is reported, never judged.
import Control
import Dispatch
import Essentials
import KioskdTestSupport
import Supervision
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Connections from many addresses

/// A blocking TCP connection to 127.0.0.1:`port` from `source` (every 127.x address is this
/// host; to the listener each is another peer) with 5 s send and receive timeouts (a connect
/// waiting in a full backlog gives up then), and `receiveBuffer` if given (before the connect:
/// the window is agreed then); nil when it cannot connect.
func dial(from source: String, port: Int, receiveBuffer: Int32? = nil) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    // IP_BIND_ADDRESS_NO_PORT (linux/in.h, not in Glibc's module): the port is picked at
    // connect, per destination, as for an unbound socket; a bind to port 0 would reserve one
    // for every destination and run out sooner.
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_IP), 24, &one, socklen_t(MemoryLayout<Int32>.size))
    if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
    var local = sockaddr_in()
    local.sin_family = sa_family_t(AF_INET)
    local.sin_addr.s_addr = inet_addr(source)
    let bound = withUnsafePointer(to: &local) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, withLoopbackAddress(port: port, { connect(fd, $0, $1) }) == 0 else {
        close(fd)
        return nil
    }
    return fd
}

/// `count` addresses 127.0.`net`.1… for one attack (a range of its own: the listener counts
/// connections per address until they are closed).
func sources(_ net: Int, _ count: Int) -> [String] { (1...count).map { "127.0.\(net).\($0)" } }

/// What one attacking connection got, in seconds from its connect.
struct Outcome: Sendable {
    /// The answer's HTTP status; nil: no answer, or not HTTP.
    var status: Int?
    var answered: Double?
    /// When the server closed it (end of stream or reset); nil: still open when the attack ended.
    var closed: Double?
    var connected = true
    /// What happened, when the status and times cannot say it.
    var kind: String?
}

func httpStatus<C: Collection<UInt8>>(_ bytes: C) -> Int? {
    let head = Array(bytes.prefix(12))
    guard head.count == 12, head.starts(with: Array("HTTP/1.".utf8)) else { return nil }
    return Int(String(decoding: head[9..<12], as: UTF8.self))
}

/// `count` connections from `sources` in turn, each sent `first(i)` at once and, with `drip`,
/// one more byte every `drip` seconds until it is answered; read by this one thread (poll)
/// until the server has closed every one or the last one opened is `window` seconds old (none
/// are opened after `window`: a full backlog makes connects slow). With `unread`, nothing is
/// read (a server's close would be seen only after what it sent before): at the end a
/// connection counts as closed when the server no longer holds its socket. Every connection is
/// closed on return.
func herd(port: Int, sources: [String], count: Int, first: (Int) -> [UInt8], drip: Double? = nil, window: Double,
          receiveBuffer: Int32? = nil, unread: Bool = false) -> [Outcome] {
    let start = monotonic()
    var outcomes = [Outcome](repeating: Outcome(), count: count)
    var opened = [Double](repeating: 0, count: count)
    var heads = [[UInt8]](repeating: [], count: count)
    var polls = [pollfd](repeating: pollfd(fd: -1, events: Int16(unread ? 0 : POLLIN), revents: 0), count: count)
    var open = 0
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 1)
    defer { scratch.deallocate() }
    func pump(_ timeout: Int32) {
        guard poll(&polls, nfds_t(polls.count), timeout) > 0 else { return }
        let now = monotonic()
        for i in polls.indices where polls[i].fd >= 0 && polls[i].revents != 0 {
            let n = recv(polls[i].fd, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
            if n > 0 {
                if outcomes[i].answered == nil { outcomes[i].answered = now - opened[i] }
                if heads[i].count < 12 { heads[i] += UnsafeRawBufferPointer(rebasing: scratch[0..<min(n, 12 - heads[i].count)]) }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            outcomes[i].closed = now - opened[i]
            close(polls[i].fd)
            polls[i].fd = -1
            open -= 1
        }
    }
    for i in 0..<count {
        guard monotonic() < start + window, let fd = dial(from: sources[i % sources.count], port: port, receiveBuffer: receiveBuffer) else {
            outcomes[i].connected = false
            continue
        }
        opened[i] = monotonic()
        sendAll(fd, first(i))
        polls[i].fd = fd
        open += 1
        // Answers to the first ones are timed while the rest connect.
        if i % 64 == 63 { pump(0) }
    }
    let end = (opened.max() ?? start) + window
    var nextDrip = drip.map { monotonic() + $0 }
    while open > 0, monotonic() < end {
        if let due = nextDrip, let drip, monotonic() >= due {
            for i in polls.indices where polls[i].fd >= 0 && outcomes[i].answered == nil {
                _ = send(polls[i].fd, "a", 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            nextDrip = due + drip
        }
        pump(Int32(max(0, (min(end, nextDrip ?? end) - monotonic()) * 1000).rounded(.up)))
    }
    if unread {
        let held = serverSockets(port: port)
        for i in polls.indices where polls[i].fd >= 0 && !held.contains(localEndpoint(polls[i].fd)) { outcomes[i].closed = monotonic() - opened[i] }
    }
    for p in polls where p.fd >= 0 { close(p.fd) }
    for i in outcomes.indices { outcomes[i].status = httpStatus(heads[i]) }
    return outcomes
}

/// An address or port as /proc/net/tcp writes it: hex, the address as it lies in memory.
func procHex(_ value: UInt32, digits: Int) -> String {
    let text = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}

/// This end of a connection, as /proc/net/tcp writes it ("0100007F:1F90").
func localEndpoint(_ fd: Int32) -> String {
    var addr = sockaddr_in(), len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return procHex(addr.sin_addr.s_addr, digits: 8) + ":" + procHex(UInt32(UInt16(bigEndian: addr.sin_port)), digits: 4)
}

/// The peers of the sockets a process still holds on 127.0.0.1:`port`. A socket whose
/// descriptor was closed while data is still queued for the peer stays in the table,
/// orphaned (inode 0).
func serverSockets(port: Int) -> Set<String> {
    guard let table = try? readText("/proc/net/tcp") else { return [] }
    let local = "0100007F:" + procHex(UInt32(port), digits: 4)
    var held = Set<String>()
    for line in table.split(separator: "\n").dropFirst() {
        let f = line.split(separator: " ")
        if f.count > 9, f[1] == local, f[9] != "0" { held.insert(String(f[2])) }
    }
    return held
}

/// `herd`s of `batch` connections one after the other for `seconds`: a sustained attack of
/// requests answered at once.
func batches(port: Int, sources: [String], batch: Int, seconds: Double, first: (Int) -> [UInt8]) -> [Outcome] {
    let end = monotonic() + seconds
    var all: [Outcome] = []
    while monotonic() < end {
        let done = all.count
        all += herd(port: port, sources: sources, count: batch, first: { first(done + $0) }, window: 5)
    }
    return all
}

/// The request on a new connection, again and again on `clients` threads (each from its own
/// addresses) for `seconds`: every answer, read until the server closes (at most 5 s).
func burst(port: Int, clients: Int, seconds: Double, request: [UInt8]) -> [Outcome] {
    let results = Recorder<Outcome>()
    let group = DispatchGroup()
    let end = monotonic() + seconds
    for k in 0..<clients {
        let from = sources(10 + k, 8)
        group.enter()
        Thread.detach {
            defer { group.leave() }
            var n = 0
            while monotonic() < end {
                n += 1
                let t0 = monotonic()
                guard let fd = dial(from: from[n % from.count], port: port) else {
                    results.record(Outcome(connected: false))
                    continue
                }
                sendAll(fd, request)
                let answer = readAnswer(fd)
                close(fd)
                let took = monotonic() - t0
                results.record(Outcome(status: answer.status == 0 ? nil : answer.status, answered: answer.text.isEmpty ? nil : took,
                                       closed: answer.closed ? took : nil))
            }
        }
    }
    group.wait()
    return results.items
}

func upgradeRequest(_ path: String) -> [UInt8] {
    Array(("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n").utf8)
}

/// An answer's head (up to the blank line), or nil when the connection ended or timed out first.
func readHead(_ fd: Int32) -> [UInt8]? {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while bytes.firstRange(of: [13, 10, 13, 10]) == nil {
        let n = recv(fd, &chunk, chunk.count, 0)
        guard n > 0 else { return nil }
        bytes += chunk[0..<n]
    }
    return bytes
}

/// CPU seconds `pid` has used (user and system); with `children`, also its children's, live
/// (by parent pid) and reaped (websockify forks a process per connection).
func cpuSeconds(_ pid: Int32, children: Bool = false) -> Double {
    func fields(_ p: Int32) -> [Substring] {
        guard let stat = try? readText("/proc/\(p)/stat"), let close = stat.lastIndex(of: ")") else { return [] }
        return stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
    }
    // After the name: state is field 3, so utime (14), stime, cutime, cstime are at 11…14.
    func ticks(_ f: [Substring], _ range: ClosedRange<Int>) -> Int { f.count > range.upperBound ? range.map { Int(f[$0]) ?? 0 }.reduce(0, +) : 0 }
    var total = ticks(fields(pid), children ? 11...14 : 11...12)
    if children {
        for p in allPIDs() where p != pid {
            let f = fields(p)
            if f.count > 12, Int32(f[1]) == pid { total += ticks(f, 11...12) }
        }
    }
    return Double(total) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

// MARK: - Probes

/// Liveness probes one after the other, every `interval`, on their own thread until stopped:
/// each one's latency, or nil when it got no expected answer (within 5 s).
final class Prober: Sendable {
    private let latencies = Recorder<Double?>()
    private let stopping = Atomic<Bool>(false)
    private let finished = OnceValue<Void>()

    init(every interval: Double, _ probe: @escaping @Sendable () -> Double?) {
        Thread.detach { [self] in
            var next = monotonic()
            while !stopping.load(ordering: .relaxed) {
                latencies.record(probe())
                next += interval
                let pause = next - monotonic()
                if pause > 0 { usleep(UInt32(pause * 1_000_000)) }
            }
            finished.set(())
        }
    }

    func stop() async -> [Double?] {
        stopping.store(true, ordering: .relaxed)
        _ = try? await finished.wait()
        return latencies.items
    }
}

/// GET /health from 127.0.0.2 on a new connection, as a load balancer checks: connect → the
/// whole 200 answer.
func healthProbe(port: Int) -> @Sendable () -> Double? {
    {
        let t0 = monotonic()
        guard let fd = dial(from: "127.0.0.2", port: port) else { return nil }
        defer { close(fd) }
        sendAll(fd, Array("GET /health HTTP/1.1\r\nHost: kioskd\r\nConnection: close\r\n\r\n".utf8))
        return readAnswer(fd, untilComplete: true).status == 200 ? monotonic() - t0 : nil
    }
}

/// HTTPS /health from 127.0.0.2 through curl: its own time_total (the TLS handshake included,
/// the process start not; the bench has no TLS library of its own).
func httpsHealthProbe(port: Int) -> @Sendable () -> Double? {
    {
        guard let curl = try? spawnReadingOutput("/usr/bin/curl", ["-sk", "--interface", "127.0.0.2", "--max-time", "5", "-o", "/dev/null",
                                                                   "-w", "%{http_code} %{time_total}", "https://127.0.0.1:\(port)/health"],
                                                 environment: ["PATH": "/usr/bin:/bin"]) else { return nil }
        var out: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 256)
        while true {
            let n = read(curl.reader, &chunk, chunk.count)
            guard n > 0 else { break }
            out += chunk[0..<n]
        }
        close(curl.reader)
        var status: Int32 = 0
        while waitpid(curl.pid, &status, 0) < 0 && errno == EINTR {}
        let fields = String(decoding: out, as: UTF8.self).split(separator: " ")
        return fields.count == 2 && fields[0] == "200" ? Double(fields[1]) : nil
    }
}

/// websockify has no /health: a WebSocket upgrade from 127.0.0.2 with a known token, connect →
/// its 101 (what a viewer's connect waits for before any RFB byte; websockify reaches the
/// token's target after it, so the probes' token leads elsewhere than x11vnc).
func upgradeProbe(port: Int, path: String) -> @Sendable () -> Double? {
    {
        let t0 = monotonic()
        guard let fd = dial(from: "127.0.0.2", port: port) else { return nil }
        defer { close(fd) }
        sendAll(fd, upgradeRequest(path))
        return readHead(fd).flatMap(httpStatus) == 101 ? monotonic() - t0 : nil
    }
}

// MARK: - A real viewer

/// A viewer's transport: a TCP socket, or `openssl s_client`'s pipes for WSS.
struct Wire: Sendable {
    let input: Int32
    let output: Int32
    let helper: pid_t?

    static func tcp(port: Int) throws -> Wire {
        guard let fd = dial(from: "127.0.0.1", port: port) else { throw TestFailure("the viewer cannot connect to \(port)") }
        return Wire(input: fd, output: fd, helper: nil)
    }

    static func tls(port: Int) throws -> Wire {
        let toHelper = try cloexecPipe(), fromHelper = try cloexecPipe()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toHelper.read, 0)
        posix_spawn_file_actions_adddup2(&actions, fromHelper.write, 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let words: [String] = ["/usr/bin/openssl", "s_client", "-quiet", "-connect", "127.0.0.1:\(port)"]
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        let envp = [strdup("PATH=/usr/bin:/bin"), nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = spawnWithDefaultSignals(&pid, "/usr/bin/openssl", &actions, argv, envp)
        Glibc.close(toHelper.read)
        Glibc.close(fromHelper.write)
        guard rc == 0 else { throw TestFailure("cannot run openssl s_client: errno \(rc)") }
        return Wire(input: fromHelper.read, output: toHelper.write, helper: pid)
    }

    func close() {
        Glibc.close(input)
        if output != input { Glibc.close(output) }
        if let helper {
            kill(helper, SIGTERM)
            var status: Int32 = 0
            while waitpid(helper, &status, 0) < 0 && errno == EINTR {}
        }
    }
}

/// The viewer's WebSocket: one upgrade, masked frames out, data frames in as one byte stream
/// (pings answered: the bridge closes a viewer that leaves two unanswered).
struct ViewerSocket {
    struct Stopped: Error {}

    let wire: Wire
    let stopping: () -> Bool
    private var raw: [UInt8] = []
    private var rawAt = 0
    private var data: [UInt8] = []
    private var dataAt = 0
    private var chunk = [UInt8](repeating: 0, count: 1 << 18)

    init(wire: Wire, stopping: @escaping () -> Bool) {
        self.wire = wire
        self.stopping = stopping
    }

    mutating func upgrade(_ path: String) throws {
        write(upgradeRequest(path))
        while true {
            if let end = raw.firstRange(of: [13, 10, 13, 10]) {
                guard httpStatus(raw) == 101 else { throw TestFailure("the viewer's upgrade: \(String(decoding: raw[..<end.lowerBound], as: UTF8.self))") }
                rawAt = end.upperBound
                return
            }
            try fill()
        }
    }

    func send(_ payload: [UInt8]) { sendFrame(0x2, payload) }

    private func sendFrame(_ opcode: UInt8, _ payload: [UInt8]) {
        let mask: [UInt8] = [0x5B, 0x13, 0xC7, 0x2E]
        var frame: [UInt8] = [0x80 | opcode]
        if payload.count < 126 { frame.append(0x80 | UInt8(payload.count)) } else { frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] }
        frame += mask
        for (i, byte) in payload.enumerated() { frame.append(byte ^ mask[i & 3]) }
        write(frame)
    }

    private func write(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.write(wire.output, $0.baseAddress, $0.count) }
            guard n > 0 else { return }   // the stream ended: the next read says so
            sent += n
        }
    }

    /// More bytes from the wire; throws at its end, or `Stopped`.
    private mutating func fill() throws {
        if rawAt > 0 {
            raw.removeFirst(rawAt)
            rawAt = 0
        }
        var p = pollfd(fd: wire.input, events: Int16(POLLIN), revents: 0)
        while poll(&p, 1, 200) == 0 { if stopping() { throw Stopped() } }
        if stopping() { throw Stopped() }
        let n = chunk.withUnsafeMutableBytes { read(wire.input, $0.baseAddress, $0.count) }
        guard n > 0 else { throw TestFailure("the viewer's stream ended") }
        raw += chunk[0..<n]
    }

    /// The next data frame's payload appended to `data`.
    private mutating func nextFrame() throws {
        while true {
            let available = raw.count - rawAt
            guard available >= 2 else { try fill(); continue }
            let opcode = raw[rawAt] & 0x0F, short = Int(raw[rawAt + 1] & 0x7F)
            guard raw[rawAt + 1] & 0x80 == 0 else { throw TestFailure("a masked frame from the server") }
            let extra = short == 126 ? 2 : short == 127 ? 8 : 0
            guard available >= 2 + extra else { try fill(); continue }
            let length = extra == 0 ? short : raw[(rawAt + 2)..<(rawAt + 2 + extra)].reduce(0) { $0 << 8 | Int($1) }
            guard available >= 2 + extra + length else { try fill(); continue }
            let payload = raw[(rawAt + 2 + extra)..<(rawAt + 2 + extra + length)]
            rawAt += 2 + extra + length
            switch opcode {
            case 0x0, 0x2:
                data.removeFirst(dataAt)
                dataAt = 0
                data += payload
                return
            case 0x9: sendFrame(0xA, Array(payload))
            case 0x8: throw TestFailure("the server closed the viewer")
            default: continue
            }
        }
    }

    mutating func take(_ n: Int) throws -> [UInt8] {
        while data.count - dataAt < n { try nextFrame() }
        defer { dataAt += n }
        return Array(data[dataAt..<(dataAt + n)])
    }

    mutating func skip(_ n: Int) throws {
        var left = n
        while data.count - dataAt < left {
            left -= data.count - dataAt
            dataAt = data.count
            try nextFrame()
        }
        dataAt += left
    }
}

/// A real viewer on its own thread: RFB 3.8 as noVNC speaks it, raw encoding only, the next
/// incremental update asked for as soon as one has arrived. Every update's time and size are
/// recorded until it is stopped or its stream ends.
final class Viewer: Sendable {
    struct Update: Sendable {
        let time: Double
        let bytes: Int
    }

    private let updates = Recorder<Update>()
    private let stopping = Atomic<Bool>(false)
    /// Why it ended: "stopped", or what broke it.
    private let ending = OnceValue<String>()
    private let wire: Wire

    init(_ wire: Wire, path: String) {
        self.wire = wire
        Thread.detach { [self] in
            var socket = ViewerSocket(wire: wire) { self.stopping.load(ordering: .relaxed) }
            do {
                try watch(&socket, path: path)
            } catch is ViewerSocket.Stopped {
                ending.set("stopped")
            } catch {
                ending.set("\(error)")
            }
        }
    }

    private func watch(_ socket: inout ViewerSocket, path: String) throws {
        func u16(_ b: [UInt8], _ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }
        func u32(_ b: [UInt8], _ i: Int) -> Int { u16(b, i) << 16 | u16(b, i + 2) }
        try socket.upgrade(path)
        _ = try socket.take(12)
        socket.send(Array("RFB 003.008\n".utf8))
        guard try socket.take(Int(try socket.take(1)[0])).contains(1) else { throw TestFailure("no None security type") }
        socket.send([1])
        guard try socket.take(4) == [0, 0, 0, 0] else { throw TestFailure("the security handshake failed") }
        socket.send([1])
        let serverInit = try socket.take(24)
        let (width, height, pixel) = (u16(serverInit, 0), u16(serverInit, 2), Int(serverInit[4]) / 8)
        _ = try socket.take(u32(serverInit, 20))
        socket.send([2, 0, 0, 1, 0, 0, 0, 0])
        let size = [UInt8(width >> 8), UInt8(width & 0xFF), UInt8(height >> 8), UInt8(height & 0xFF)]
        socket.send([3, 0, 0, 0, 0, 0] + size)
        while true {
            switch try socket.take(1)[0] {
            case 0:
                var bytes = 0
                for _ in 0..<u16(try socket.take(3), 1) {
                    let rect = try socket.take(12)
                    guard u32(rect, 8) == 0 else { throw TestFailure("an update in encoding \(u32(rect, 8)), not raw") }
                    let n = u16(rect, 4) * u16(rect, 6) * pixel
                    try socket.skip(n)
                    bytes += n
                }
                updates.record(Update(time: monotonic(), bytes: bytes))
                socket.send([3, 1, 0, 0, 0, 0] + size)
            case 1: try socket.skip(u16(try socket.take(5), 3) * 6)
            case 2: break
            case 3: try socket.skip(u32(try socket.take(7), 3))
            case let type: throw TestFailure("an unknown server message \(type)")
            }
        }
    }

    /// Updates per second and KiB per second between two instants.
    func rate(from start: Double, to end: Double) -> (updates: Double, kib: Double) {
        let within = updates.items.filter { $0.time >= start && $0.time <= end }
        let seconds = max(end - start, 0.001)
        return (Double(within.count) / seconds, Double(within.map(\.bytes).reduce(0, +)) / 1024 / seconds)
    }

    /// Why it ended, while it has.
    var ended: String? { ending.current }

    /// Waits for its first `count` updates: the attacks meet a viewer past its first full frame
    /// and drawing the page.
    func warmUp(_ count: Int = 20) async throws {
        try await updates.wait(for: "the viewer's first \(count) updates", after: count - 1, timeout: .seconds(30)) { _ in true }
    }

    func stop() async {
        stopping.store(true, ordering: .relaxed)
        _ = try? await ending.wait()
        wire.close()
    }
}

// MARK: - Attacks

/// A server under attack: where it listens, its CPU use, its liveness probe and a viewer on it.
struct AbuseTarget: Sendable {
    let port: Int
    let cpu: @Sendable () -> Double
    let probe: @Sendable () -> Double?
    let viewer: Viewer
    /// An upgrade with a forged token, for this server.
    let forgedPath: String
}

struct Attack: Sendable {
    let name: String
    let amount: String
    /// How long it lasts (its probes are spread over it).
    let seconds: Double
    /// Runs against the target (blocking, bounded): what each connection got.
    let run: @Sendable (AbuseTarget) -> [Outcome]
    /// Whether kioskd answered as designed: nil, or what went wrong.
    let check: @Sendable ([Outcome]) -> String?
    /// Why it does not apply to websockify, when it does not.
    var notForWebsockify: String?
}

/// How one server took one attack.
struct Taken {
    var answer: String
    var connections: Int
    var cpuPercent: Double
    /// This process's: the attack's clients, the probes and the viewer.
    var attackerCPUPercent: Double
    var probes: [Double?]
    var updatesPerSecond: Double
    var kibPerSecond: Double
}

func measure(_ attack: Attack, on target: AbuseTarget, probes: Int) async throws -> (Taken, [Outcome]) {
    let prober = Prober(every: attack.seconds / Double(probes), target.probe)
    let (t0, c0, a0) = (monotonic(), target.cpu(), cpuSeconds(getpid()))
    let outcomes = try await blocking { attack.run(target) }
    let (t1, c1, a1) = (monotonic(), target.cpu(), cpuSeconds(getpid()))
    let latencies = await prober.stop()
    let rate = target.viewer.rate(from: t0, to: t1)
    return (Taken(answer: summarize(outcomes), connections: outcomes.count, cpuPercent: (c1 - c0) / (t1 - t0) * 100,
                  attackerCPUPercent: (a1 - a0) / (t1 - t0) * 100, probes: latencies,
                  updatesPerSecond: rate.updates, kibPerSecond: rate.kib), outcomes)
}

/// What the connections got, by kind, most first: "408 ×1000 at 10.0 s", "closed unanswered
/// ×500 at 3.0–3.1 s", "held ×1000" (open at the end), "no connect ×10".
func summarize(_ outcomes: [Outcome]) -> String {
    guard !outcomes.isEmpty else { return "–" }
    var groups: [String: [Double]] = [:]
    for o in outcomes {
        let key = o.kind ?? (!o.connected ? "no connect" : o.status.map { "\($0)" } ?? (o.closed != nil ? "closed unanswered" : "held"))
        groups[key, default: []].append(o.answered ?? o.closed ?? .nan)
    }
    func time(_ s: Double) -> String { s < 1 ? "\(Int((s * 1000).rounded())) ms" : String(Int((s * 10).rounded())).withDecimal(1) + " s" }
    return groups.sorted { $0.value.count > $1.value.count }.map { key, times in
        let known = times.filter { !$0.isNaN }
        guard !known.isEmpty else { return "\(key) ×\(times.count)" }
        let (low, high) = (time(percentile(known, 0.5)), time(known.max()!))
        return "\(key) ×\(times.count) at \(low == high ? low : low + "–" + high)"
    }.joined(separator: ", ")
}

func allAnswered(_ status: Int) -> @Sendable ([Outcome]) -> String? {
    { outcomes in outcomes.allSatisfy { $0.status == status } && !outcomes.isEmpty ? nil : "expected \(status) for every one" }
}

struct AbusePlan {
    let smoke: Bool
    /// public.header_timeout and auth_timeout: the defaults, or 1 s and 2 s for the check.
    var headerTimeout: Double { smoke ? 1 : 10 }
    var authTimeout: Double { smoke ? 2 : 60 }
    /// How long a connection held by the attacker is watched: past kioskd's header deadline
    /// and websockify's 3 s wait for a first byte.
    var hold: Double { max(headerTimeout, 3) + (smoke ? 1 : 3) }
    /// A sustained attack of requests answered at once.
    var sustained: Double { smoke ? 1 : 5 }
    var burstSeconds: Double { smoke ? 2 : 10 }
    var probes: Int { smoke ? 10 : 200 }
    var slowloris: Int { smoke ? 20 : 1000 }
    var idle: Int { smoke ? 50 : 5000 }
    var idleAddresses: Int { 10 }
    var overPeer: Int { smoke ? 5 : 50 }
    var batch: Int { smoke ? 10 : 100 }
    var tlsStalls: Int { smoke ? 20 : 1000 }
    var slowReaders: Int { smoke ? 10 : 100 }
    /// `public:` lines: production defaults, but for the check short deadlines and a small
    /// per-address limit, so it stays under a minute.
    var publicKeys: [String] { smoke ? ["header_timeout: 1s", "auth_timeout: 2s", "max_connections_per_ip: 20"] : [] }
}

/// The attacks on a plain listener; `perPeer`: kioskd's per-address limit.
func plainAttacks(_ plan: AbusePlan, perPeer: Int) -> [Attack] {
    let hold = plan.hold, sustained = plan.sustained, batch = plan.batch
    let slowHead = Array("GET /health HTTP/1.1\r\nHost: kioskd\r\nX-Slow: ".utf8)
    let longLine = Array("GET /api/v1/vnc/ws?task_id=abuse&token=\(String(repeating: "a", count: 20_000)) HTTP/1.1\r\nHost: kioskd\r\n\r\n".utf8)
    let bigHeader = Array("GET /health HTTP/1.1\r\nHost: kioskd\r\nX-Big: \(String(repeating: "b", count: 90_000))\r\n\r\n".utf8)
    let manyHeaders = Array(("GET /health HTTP/1.1\r\nHost: kioskd\r\n" + (0..<2000).map { "X-Many-\($0): \(String(repeating: "m", count: 40))\r\n" }.joined() + "\r\n").utf8)
    // A TLS ClientHello's first bytes, sent to the plain port, and an HTTP/2 preface.
    let clientHello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + (0..<32).map { UInt8($0 * 7 & 0xFF) }
    let http2 = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
    let slowloris = plan.slowloris, idle = plan.idle, addresses = plan.idleAddresses, over = plan.overPeer, readers = plan.slowReaders
    let bigFiles = Array(String(repeating: "GET /novnc/core/rfb.js HTTP/1.1\r\nHost: kioskd\r\n\r\n", count: 20).utf8)
    // Past the auth deadline and the time an answer then gets to be sent.
    let unread = plan.authTimeout + plan.headerTimeout + 1
    return [
        Attack(name: "none (baseline)", amount: "–", seconds: sustained, run: { _ in usleep(UInt32(sustained * 1_000_000)); return [] }, check: { _ in nil }),
        Attack(name: "slow headers (slowloris)", amount: "\(slowloris) conns, 1 byte/\(plan.smoke ? "0.25" : "1") s", seconds: hold,
               run: { t in herd(port: t.port, sources: sources(1, 4), count: slowloris, first: { _ in slowHead }, drip: plan.smoke ? 0.25 : 1, window: hold) },
               check: allAnswered(408)),
        Attack(name: "idle connections", amount: "\(idle) from \(addresses) addresses", seconds: hold,
               run: { t in herd(port: t.port, sources: sources(2, addresses), count: idle, first: { _ in [] }, window: hold) },
               check: allAnswered(408)),
        Attack(name: "one address over its limit", amount: "\(perPeer) + \(over) idle", seconds: hold,
               run: { t in herd(port: t.port, sources: ["127.0.3.1"], count: perPeer + over, first: { _ in [] }, window: hold) },
               check: { outcomes in
                   let refused = outcomes.filter { $0.status == 429 }.count, timedOut = outcomes.filter { $0.status == 408 }.count
                   return refused == over && timedOut == perPeer ? nil : "expected 429 ×\(over) and 408 ×\(perPeer)"
               }, notForWebsockify: "no per-address limit"),
        Attack(name: "request line 20 KB", amount: "\(batch) at a time, \(Int(sustained)) s", seconds: sustained,
               run: { t in batches(port: t.port, sources: sources(4, 4), batch: batch, seconds: sustained) { _ in longLine } },
               check: allAnswered(414)),
        Attack(name: "headers 90 KB / 2000 fields", amount: "\(batch) at a time, \(Int(sustained)) s", seconds: sustained,
               run: { t in batches(port: t.port, sources: sources(4, 4), batch: batch, seconds: sustained) { $0 % 2 == 0 ? bigHeader : manyHeaders } },
               check: allAnswered(431)),
        Attack(name: "garbage (random, TLS hello, HTTP/2)", amount: "\(batch) at a time, \(Int(sustained)) s", seconds: sustained,
               run: { t in
                   var random = SplitMix(seed: 17)
                   return batches(port: t.port, sources: sources(5, 4), batch: batch, seconds: sustained) { i in
                       switch i % 3 {
                       case 0: (0..<4096).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                       case 1: clientHello
                       default: http2
                       }
                   }
               },
               check: allAnswered(400)),
        Attack(name: "upgrades with forged tokens", amount: "4 clients, \(Int(plan.burstSeconds)) s", seconds: plan.burstSeconds,
               run: { t in burst(port: t.port, clients: 4, seconds: plan.burstSeconds, request: upgradeRequest(t.forgedPath)) },
               check: allAnswered(401)),
        // noVNC's largest file asked for 20 times at once (2 MB) by a peer that never reads (a
        // 1 KiB receive window): the answers never end, so only a deadline frees the connection.
        Attack(name: "slow reader (answer never read)", amount: "\(readers) conns", seconds: unread,
               run: { t in
                   herd(port: t.port, sources: sources(9, 4), count: readers, first: { _ in bigFiles }, window: unread, receiveBuffer: 1024, unread: true)
                       .map { o in Outcome(connected: o.connected, kind: o.closed != nil ? "closed with its answer unread, by \(Int(unread)) s" : "held") }
               },
               check: { outcomes in outcomes.allSatisfy { $0.kind?.hasPrefix("closed") == true } ? nil : "expected every one closed by the server" },
               notForWebsockify: "serves no files here"),
    ]
}

/// The attacks on a TLS listener.
func tlsAttacks(_ plan: AbusePlan) -> [Attack] {
    let hold = plan.hold, n = plan.tlsStalls
    // A ClientHello's record says 512 bytes; 60 come.
    let half: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + (0..<49).map { UInt8($0 * 13 & 0xFF) }
    let closedByTheServer: @Sendable ([Outcome]) -> String? = { outcomes in
        outcomes.allSatisfy { $0.connected && $0.closed != nil } ? nil : "expected every one closed by the server"
    }
    return [
        Attack(name: "none (TLS baseline)", amount: "–", seconds: plan.sustained, run: { _ in usleep(UInt32(plan.sustained * 1_000_000)); return [] },
               check: { _ in nil }),
        Attack(name: "TLS: ClientHello never sent", amount: "\(n) conns", seconds: hold,
               run: { t in herd(port: t.port, sources: sources(20, 4), count: n, first: { _ in [] }, window: hold) }, check: closedByTheServer),
        Attack(name: "TLS: ClientHello half sent", amount: "\(n) conns", seconds: hold,
               run: { t in herd(port: t.port, sources: sources(21, 4), count: n, first: { _ in half }, window: hold) }, check: closedByTheServer),
    ]
}

/// Seeded bytes for the garbage (SplitMix64): the same garbage every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - The servers

/// A page that changes 20 times a second (a 120×120 square), so the viewer has frames to get.
let animatedPage = "data:text/html,<body style='margin:0;background:rgb(20,120,200)'><div id=b style='width:120px;height:120px'></div>"
    + "<script>let i=0;setInterval(()=>{i=(i+5)%256;b.style.background='rgb('+i+',80,160)'},50)</script></body>"

/// A task running the animated page on `d`, a view token for it and its x11vnc socket.
func abuseTask(_ d: BenchDaemon, _ id: String) async throws -> (token: String, vncSocket: String) {
    let task = try await d.post("/v1/tasks?wait=true", #"{"task_id":"\#(id)","url":"\#(animatedPage)","width":800,"height":600,"timeout_s":900}"#)
    guard task["state"]?.string == "running", let display = task["session"]?["display"]?.string else { throw TestFailure("\(id) is not running: \(task)") }
    // The task's view of its session has no socket path; the sessions' does.
    guard let socket = (try await d.get("/v1/sessions").array ?? []).first(where: { $0["display"]?.string == display })?["vnc_socket"]?.string else {
        throw TestFailure("no session on \(display)")
    }
    guard let token = try await d.post("/v1/tasks/\(id)/viewer-token", #"{"role":"view","ttl_s":3600}"#)["token"]?.string else {
        throw TestFailure("no viewer token for \(id)")
    }
    return (token, socket)
}

/// A forged token's check alone, as the listener makes it for each forged upgrade: seconds each.
func tokenCheckSeconds(_ n: Int) async throws -> Double {
    let tokens = await ViewerTokens(secret: randomBytes(32))
    let token = forged(try await tokens.mint(task: "abuse", role: .view, ttl: 600).token)
    let start = monotonic()
    for _ in 0..<n { _ = try? await tokens.verify(token) }
    return (monotonic() - start) / Double(n)
}

/// The listener's limits from the daemon's log: (total, per address).
func listenerLimits(_ d: BenchDaemon) async throws -> (total: Int, perPeer: Int) {
    let line = try await d.process.log.wait(for: "the public listener's limits") { $0.contains("public listener connection limits") }
    let numbers = line[(line.range(of: "limits=")?.upperBound ?? line.startIndex)...].split { !$0.isNumber }.compactMap { Int($0) }
    guard numbers.count >= 2 else { throw TestFailure("no limits in \(line)") }
    return (numbers[0], numbers[1])
}

/// A forged token: a real one with a character of its signature changed (the whole token is
/// parsed and its HMAC computed before it is refused).
func forged(_ token: String) -> String {
    var chars = Array(token)
    let at = chars.count - 10
    chars[at] = chars[at] == "A" ? "B" : "A"
    return String(chars)
}

/// Debian's websockify with its token plugin (`good` for `vncSocket`; `probe` for a closed
/// port), quiet (it logs every connection), `--cert` for TLS beside plain (it sniffs the first
/// byte).
final class Websockify: Sendable {
    let pid: pid_t
    let port: Int
    let dir: String

    init(vncSocket: String, cert: (String, String)? = nil) throws {
        dir = try makeTempDir("kioskd-bench-websockify")
        try writeText(dir + "/tokens", "good: unix_socket:\(vncSocket)\nprobe: 127.0.0.1:9\n")
        port = try freePort()
        var args = ["--token-plugin", "TokenFile", "--token-source", dir + "/tokens"]
        if let (certFile, keyFile) = cert { args += ["--cert", certFile, "--key", keyFile] }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = (["/usr/bin/websockify"] + args + ["127.0.0.1:\(port)"]).map { strdup($0) } + [nil]
        let envp = [strdup("PATH=/usr/bin:/bin"), nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        guard spawnWithDefaultSignals(&pid, "/usr/bin/websockify", &actions, argv, envp) == 0 else { throw TestFailure("cannot start websockify") }
        self.pid = pid
        waitListening(port)
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<100 where waitpid(pid, &status, WNOHANG) == 0 { usleep(50_000) }
        if waitpid(pid, &status, WNOHANG) == 0 {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        }
        removeTree(dir)
    }
}

// MARK: - The run

struct AbuseRow {
    let attack: Attack
    var kioskd: Taken
    var websockify: Taken?
}

/// Runs `attacks` against kioskd and then websockify, one by one; what kioskd did not answer
/// as designed, and probes or viewers that failed, go to `problems`.
func runAttacks(_ attacks: [Attack], kioskd: AbuseTarget, websockify: AbuseTarget, plan: AbusePlan, problems: inout [String]) async throws -> [AbuseRow] {
    var rows: [AbuseRow] = []
    for attack in attacks {
        progress("abuse: \(attack.name)")
        let (taken, outcomes) = try await measure(attack, on: kioskd, probes: plan.probes)
        if let wrong = attack.check(outcomes) { problems.append("\(attack.name): \(wrong), got \(taken.answer)") }
        let failed = taken.probes.filter { $0 == nil }.count
        if failed > 0 { problems.append("\(attack.name): \(failed) of \(taken.probes.count) /health probes got no 200 within 5 s") }
        if taken.updatesPerSecond == 0 { problems.append("\(attack.name): the viewer got no frame (\(kioskd.viewer.ended ?? "still connected"))") }
        var row = AbuseRow(attack: attack, kioskd: taken)
        if attack.notForWebsockify == nil { row.websockify = try await measure(attack, on: websockify, probes: plan.probes).0 }
        rows.append(row)
    }
    return rows
}

func makeCertificate(_ dir: String) async throws -> (cert: String, key: String) {
    let (cert, key) = (dir + "/cert.pem", dir + "/key.pem")
    guard try await runToExit("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                                                   "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                                environment: ["PATH": "/usr/bin:/bin"]) == 0 else { throw TestFailure("openssl could not make a certificate") }
    return (cert, key)
}

/// The unit's LimitNOFILE (65536), or as near as this host's hard limit allows: the daemon's
/// connection limits follow it, and the attacker holds thousands of connections too.
func raiseOpenFiles(_ wanted: Int) -> Int {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_max = max(limit.rlim_max, rlim_t(wanted))
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 { getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
    limit.rlim_cur = min(limit.rlim_max, rlim_t(wanted))
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { fail("cannot raise RLIMIT_NOFILE: errno \(errno)") }
    return Int(limit.rlim_cur)
}

func printAbuse() async throws {
    let plan = AbusePlan(smoke: isSmokeRun)
    signal(SIGPIPE, SIG_IGN)
    let openFiles = raiseOpenFiles(65536)
    let started = monotonic()
    let dir = try makeTempDir("kioskd-bench-abuse")
    var problems: [String] = []
    var rows: [AbuseRow] = []
    var limits = (total: 0, perPeer: 0)
    let session = "sessions:\n  displays: 600-639\n  ports: 19000-19499\n"
    // Removed before the report: a failed check exits at once, past any defer.
    do {
        let (cert, key) = try await makeCertificate(dir)

        // Plain HTTP, as behind a load balancer.
        try await BenchDaemon.with(session, publicKeys: plan.publicKeys, openFiles: openFiles) { d in
            limits = try await listenerLimits(d)
            waitListening(d.port)
            let (token, vncSocket) = try await abuseTask(d, "abuse")
            let websockify = try Websockify(vncSocket: vncSocket)
            defer { websockify.stop() }
            let viewers = [Viewer(try Wire.tcp(port: d.port), path: "/api/v1/vnc/ws?task_id=abuse&token=\(token)"),
                           Viewer(try Wire.tcp(port: websockify.port), path: "/?token=good")]
            for viewer in viewers { try await viewer.warmUp() }
            let (daemonPID, websockifyPID) = (d.process.pid, websockify.pid)
            let kioskd = AbuseTarget(port: d.port, cpu: { cpuSeconds(daemonPID) }, probe: healthProbe(port: d.port), viewer: viewers[0],
                                     forgedPath: "/api/v1/vnc/ws?task_id=abuse&token=\(forged(token))")
            let peer = AbuseTarget(port: websockify.port, cpu: { cpuSeconds(websockifyPID, children: true) }, probe: upgradeProbe(port: websockify.port, path: "/?token=probe"),
                                   viewer: viewers[1], forgedPath: "/?token=\(forged(token))")
            do {
                rows += try await runAttacks(plainAttacks(plan, perPeer: limits.perPeer), kioskd: kioskd, websockify: peer, plan: plan, problems: &problems)
            } catch {
                for viewer in viewers { await viewer.stop() }
                throw error
            }
            if let ended = viewers[0].ended { problems.append("the viewer through kioskd ended: \(ended)") }
            for viewer in viewers { await viewer.stop() }
        }

        // TLS, for direct exposure: stalled handshakes.
        try await BenchDaemon.with(session, publicKeys: plan.publicKeys + ["tls: {cert_file: \(cert), key_file: \(key)}"], openFiles: openFiles) { d in
            _ = try await listenerLimits(d)
            waitListening(d.port)
            let (token, vncSocket) = try await abuseTask(d, "abuse-tls")
            let websockify = try Websockify(vncSocket: vncSocket, cert: (cert, key))
            defer { websockify.stop() }
            let viewers = [Viewer(try Wire.tls(port: d.port), path: "/api/v1/vnc/ws?task_id=abuse-tls&token=\(token)"),
                           Viewer(try Wire.tcp(port: websockify.port), path: "/?token=good")]
            for viewer in viewers { try await viewer.warmUp() }
            let (daemonPID, websockifyPID) = (d.process.pid, websockify.pid)
            let kioskd = AbuseTarget(port: d.port, cpu: { cpuSeconds(daemonPID) }, probe: httpsHealthProbe(port: d.port), viewer: viewers[0], forgedPath: "")
            let peer = AbuseTarget(port: websockify.port, cpu: { cpuSeconds(websockifyPID, children: true) }, probe: upgradeProbe(port: websockify.port, path: "/?token=probe"),
                                   viewer: viewers[1], forgedPath: "")
            do {
                rows += try await runAttacks(tlsAttacks(plan), kioskd: kioskd, websockify: peer, plan: plan, problems: &problems)
            } catch {
                for viewer in viewers { await viewer.stop() }
                throw error
            }
            if let ended = viewers[0].ended { problems.append("the viewer through kioskd (WSS) ended: \(ended)") }
            for viewer in viewers { await viewer.stop() }
        }
    } catch {
        removeTree(dir)
        throw error
    }
    removeTree(dir)

    print("\nAbuse of the public listener (kioskd: header_timeout \(Int(plan.headerTimeout)) s, \(limits.total) connections, \(limits.perPeer) per address, "
        + "RLIMIT_NOFILE \(openFiles)\(openFiles < 65536 ? " (this host's hard limit; the unit's is 65536)" : ""); websockify \(plan.smoke ? "" : "0.10 ")with its token plugin on the same x11vnc; \(plan.probes) probes per attack from 127.0.0.2; "
        + "took \(Int(monotonic() - started)) s)")
    print("kioskd: /health on a new connection (the TLS rows: HTTPS through curl, the handshake included). websockify has no /health: a WebSocket "
        + "upgrade with a known token, connect → 101. Latency ms p50 / p99 / max (failed probes). Viewer: raw-encoded updates/s (and their KiB/s) of a page that changes 20×/s.\n")
    func latency(_ probes: [Double?]) -> String {
        let ok = probes.compactMap { $0 }
        let failed = probes.count - ok.count
        guard !ok.isEmpty else { return "none answered" }
        return "\(ms(percentile(ok, 0.5))) / \(ms(percentile(ok, 0.99))) / \(ms(ok.max()!))" + (failed > 0 ? " (\(failed) failed)" : "")
    }
    func rate(_ t: Taken) -> String { "\(Int(t.updatesPerSecond.rounded())) (\(Int(t.kibPerSecond.rounded())) KiB/s)" }
    func cpu(_ t: Taken) -> String { "\(Int(t.cpuPercent.rounded())) %" }
    print("| attack | amount | kioskd's answer | kioskd CPU | /health (ms) | viewer/s | websockify's answer | websockify CPU | upgrade (ms) | viewer/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows {
        let k = row.kioskd
        let w = row.websockify.map { [$0.answer, cpu($0), latency($0.probes), rate($0)] } ?? ["n/a (\(row.attack.notForWebsockify ?? ""))", "", "", ""]
        print("| " + ([row.attack.name, row.attack.amount, k.answer, cpu(k), latency(k.probes), rate(k)] + w).joined(separator: " | ") + " |")
    }
    if let burst = rows.first(where: { $0.attack.name.hasPrefix("upgrades with forged") }) {
        let (k, n, seconds) = (burst.kioskd, Double(burst.kioskd.connections), burst.attack.seconds)
        print("\nforged tokens: kioskd \(Int(n / seconds)) upgrades/s, \(us(k.cpuPercent / 100 * seconds / max(n, 1))) µs of its CPU each "
            + "(the attacker beside it on this host: \(Int(k.attackerCPUPercent.rounded())) %)"
            + (burst.websockify.map { w in ", websockify \(Int(Double(w.connections) / seconds)) upgrades/s" } ?? "")
            + "; the token's check alone (parse and HMAC, in this process): \(us(try await tokenCheckSeconds(2000))) µs")
    }
    if !problems.isEmpty { fail("the public listener did not hold:\n  " + problems.joined(separator: "\n  ")) }
    print("every attack answered as designed, /health always answered, the viewer kept its frames")
}
