import Essentials
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Performs what `SupervisorStateMachine` decides. Children run as tasks of `run()`'s task
/// group and report back through one input stream, so every decision happens in order on
/// this actor and no child task outlives the supervisor.
public actor Supervisor {
    public nonisolated let name: String
    public nonisolated let path: [String]
    private var machine: SupervisorStateMachine
    private var specs: [String: ChildSpec]
    private var handles: [String: ChildHandle] = [:]
    private let inputs: AsyncStream<SupervisorStateMachine.Input>
    private nonisolated let input: AsyncStream<SupervisorStateMachine.Input>.Continuation
    private let bus: EventBus
    private let logger: Logger
    private let readiness = OnceValue<SupervisionError?>()
    private var nextRequest = 0
    private var addReplies: [Int: CheckedContinuation<Void, any Error>] = [:]
    private var removeReplies: [Int: CheckedContinuation<Void, any Error>] = [:]
    private var running = false

    /// - Parameters:
    ///   - random: source of backoff jitter, uniform in [0, 1).
    public init(
        name: String,
        spec: SupervisorSpec,
        parentPath: [String] = [],
        events: EventBus,
        logger: Logger,
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) throws(SupervisionError) {
        try spec.validate()
        self.name = name
        self.path = parentPath + [name]
        self.machine = SupervisorStateMachine(spec: spec, random: random)
        self.specs = Dictionary(uniqueKeysWithValues: spec.children.map { ($0.id, $0) })
        (inputs, input) = AsyncStream.makeStream(of: SupervisorStateMachine.Input.self)
        self.bus = events
        var logger = logger
        logger[metadataKey: "supervisor"] = "\(path.joined(separator: "/"))"
        self.logger = logger
    }

    /// Starts the children in order (a child that starts with the previous one is spawned beside
    /// it) and supervises them until stopped, auto-shut-down or given up.
    /// Cancelling it kills every child at once (for a stop that overran its bound).
    public func run() async -> SupervisorStateMachine.Outcome {
        precondition(!running, "a supervisor runs once")
        running = true
        input.yield(.start)
        await withDiscardingTaskGroup { group in
            for await next in inputs {
                for action in machine.handle(next, now: .now) {
                    perform(action, in: &group)
                }
                if specs.count != machine.children.count {
                    let live = Set(machine.children.map(\.id))
                    specs = specs.filter { live.contains($0.key) }
                    handles = handles.filter { live.contains($0.key) }
                }
                if machine.isFinished { break }
            }
            // Pending backoff timers; or, if we were cancelled, every child (they are killed).
            group.cancelAll()
        }
        input.finish()
        if let outcome = machine.outcome { return outcome }
        // Cancelled: the children were killed as their tasks were cancelled.
        let outcome = SupervisorStateMachine.Outcome.normal("cancelled")
        readiness.set(.notRunning)
        return outcome
    }

    /// Returns when the initial start completed; throws if it failed.
    public nonisolated func waitReady() async throws {
        if let error = try await readiness.wait() { throw error }
    }

    /// Stops every child in reverse order; `run()` then returns `.normal`.
    public nonisolated func shutdown() {
        input.yield(.stop)
    }

    /// Adds and starts a child; returns once it is ready. A child that fails to start is not kept.
    public func startChild(_ spec: ChildSpec) async throws {
        try spec.validate()
        guard !machine.isFinished else { throw SupervisionError.notRunning }
        nextRequest += 1
        let request = nextRequest
        if specs[spec.id] == nil { specs[spec.id] = spec }
        try await withCheckedThrowingContinuation { c in
            addReplies[request] = c
            input.yield(.addChild(spec, request: request))
        }
    }

    /// Stops a child by its shutdown spec and forgets it.
    public func terminateChild(_ id: String) async throws {
        guard !machine.isFinished else { throw SupervisionError.notRunning }
        nextRequest += 1
        let request = nextRequest
        try await withCheckedThrowingContinuation { c in
            removeReplies[request] = c
            input.yield(.removeChild(id: id, request: request))
        }
    }

    /// A child's recent output lines (processes only), oldest first.
    public func recentOutput(of id: String) -> [OutputSink.Line]? {
        (handles[id]?.child as? ProcessInstance)?.output.recentLines
    }

    // MARK: - Effects

    private func perform(_ action: SupervisorStateMachine.Action, in group: inout DiscardingTaskGroup) {
        switch action {
        case .startChild(let id, let generation):
            guard let spec = specs[id] else { return }
            let handle = ChildHandle()
            handles[id] = handle
            let launch = launcher(for: spec)
            let input = self.input
            let publish = { @Sendable [path, bus] (kind: SupervisionEvent.Kind) in
                bus.publish(SupervisionEvent(path: path, kind: kind, time: .now, wallTime: wallClock()))
            }
            group.addTask {
                await runChild(spec: spec, generation: generation, handle: handle, launch: launch,
                               post: { input.yield($0) }, publish: publish)
            }
        case .stopChild(let id, _):
            handles[id]?.stopRequested.set(())
        case .scheduleTimer(let token, let after):
            let input = self.input
            group.addTask {
                do {
                    try await Task.sleep(for: after)
                    input.yield(.timerFired(token: token))
                } catch {}
            }
        case .event(let kind):
            let event = SupervisionEvent(path: path, kind: kind, time: .now, wallTime: wallClock())
            log(event)
            bus.publish(event)
        case .ready:
            readiness.set(nil)
        case .replyAdd(let request, let error):
            let reply = addReplies.removeValue(forKey: request)
            if let error { reply?.resume(throwing: error) } else { reply?.resume() }
        case .replyRemove(let request, let error):
            let reply = removeReplies.removeValue(forKey: request)
            if let error { reply?.resume(throwing: error) } else { reply?.resume() }
        case .finish(let outcome):
            switch outcome {
            case .failedToStart(let child, let reason): readiness.set(.failedToStart(child: child, reason: reason))
            case .gaveUp(let why): readiness.set(.gaveUp(why))
            case .normal: readiness.set(.notRunning)
            }
        }
    }

    private func launcher(for spec: ChildSpec) -> @Sendable () async throws -> any RunningChild {
        var childLogger = logger
        childLogger[metadataKey: "child"] = "\(spec.id)"
        let logger = childLogger
        switch spec.kind {
        case .process(let process):
            var needle: String?
            if case .logLine(let text)? = spec.readiness { needle = text }
            return { [needle] in try await ProcessInstance.spawn(process, watchingFor: needle, logger: logger) }
        case .task(let body):
            return { TaskChild(body: body, logger: logger) }
        case .supervisor(let nested):
            let (path, bus) = (self.path, self.bus)
            return { SupervisorChild(supervisor: try Supervisor(name: spec.id, spec: nested, parentPath: path, events: bus, logger: logger)) }
        }
    }

    private func log(_ event: SupervisionEvent) {
        var metadata: Logger.Metadata = [:]
        if let child = event.child { metadata["child"] = "\(child)" }
        let level: Logger.Level = switch event.kind {
        case .starting, .spawned, .stopping: .debug
        case .ready, .stopped, .removed, .supervisorReady, .supervisorStopped, .restarting: .info
        case .exited(_, let reason, _): reason.isNormal ? .info : .warning
        case .startFailed: .warning
        case .gaveUp: .error
        }
        logger.log(level: level, "\(event)", metadata: metadata)
    }

    // MARK: - Snapshot

    public func snapshot() async -> TreeNode {
        var nodes: [TreeNode] = []
        for child in machine.children {
            let spec = specs[child.id]
            let running = handles[child.id]?.child
            var node = TreeNode(
                id: child.id,
                kind: spec.map { kindName($0.kind) } ?? "unknown",
                status: child.status.rawValue,
                pid: child.status.isAlive ? running?.processID : nil,
                restarts: child.restarts,
                lastExit: child.lastExit?.description,
                readyDetail: child.readyDetail.isEmpty ? nil : child.readyDetail,
                upSeconds: child.status == .running ? child.readyAt.map { (ContinuousClock.now - $0).seconds } : nil
            )
            if let nested = running as? SupervisorChild, child.status.isAlive {
                let inner = await nested.supervisor.snapshot()
                node.strategy = inner.strategy
                node.children = inner.children
            }
            nodes.append(node)
        }
        var root = TreeNode(id: name, kind: "supervisor", status: machine.isFinished ? "stopped" : "running")
        root.strategy = machine.strategy.rawValue
        root.children = nodes
        return root
    }

    private func kindName(_ kind: ChildKind) -> String {
        switch kind {
        case .process: "process"
        case .task: "task"
        case .supervisor: "supervisor"
        }
    }
}

/// One node of the supervision tree, as shown by `GET /v1/tree` and `kioskd status`.
public struct TreeNode: Sendable, Codable, Equatable {
    public var id: String
    public var kind: String
    public var status: String
    public var pid: Int32?
    public var restarts: Int?
    public var lastExit: String?
    public var readyDetail: String?
    public var upSeconds: Double?
    public var strategy: String?
    public var children: [TreeNode]?

    public init(id: String, kind: String, status: String, pid: Int32? = nil, restarts: Int? = nil,
                lastExit: String? = nil, readyDetail: String? = nil, upSeconds: Double? = nil) {
        self.id = id
        self.kind = kind
        self.status = status
        self.pid = pid
        self.restarts = restarts
        self.lastExit = lastExit
        self.readyDetail = readyDetail
        self.upSeconds = upSeconds
    }

    /// Every node below this one, depth first.
    public var descendants: [TreeNode] {
        (children ?? []).flatMap { [$0] + $0.descendants }
    }
}

func wallClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Makes this process the reaper of its descendants' orphans. Call once, early, in a program
/// that starts child processes only through Supervision (it reaps every child it has).
public func adoptOrphans() throws {
    try ProcessReactor.shared.adoptOrphans()
}
