import Essentials
import Logging

/// Runs a short-lived program (a tool such as nft) to its end, with the same spawn, fd and
/// no-orphan rules as supervised children: its exit and every line it printed.
public func runProgram(_ spec: ProcessSpec, timeout: Duration, logger: Logger) async throws -> (exit: ExitReason, output: [String]) {
    let instance = try await ProcessInstance.spawn(spec, logger: logger)
    do {
        let exit = try await withTimeout(timeout, spec.executable) { try await instance.fullyGone.wait() }
        return (exit, instance.output.recentLines.map(\.text))
    } catch {
        _ = await instance.stop(.brutalKill)
        throw error
    }
}
