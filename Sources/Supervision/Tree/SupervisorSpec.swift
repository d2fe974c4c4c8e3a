/// Which siblings restart with a failed child (OTP strategies).
public enum Strategy: String, Sendable, CaseIterable {
    /// Only the failed child.
    case oneForOne = "one_for_one"
    /// Every child: all stop (reverse order), all start (in order).
    case oneForAll = "one_for_all"
    /// The failed child and every child after it.
    case restForOne = "rest_for_one"
}

/// When a significant child ending by itself ends its supervisor.
public enum AutoShutdown: String, Sendable, CaseIterable {
    case never
    case anySignificant = "any_significant"
    case allSignificant = "all_significant"
}

/// More than `maxRestarts` restarts inside `period` and the supervisor gives up.
public struct Intensity: Sendable, Equatable {
    public var maxRestarts: Int
    public var period: Duration

    public init(maxRestarts: Int, period: Duration) {
        self.maxRestarts = maxRestarts
        self.period = period
    }
}

/// Delay before restarting a child that keeps failing. OTP restarts at once, which turns an
/// external program's crash loop into a busy loop; supervisord gives up after three quick tries.
/// Here the first restart after a stable run is immediate, later consecutive ones back off
/// exponentially with jitter, and `resetAfter` of stable running forgets the failures.
public struct Backoff: Sendable, Equatable {
    public var initial: Duration
    public var multiplier: Double
    public var maximum: Duration
    /// ±fraction of the delay, so restarts of many children do not line up.
    public var jitter: Double
    public var resetAfter: Duration

    public init(
        initial: Duration = .milliseconds(200),
        multiplier: Double = 1.5,
        maximum: Duration = .seconds(10),
        jitter: Double = 0.25,
        resetAfter: Duration = .seconds(30)
    ) {
        self.initial = initial
        self.multiplier = multiplier
        self.maximum = maximum
        self.jitter = jitter
        self.resetAfter = resetAfter
    }

    public static let none = Backoff(initial: .zero, multiplier: 1, maximum: .zero, jitter: 0)

    /// The delay before the restart that follows the `failures`-th consecutive failure.
    /// `random` is uniform in [0, 1); passing it in keeps this function pure.
    public func delay(failures: Int, random: Double) -> Duration {
        guard failures > 1 else { return .zero }
        let base = initial.seconds * pow(multiplier, Double(failures - 2))
        let capped = min(base, maximum.seconds)
        let spread = capped * jitter * (random * 2 - 1)
        let seconds = min(max(0, capped + spread), maximum.seconds * (1 + jitter))
        return .microseconds(Int64((seconds * 1e6).rounded()))
    }
}

/// A supervisor: a strategy over an ordered list of children.
public struct SupervisorSpec: Sendable {
    public var strategy: Strategy
    public var intensity: Intensity
    public var backoff: Backoff
    public var autoShutdown: AutoShutdown
    public var children: [ChildSpec]

    public init(
        strategy: Strategy,
        intensity: Intensity = Intensity(maxRestarts: 5, period: .seconds(60)),
        backoff: Backoff = Backoff(),
        autoShutdown: AutoShutdown = .never,
        children: [ChildSpec] = []
    ) {
        self.strategy = strategy
        self.intensity = intensity
        self.backoff = backoff
        self.autoShutdown = autoShutdown
        self.children = children
    }

    func validate() throws(SupervisionError) {
        if intensity.maxRestarts < 0 { throw .invalidSpec("restart intensity must not be negative") }
        if intensity.period <= .zero { throw .invalidSpec("restart period must be positive") }
        var seen = Set<String>()
        for child in children {
            try child.validate()
            if !seen.insert(child.id).inserted { throw .duplicateChild(child.id) }
        }
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

#if canImport(Glibc)
import Glibc
#endif
