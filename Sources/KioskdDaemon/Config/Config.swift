import Bridge
import Control
import Display
import Kiosk
import Supervision
import ViewerInput

/// The daemon's configuration, with every default. `ConfigSchema` lists each key, its
/// environment variable and how it is checked; config/kioskd.yaml documents them.
public struct Config: Sendable, Equatable {
    public var control = Control()
    public var tasks = TaskLimits()
    public var capacity = CapacitySettings()
    public var publicListener = PublicListener()
    public var state = State()
    public var runtime = Runtime()
    public var store = Store()
    public var log = Log()
    public var supervisor = SupervisorSettings()
    public var shutdown = ShutdownSettings()
    public var sessions = SessionDefaults()
    public var demo = Demo()
    public var cluster = Cluster()
    public var programs: [Program] = []
    /// Deprecated keys this configuration used (each still works; `ConfigWarning` names its
    /// replacement).
    public var deprecatedKeysUsed: [String] = []

    public init() {}

    public struct Control: Sendable, Equatable {
        public var socket = "/run/kioskd/control.sock"
        /// The socket's group; empty: kioskd's own.
        public var group = ""
        /// Peers allowed by uid / primary gid; empty: root and kioskd's uid / the socket's group.
        public var allowUIDs = NumericIDs()
        public var allowGIDs = NumericIDs()
    }

    /// The public listener: where it listens and how it is reached (TLS, the identity
    /// provider's tokens); its rules are the bridge's own option struct, defaults and all.
    public struct PublicListener: Sendable, Equatable {
        public var listen = HostPort(host: "0.0.0.0", port: 8080)
        public var bridge = BridgeSettings()
        public var jwt = ExternalJWT()
        /// PEM files for HTTPS/WSS when exposed directly; both empty: plain HTTP (behind an ALB).
        public var tlsCertFile = ""
        public var tlsKeyFile = ""
    }

    /// The identity provider's tokens, accepted besides kioskd's own viewer tokens.
    public struct ExternalJWT: Sendable, Equatable {
        public var hs256SecretFile = ""
        public var jwksFile = ""
        public var issuer = ""
        public var audience = ""
        public var taskClaim = "kioskd_task"
        public var roleClaim = "kioskd_role"
        public var anyTask = false
    }

    public struct State: Sendable, Equatable {
        public var dir = "/var/lib/kioskd"
    }

    public struct Runtime: Sendable, Equatable {
        public var dir = "/run/kioskd"
    }

    public struct Store: Sendable, Equatable {
        /// Empty: the embedded SQLite file `kioskd.sqlite` in `state.dir`.
        public var url = ""
    }

    public struct Log: Sendable, Equatable {
        public var level = LogLevel.info
        public var format = LogFormat.auto
    }

    public struct SupervisorSettings: Sendable, Equatable {
        public var strategy = Strategy.oneForOne
        public var maxRestarts = 5
        public var period = Duration.seconds(60)
        public var backoff = BackoffSettings()
    }

    public struct BackoffSettings: Sendable, Equatable {
        public var initial = Duration.milliseconds(200)
        public var multiplier = 1.5
        public var max = Duration.seconds(10)
        public var jitter = 0.25
        public var resetAfter = Duration.seconds(30)
    }

    public struct ShutdownSettings: Sendable, Equatable {
        public var timeout = Duration.seconds(30)
    }

    /// What every kiosk session gets unless its request says otherwise.
    public struct SessionDefaults: Sendable, Equatable {
        public var user = "kioskd"
        public var displays = 10...999
        public var ports = 20000...29999
        public var width = 1280
        public var height = 800
        public var input = ViewerRole.control
        public var bridge = BridgeMode.builtin
        public var maxRestarts = 5
        public var period = Duration.seconds(60)
        public var browser = Chromium.executable
        public var sandbox = true
        /// Other local users are refused on the sessions' ports (nftables), but for these.
        public var portGuard = PortGuardMode.on
        public var cdpAllowUIDs = NumericIDs()
        public var cdpAllowGIDs = NumericIDs()
        /// nil: derived from the budget (`ControlChild.limits`).
        public var memoryMax: UInt64?
        public var memoryHigh: UInt64?
        public var pidsMax = 4096
        public var lockdownAdd: [KeyCombo] = []
        public var lockdownRemove: [KeyCombo] = []
        public var tabs = TabPolicy.agent
    }

    /// Cluster mode: the shared queue's settings, the internal listener other hosts relay
    /// viewers and agents to, and the secret they prove themselves with.
    public struct Cluster: Sendable, Equatable {
        public var settings = ClusterSettings()
        public var listen = HostPort(host: "0.0.0.0", port: 8081)
        /// 32 or more random bytes, the same file on every host; empty: none (cluster mode needs one).
        public var secretFile = ""
    }

    /// A session booted with the daemon, to look at (the README's run command).
    public struct Demo: Sendable, Equatable {
        public var enabled = false
        public var url = "about:blank"
    }

    /// One supervised program (`programs:` list).
    public struct Program: Sendable, Equatable {
        public var name: String
        public var command: [String]
        public var restart = RestartType.permanent
        public var shutdown = Shutdown.timeout(.seconds(5))
        public var significant = false
        public var ready: Readiness?
        public var readyTimeout = Duration.seconds(10)
        public var user: String?
        public var group: String?
        public var environment: [String: String] = [:]
        public var workingDirectory: String?
        public var nofile: UInt64?

        public init(name: String, command: [String]) {
            self.name = name
            self.command = command
        }
    }

    /// How a program says it is up.
    public enum Readiness: Sendable, Equatable {
        case tcp(HostPort, banner: String?)
        case http(HostPort, path: String)
        case file(String)
        case logLine(String)
        case notifyFD(Int32)
    }

    /// `store.url` resolved: where tasks and events live.
    public var storeLocation: String {
        store.url.isEmpty ? "sqlite://\(state.dir)/kioskd.sqlite" : store.url
    }
}

/// uids or gids, as `0,1000` in the config.
public struct NumericIDs: Sendable, Equatable {
    public var values: [UInt32] = []
}

public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// Who installs the port guard's nftables table: kioskd at start (`on`, it needs
/// CAP_NET_ADMIN), nobody (`off`), or the fully privileged `kioskd port-guard install|remove`
/// around a daemon without capabilities (`external`, the packaged unit's ExecStartPre=+).
public enum PortGuardMode: String, Sendable, CaseIterable {
    case on, off, external
}

public enum LogFormat: String, Sendable, CaseIterable {
    /// journal when stderr is connected to journald (JOURNAL_STREAM), text otherwise.
    case auto
    case journal
    case text
}
