#if canImport(Glibc)
import Glibc
#endif

/// What the configuration allows but should not: `kioskd config check` prints it and the daemon
/// logs it at start. Unlike a `ConfigIssue`, nothing stops.
struct ConfigWarning: Equatable, CustomStringConvertible {
    let key: String
    let message: String

    var description: String { "\(key): \(message)" }

    static func check(_ config: Config, ephemeral: EphemeralPorts? = .current()) -> [ConfigWarning] {
        var warnings: [ConfigWarning] = []
        for path in config.deprecatedKeysUsed {
            let doc = ConfigSchema.deprecatedKeys.first { $0.path == path }?.doc ?? "deprecated"
            warnings.append(ConfigWarning(key: path, message: "deprecated: \(doc)"))
        }
        let secret = config.publicListener.jwt.hs256SecretFile
        if !secret.isEmpty, let why = exposedSecret(secret) {
            warnings.append(ConfigWarning(key: "public.jwt.hs256_secret_file", message: why))
        }
        if let ephemeral, case let exposed = ephemeral.exposed(config.sessions.ports), exposed > 0 {
            let r = ephemeral.range
            warnings.append(ConfigWarning(key: "sessions.ports", message: "\(exposed) of these ports are ephemeral (net.ipv4.ip_local_port_range \(r.lowerBound)-\(r.upperBound), less ip_local_reserved_ports): an outgoing connection can take one between its allocation and the session's bind, and that session fails to start; choose ports outside the range or reserve them"))
        }
        return warnings
    }

    /// As ssh says of a private key: whoever can read the identity provider's shared secret can
    /// sign viewer tokens for any task, and whoever can write it can replace it.
    static func exposedSecret(_ path: String) -> String? {
        var st = stat()
        // One that cannot be read at all is the public child's error, with its key.
        guard stat(path, &st) == 0 else { return nil }
        let mode = st.st_mode & 0o777, shown = "0" + String(mode, radix: 8)
        if mode & 0o004 != 0 {
            return "\(path) is readable by every user (mode \(shown)): anyone on this host can sign viewer tokens; chmod 600 it (640 for a group)"
        }
        if mode & 0o022 != 0 {
            return "\(path) is writable by others than its owner (mode \(shown)): they can replace the secret; chmod go-w it"
        }
        return nil
    }
}
