import Store
import Synchronization

/// What the task service needs of cluster mode: the shared store, the settings, the lease the
/// host holds now (nil between losing one and registering again) and the latest view of the
/// cluster. Shared with the listeners' routing, so it is a class of locked values, not actor state.
public final class ClusterLink: Sendable {
    public let store: any ClusterStore
    public let settings: ClusterSettings
    public let version: String
    private let lease = Mutex<Fence?>(nil)
    private let latest = Mutex<ClusterView?>(nil)
    /// Wakes the claimer: a task entered the queue, or room was freed here.
    let wake: AsyncStream<Void>
    private let wakeUp: AsyncStream<Void>.Continuation

    public init(store: any ClusterStore, settings: ClusterSettings, version: String) {
        self.store = store
        self.settings = settings
        self.version = version
        (wake, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public var hostID: String { settings.hostID }
    public var fence: Fence? { lease.withLock { $0 } }
    public var view: ClusterView? { latest.withLock { $0 } }

    func hold(_ fence: Fence?) { lease.withLock { $0 = fence } }
    func saw(_ view: ClusterView) { latest.withLock { $0 = view } }
    func wakeClaimer() { wakeUp.yield(()) }

    var leaseTTLms: Int64 { Int64(settings.leaseTTL.components.seconds * 1000 + settings.leaseTTL.components.attoseconds / 1_000_000_000_000_000) }
    var graceMS: Int64 { Int64(settings.claimGrace.components.seconds * 1000 + settings.claimGrace.components.attoseconds / 1_000_000_000_000_000) }
}

/// The listeners' routing in cluster mode: a task claimed by another live host is served there.
public struct ClusterRouting: TaskRouting {
    let link: ClusterLink

    public init(_ link: ClusterLink) { self.link = link }

    public func owner(of taskID: String) async -> TaskOwner {
        guard let task = try? await link.store.task(taskID), let host = task.host, host != link.hostID, !task.state.isFinal else { return .local }
        var view = link.view
        if view?.hosts.contains(where: { $0.id == host }) != true { view = try? await link.store.view() }
        guard let view, let owner = view.hosts.first(where: { $0.id == host }), view.alive(owner) else { return .local }
        return .remote(host: host, address: owner.address)
    }
}
