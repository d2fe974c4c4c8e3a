/// The server's RFB greeting, spoken by the bridge on x11vnc's behalf.
///
/// libvncserver waits ~100 ms for a new client to speak first (it sniffs for HTTP and TLS)
/// before it greets, and blocks its one loop meanwhile. So the bridge greets the viewer itself,
/// at once, with the version x11vnc speaks; the viewer's answer (checked by `RFBFilter`) reaches
/// x11vnc first, which ends the sniffing, and x11vnc's own greeting is then checked here and
/// swallowed. A pure value, fed the server's bytes in order.
public struct RFBGreeting: Sendable {
    /// What x11vnc (libvncserver) greets with: RFB 3.8.
    public static let version: [UInt8] = Array("RFB 003.008\n".utf8)

    private var seen = 0

    public init() {}

    /// Whether the whole greeting has been swallowed.
    public var done: Bool { seen == Self.version.count }

    /// How many leading bytes of `bytes` belong to the server's greeting (swallow them); nil
    /// when the server greets with anything else (the viewer was told another version).
    public mutating func swallow(_ bytes: some Collection<UInt8>) -> Int? {
        var taken = 0
        for byte in bytes {
            guard !done else { break }
            guard byte == Self.version[seen] else { return nil }
            seen += 1
            taken += 1
        }
        return taken
    }
}
