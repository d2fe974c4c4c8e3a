import Essentials

/// Where the kernel takes the local ports of outgoing connections: its ephemeral range less the
/// ports reserved from it. A session port in there can be taken by any connect between the
/// allocator's check and the session's server binding it: Chromium then logs `bind() failed`,
/// serves CDP on [::1] alone, and its 127.0.0.1 readiness probe times out.
struct EphemeralPorts: Equatable {
    var range: ClosedRange<Int>
    var reserved: [ClosedRange<Int>] = []

    /// From `net.ipv4.ip_local_port_range` ("32768\t60999") and `ip_local_reserved_ports`
    /// ("8080,30000-30999"); nil when the range does not parse.
    init?(range text: String, reserved list: String = "") {
        let bounds = text.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        guard bounds.count == 2, bounds[0] <= bounds[1] else { return nil }
        range = bounds[0]...bounds[1]
        reserved = list.split(separator: ",").compactMap { item in
            let ends = item.split(separator: "-").compactMap { Int($0.filter { !$0.isWhitespace }) }
            return ends.count == 1 ? ends[0]...ends[0] : ends.count == 2 && ends[0] <= ends[1] ? ends[0]...ends[1] : nil
        }
    }

    /// This machine's, read now.
    static func current() -> EphemeralPorts? {
        guard let range = readSmallFile("/proc/sys/net/ipv4/ip_local_port_range") else { return nil }
        return EphemeralPorts(range: range, reserved: readSmallFile("/proc/sys/net/ipv4/ip_local_reserved_ports") ?? "")
    }

    /// How many of `ports` an outgoing connection may take.
    func exposed(_ ports: ClosedRange<Int>) -> Int {
        guard ports.overlaps(range) else { return 0 }
        let overlap = ports.clamped(to: range)
        return overlap.count(where: { port in !reserved.contains { $0.contains(port) } })
    }
}
