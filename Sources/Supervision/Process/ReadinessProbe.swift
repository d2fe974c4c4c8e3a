import Dispatch

#if canImport(Glibc)
import Essentials
import Glibc
#endif

/// What "started" means for a child. Probes that must retry back off from 5 ms to 10 ms between
/// connects and GETs (a refused connect costs microseconds, a late one up to a server's own
/// accept pace) and to 100 ms between looks for a file or a custom check; the others wait on the
/// event itself.
public enum ReadinessProbe: Sendable {
    /// The child writes a line to its notify fd (`ProcessSpec.notifyFD`); the line is the detail.
    case notifyFD
    /// A TCP connect to host:port succeeds (and the server's first bytes start with `banner`).
    case tcp(host: String, port: Int, banner: String? = nil)
    /// A connect to a Unix socket succeeds (and the first bytes start with `banner`). `hello` is
    /// sent right after connecting: an RFB server (libvncserver) waits 100 ms for a silent client
    /// to speak (WebSocket/TLS sniffing) before it greets.
    case unixSocket(path: String, banner: String? = nil, hello: String? = nil)
    /// `GET path` on host:port answers with a 2xx status.
    case http(host: String, port: Int, path: String)
    /// A file exists, written since this incarnation was launched (a file left by the previous
    /// one does not count).
    case file(path: String)
    /// The child writes a line containing this text to stdout or stderr.
    case logLine(contains: String)
    /// An in-process child calls `TaskChildContext.markReady`.
    case signaled
    /// A check of your own, retried until it returns true.
    case custom(@Sendable () async throws -> Bool)

    var summary: String {
        switch self {
        case .notifyFD: "a line on its notify fd"
        case .tcp(let h, let p, let b): "tcp \(h):\(p)" + (b.map { " greeting with \"\($0)\"" } ?? "")
        case .unixSocket(let path, let b, _): "unix socket \(path)" + (b.map { " greeting with \"\($0)\"" } ?? "")
        case .http(let h, let p, let path): "GET http://\(h):\(p)\(path) answering 2xx"
        case .file(let path): "file \(path) to appear"
        case .logLine(let text): "an output line containing \"\(text)\""
        case .signaled: "the task to mark itself ready"
        case .custom: "a custom check"
        }
    }
}

struct ProbeFailure: Error, CustomStringConvertible {
    let description: String
}

/// Runs a probe until it passes; throws only for a definite failure (e.g. a wrong banner).
/// Cancellation ends it (the caller races it against a timeout and the child's exit).
func awaitReadiness(_ probe: ReadinessProbe, since launch: timespec, instance: ProcessInstance?, taskReady: OnceValue<String>?, logWatch: OnceValue<String>?) async throws -> String {
    switch probe {
    case .notifyFD:
        guard let line = instance?.notifyLine else { throw ProbeFailure(description: "the probe needs a process with a notify fd") }
        return try await line.wait()
    case .logLine:
        guard let logWatch else { throw ProbeFailure(description: "the log-line probe needs a process child") }
        return try await logWatch.wait()
    case .signaled:
        guard let taskReady else { throw ProbeFailure(description: "the signaled probe needs a task child") }
        return try await taskReady.wait()
    case .tcp(let host, let port, let banner):
        return try await retrying(upTo: .milliseconds(10)) { try await blocking { try connectProbe(.tcp(host, port), banner: banner, hello: nil) } }
    case .unixSocket(let path, let banner, let hello):
        return try await retrying(upTo: .milliseconds(10)) { try await blocking { try connectProbe(.unix(path), banner: banner, hello: hello) } }
    case .http(let host, let port, let path):
        return try await retrying(upTo: .milliseconds(10)) { try await blocking { try httpProbe(host: host, port: port, path: path) } }
    case .file(let path):
        return try await retrying(upTo: .milliseconds(100)) { modified(path, since: launch) ? path : nil }
    case .custom(let check):
        return try await retrying(upTo: .milliseconds(100)) { try await check() ? "" : nil }
    }
}

/// The kernel stamps files from its coarse clock: compare with the same clock.
func coarseNow() -> timespec {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME_COARSE, &ts)
    return ts
}

private func modified(_ path: String, since launch: timespec) -> Bool {
    var st = stat()
    guard stat(path, &st) == 0 else { return false }
    let m = st.st_mtim
    return m.tv_sec > launch.tv_sec || (m.tv_sec == launch.tv_sec && m.tv_nsec >= launch.tv_nsec)
}

private func retrying(upTo longest: Duration, _ attempt: () async throws -> String?) async throws -> String {
    var pause = Duration.milliseconds(5)
    while true {
        try Task.checkCancellation()
        if let detail = try await attempt() { return detail }
        try await Task.sleep(for: pause)
        pause = min(pause * 2, longest)
    }
}

/// Runs blocking work (a connect, a /proc scan) off the cooperative pool.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        DispatchQueue.global().async { c.resume(with: Result { try body() }) }
    }
}

private enum Endpoint {
    case tcp(String, Int)
    case unix(String)
}

/// Connects with a short timeout; returns nil while the peer is not there yet. A greeting gets a
/// second: x11vnc accepts only every 200 ms while it has no client, so a probe that gave up
/// sooner paid that wait again on its next connect.
private func connectProbe(_ endpoint: Endpoint, banner: String?, hello: String?) throws -> String? {
    guard let fd = connectSocket(endpoint) else { return nil }
    defer { close(fd) }
    guard let banner else { return "connected" }
    setTimeouts(fd, receive: .seconds(1))
    if let hello {
        let bytes = Array(hello.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else { return nil }
    }
    let expected = Array(banner.utf8)
    var got: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 256)
    while got.count < expected.count {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return nil }  // closed or timed out before greeting: not ready yet
        got.append(contentsOf: chunk[0..<n])
    }
    guard got.prefix(expected.count).elementsEqual(expected) else {
        let text = String(decoding: got.prefix(64), as: UTF8.self)
        throw ProbeFailure(description: "expected a greeting starting with \"\(banner)\", got \"\(text)\"")
    }
    // The greeting's line: once spoken to (`hello`), a server may send more in the same read.
    return String(decoding: got.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self).trimmingNewlines
}

private func httpProbe(host: String, port: Int, path: String) throws -> String? {
    guard let answer = httpGet(host: host, port: port, path: path, bodyLimit: 0) else { return nil }
    return (200..<300).contains(answer.status) ? answer.statusLine : nil
}

/// One answer of `httpGet`.
public struct HTTPAnswer: Sendable {
    public let status: Int
    public let statusLine: String
    public let body: [UInt8]
}

/// A minimal blocking GET for small loopback endpoints (readiness, Chromium's /json/version):
/// `Connection: close`, body read to EOF or Content-Length up to `bodyLimit` bytes, no chunked
/// bodies. Each read waits at most 250 ms. Nil when nothing listens or the answer is not HTTP.
public func httpGet(host: String, port: Int, path: String, bodyLimit: Int = 1 << 20) -> HTTPAnswer? {
    guard let fd = connectSocket(.tcp(host, port)) else { return nil }
    defer { close(fd) }
    // HTTP/1.1: Chromium's DevTools server rejects 1.0 requests; Connection: close ends the answer.
    let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
    let separator = Array("\r\n\r\n".utf8)
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    var headEnd: Int?
    var contentLength: Int?
    // Until EOF, or until Content-Length is complete: servers may keep the connection open.
    while data.count < 16384 + bodyLimit {
        if bodyLimit == 0, data.contains(UInt8(ascii: "\n")) { break }
        if let h = headEnd, let length = contentLength, data.count - h >= min(length, bodyLimit) { break }
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        data.append(contentsOf: chunk[0..<n])
        if headEnd == nil, let i = data.indices.dropLast(3).first(where: { data[$0..<($0 + 4)].elementsEqual(separator) }) {
            headEnd = i + 4
            let head = String(decoding: data[..<i], as: UTF8.self).lowercased()
            contentLength = head.split(separator: "\r\n").lazy
                .compactMap { line in line.hasPrefix("content-length:") ? Int(line.dropFirst(15).filter { $0 != " " && $0 != "\t" }) : nil }
                .first
        }
    }
    let statusLine = String(decoding: data.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self).trimmingNewlines
    let parts = statusLine.split(separator: " ")
    guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else { return nil }
    return HTTPAnswer(status: code, statusLine: statusLine, body: headEnd.map { Array(data[$0...].prefix(bodyLimit)) } ?? [])
}

private func connectSocket(_ endpoint: Endpoint) -> Int32? {
    switch endpoint {
    case .tcp(let host, let port):
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let first = res else { return nil }
        defer { freeaddrinfo(res) }
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            if fd >= 0 {
                setTimeouts(fd)
                if connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return fd }
                close(fd)
            }
            ai = a.pointee.ai_next
        }
        return nil
    case .unix(let path):
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        setTimeouts(fd)
        if withUnixSocketAddress(path, { connect(fd, $0, $1) }) == 0 { return fd }
        close(fd)
        return nil
    }
}

private func setTimeouts(_ fd: Int32, receive: Duration = .milliseconds(250)) {
    var send = timeval(tv_sec: 0, tv_usec: 250_000)
    var tv = timeval(tv_sec: Int(receive.components.seconds), tv_usec: Int(receive.components.attoseconds / 1_000_000_000_000))
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send, socklen_t(MemoryLayout<timeval>.size))
}

extension String {
    var trimmingNewlines: String {
        var s = Substring(self)
        while let last = s.last, last == "\n" || last == "\r" { s = s.dropLast() }
        return String(s)
    }
}
