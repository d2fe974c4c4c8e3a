/// Why a child (process, task or nested supervisor) ended.
public enum ExitReason: Sendable, Equatable, CustomStringConvertible {
    /// A process exited with this status.
    case exited(Int32)
    /// A process was killed by this signal.
    case signaled(Int32)
    /// An in-process child or nested supervisor returned.
    case normal
    /// Start, readiness or run failed; the text says what happened.
    case failed(String)

    /// Normal exits don't restart transient children (OTP's `normal`/`shutdown`).
    public var isNormal: Bool {
        switch self {
        case .exited(let code): code == 0
        case .normal: true
        case .signaled, .failed: false
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signaled(let sig): "killed by signal \(sig) (\(signalName(sig)))"
        case .normal: "finished normally"
        case .failed(let why): why
        }
    }
}

func signalName(_ sig: Int32) -> String {
    switch sig {
    case 1: "SIGHUP"
    case 2: "SIGINT"
    case 3: "SIGQUIT"
    case 4: "SIGILL"
    case 6: "SIGABRT"
    case 7: "SIGBUS"
    case 8: "SIGFPE"
    case 9: "SIGKILL"
    case 11: "SIGSEGV"
    case 13: "SIGPIPE"
    case 14: "SIGALRM"
    case 15: "SIGTERM"
    default: "signal \(sig)"
    }
}
