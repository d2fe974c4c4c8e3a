import Essentials
import Logging
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// The sessions' loopback ports (Chromium's CDP, websockify) refuse connections from every
/// local user but kioskd's own and the ones allowed (the agents'): an nftables table whose
/// output chain resets a SYN to the session port range unless the connecting socket's owner is
/// allowed. Loopback TCP has no other owner check: without it any local user, or a page in
/// another session (same session user), could drive a session's browser over CDP.
///
/// Only connection attempts are filtered (SYN without ACK), so replies to clients whose
/// ephemeral port happens to fall in the range pass. One table per port range, so daemons
/// with different ranges on one host keep their own; installing replaces the table
/// atomically, and a table left by a killed daemon is replaced by the next start.
public struct PortGuard: Sendable, Equatable {
    public static let executable = "/usr/sbin/nft"

    public var ports: ClosedRange<Int>
    /// Owners whose sockets may connect (root and the daemon's own user are always added).
    public var allowedUIDs: [UInt32]
    /// Primary (effective) groups whose sockets may connect.
    public var allowedGIDs: [UInt32]

    public init(ports: ClosedRange<Int>, allowedUIDs: [UInt32] = [], allowedGIDs: [UInt32] = []) {
        self.ports = ports
        self.allowedUIDs = allowedUIDs
        self.allowedGIDs = allowedGIDs
    }

    public var table: String { "kioskd_\(ports.lowerBound)_\(ports.upperBound)" }

    /// The nft script: declare, delete and re-create, so one transaction replaces any old table.
    public func ruleset(daemonUID: UInt32) -> String {
        let uids = Set([0, daemonUID] + allowedUIDs).sorted().map(String.init).joined(separator: ", ")
        let match = "oif \"lo\" tcp dport \(ports.lowerBound)-\(ports.upperBound) tcp flags & (syn | ack) == syn"
        var rules = ["\(match) meta skuid { \(uids) } accept"]
        if !allowedGIDs.isEmpty {
            rules.append("\(match) meta skgid { \(Set(allowedGIDs).sorted().map(String.init).joined(separator: ", ")) } accept")
        }
        rules.append("\(match) counter reject with tcp reset")
        return """
            table inet \(table)
            delete table inet \(table)
            table inet \(table) {
              chain output {
                type filter hook output priority filter; policy accept;
            \(rules.map { "    " + $0 }.joined(separator: "\n"))
              }
            }

            """
    }

    /// Installs (or replaces) the table. The script goes through a file in `scratchDir`
    /// (the daemon's private records directory).
    public func install(scratchDir: String, logger: Logger) async throws {
        let path = scratchDir + "/port-guard.nft"
        do {
            try writeFile(path, Array(ruleset(daemonUID: geteuid()).utf8), mode: 0o600, owner: nil)
        } catch {
            throw SessionError.setup("sessions.port_guard: \(error)")
        }
        defer { unlink(path) }
        try await nft(["-f", path], logger: logger)
    }

    /// Removes the table (at a clean stop; a killed daemon's table stays until the next start).
    public func remove(logger: Logger) async {
        // A stop runs in the stopping child's cancelled task: the removal is shielded from it.
        do {
            try await shielded { try await nft(["delete", "table", "inet", table], logger: logger) }
        } catch {
            logger.warning("could not remove the port guard", metadata: ["table": "\(table)", "error": "\(error)"])
        }
    }

    private func nft(_ arguments: [String], logger: Logger) async throws {
        guard access(Self.executable, X_OK) == 0 else {
            throw SessionError.setup("sessions.port_guard: \(Self.executable) is missing: install the Debian package 'nftables', "
                + "or set sessions.port_guard: false (then any local user can reach the sessions' CDP ports)")
        }
        let (exit, output) = try await runProgram(ProcessSpec(executable: Self.executable, arguments: arguments, outputLevel: .debug),
                                                  timeout: .seconds(10), logger: logger)
        guard exit.isNormal else {
            throw SessionError.setup("sessions.port_guard: nft \(arguments.joined(separator: " ")) \(exit): "
                + "\(output.suffix(3).joined(separator: " / ")) (kioskd needs CAP_NET_ADMIN for it, or set sessions.port_guard: false)")
        }
    }
}
