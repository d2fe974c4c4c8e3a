import Supervision

/// Turns the configured programs into the `programs` supervisor's spec.
enum ProgramSpecs {
    static func supervisor(_ config: Config) throws -> SupervisorSpec {
        let s = config.supervisor
        return SupervisorSpec(
            strategy: s.strategy,
            intensity: Intensity(maxRestarts: s.maxRestarts, period: s.period),
            backoff: Backoff(initial: s.backoff.initial, multiplier: s.backoff.multiplier, maximum: s.backoff.max,
                             jitter: s.backoff.jitter, resetAfter: s.backoff.resetAfter),
            autoShutdown: config.programs.contains(where: \.significant) ? .anySignificant : .never,
            children: try config.programs.map(child))
    }

    static func child(_ program: Config.Program) throws -> ChildSpec {
        var rlimits: [ResourceLimit] = []
        if let nofile = program.nofile { rlimits.append(ResourceLimit(.nofile, soft: nofile)) }
        let credentials = try program.user.map { try Credentials.lookup(user: $0, group: program.group) }
        var notifyFD: Int32?
        let readiness: ReadinessProbe? = program.ready.map { ready in
            switch ready {
            case .tcp(let hp, let banner): return .tcp(host: hp.host, port: hp.port, banner: banner)
            case .http(let hp, let path): return .http(host: hp.host, port: hp.port, path: path)
            case .file(let path): return .file(path: path)
            case .logLine(let text): return .logLine(contains: text)
            case .notifyFD(let fd):
                notifyFD = fd
                return .notifyFD
            }
        }
        let process = ProcessSpec(
            executable: program.command[0],
            arguments: Array(program.command.dropFirst()),
            environment: ProcessSpec.scrubbed(program.environment),
            workingDirectory: program.workingDirectory,
            credentials: credentials,
            rlimits: rlimits,
            notifyFD: notifyFD)
        return ChildSpec(id: program.name, kind: .process(process), restart: program.restart, shutdown: program.shutdown,
                         significant: program.significant, readiness: readiness, readyTimeout: program.readyTimeout)
    }
}
