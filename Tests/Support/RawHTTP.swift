#if canImport(Glibc)
import Glibc
#endif

/// What came back on a raw HTTP connection: the text, and whether the server closed it
/// (rather than the read timing out).
public struct RawAnswer: CustomStringConvertible {
    public let text: String
    public let closed: Bool

    public var status: Int { Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0 }
    public var body: String { text.firstRange(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? "" }
    public var head: String { text.firstRange(of: "\r\n\r\n").map { String(text[..<$0.lowerBound]) } ?? text }

    public func header(_ name: String) -> String? {
        head.split(separator: "\r\n").dropFirst().first { $0.lowercased().hasPrefix(name.lowercased() + ":") }
            .map { String($0.dropFirst(name.count + 1).drop { $0 == " " }) }
    }

    /// The refusal's `{"error": {"code": …}}`.
    public var code: String? {
        guard let range = body.firstRange(of: #""code":""#), let end = body[range.upperBound...].firstIndex(of: "\"") else { return nil }
        return String(body[range.upperBound..<end])
    }

    public var description: String { "\(closed ? "closed" : "open") after \(text.prefix(400).debugDescription)" }
}

public func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { return }   // the server closed: what it answered is still readable
        sent += n
    }
}

/// Reads until the server closes the connection or the socket's read timeout passes without
/// a byte; with `untilComplete`, stops once one whole answer (head and Content-Length body) is in.
public func readAnswer(_ fd: Int32, untilComplete: Bool = false) -> RawAnswer {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &chunk, chunk.count, 0)
        if n == 0 || (n < 0 && errno == ECONNRESET) { return RawAnswer(text: String(decoding: bytes, as: UTF8.self), closed: true) }
        if n < 0 { return RawAnswer(text: String(decoding: bytes, as: UTF8.self), closed: false) }
        bytes += chunk[..<n]
        let answer = RawAnswer(text: String(decoding: bytes, as: UTF8.self), closed: false)
        if untilComplete, answer.text.contains("\r\n\r\n"), let length = answer.header("Content-Length").flatMap({ Int($0) }),
           answer.body.utf8.count >= length {
            return answer
        }
    }
}
