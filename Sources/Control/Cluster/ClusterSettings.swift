/// Cluster mode (config `cluster.*`): hosts sharing one PostgreSQL store, one task queue, and
/// each other's viewers and agents. The one place its defaults are written.
public struct ClusterSettings: Sendable, Equatable {
    public var enabled: Bool
    /// This host's name in the cluster: unique among the hosts (the machine's host name by default).
    public var hostID: String
    /// `host:port` of this host's internal listener as the other hosts reach it.
    public var address: String
    /// How often the host renews its lease, reads the cluster and rescues dead hosts' work.
    public var heartbeat: Duration
    /// A lease not renewed for this long is gone: the host is dead for everyone, its running
    /// tasks are interrupted and its unstarted claims queued again.
    public var leaseTTL: Duration
    /// How long a task waits for the host it was created on before any host may claim it.
    public var claimGrace: Duration

    public init(enabled: Bool = false, hostID: String = "", address: String = "", heartbeat: Duration = .seconds(2),
                leaseTTL: Duration = .seconds(15), claimGrace: Duration = .milliseconds(500)) {
        self.enabled = enabled
        self.hostID = hostID
        self.address = address
        self.heartbeat = heartbeat
        self.leaseTTL = leaseTTL
        self.claimGrace = claimGrace
    }
}
