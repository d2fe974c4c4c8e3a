import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// A small RFB 3.8 viewer, blocking, for tests and the benchmark: what noVNC or the bridge
/// send to x11vnc, byte for byte (RFC 6143).
public final class RFBClient: @unchecked Sendable {
    private let fd: Int32
    public private(set) var width = 0
    public private(set) var height = 0

    /// Connects to x11vnc's Unix socket and completes the handshake: version, security None,
    /// ClientInit (shared).
    public init(socket: String) throws {
        fd = try connectUnix(socket)
        do {
            try handshake()
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    private func handshake() throws {
        _ = try read(12)                          // "RFB 003.008\n"
        write(Array("RFB 003.008\n".utf8))
        let types = try read(Int(try read(1)[0]))
        guard types.contains(1) else { throw TestFailure("no None security type: \(types)") }
        write([1])
        guard try read(4) == [0, 0, 0, 0] else { throw TestFailure("security handshake failed") }
        write([1])                                // ClientInit: shared
        let serverInit = try read(24)
        width = Int(serverInit[0]) << 8 | Int(serverInit[1])
        height = Int(serverInit[2]) << 8 | Int(serverInit[3])
        let nameLength = Int(serverInit[20]) << 24 | Int(serverInit[21]) << 16 | Int(serverInit[22]) << 8 | Int(serverInit[23])
        _ = try read(nameLength)
    }

    /// KeyEvent: a keysym down or up.
    public func key(_ keysym: UInt32, down: Bool) {
        write([4, down ? 1 : 0, 0, 0, UInt8(keysym >> 24), UInt8(keysym >> 16 & 0xFF), UInt8(keysym >> 8 & 0xFF), UInt8(keysym & 0xFF)])
    }

    /// PointerEvent: bit n-1 of `buttons` is button n (1–8).
    public func pointer(buttons: UInt8, x: Int, y: Int) {
        write([5, buttons, UInt8(x >> 8), UInt8(x & 0xFF), UInt8(y >> 8), UInt8(y & 0xFF)])
    }

    /// Asks for the whole screen and waits for the FramebufferUpdate header.
    public func firstFramebufferUpdate() throws {
        write([3, 0, 0, 0, 0, 0, UInt8(width >> 8), UInt8(width & 0xFF), UInt8(height >> 8), UInt8(height & 0xFF)])
        guard try read(1) == [0] else { throw TestFailure("expected a FramebufferUpdate") }
    }

    public func close() { Glibc.close(fd) }

    private func read(_ n: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            let r = out[got...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard r > 0 else { throw TestFailure("VNC stream ended after \(got) of \(n) bytes") }
            got += r
        }
        return out
    }

    private func write(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
}
