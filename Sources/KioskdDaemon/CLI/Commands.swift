import ArgumentParser
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// `kioskd`: the daemon and its tools.
public struct KioskdCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "kioskd",
        abstract: "Supervises browser kiosk sessions: Xvfb, Openbox, x11vnc, websockify and Chromium.",
        version: "kioskd \(kioskdVersion)",
        subcommands: [Serve.self, ConfigCommand.self, LockdownCommand.self,
                      StatusCommand.self, ClusterCommand.self, TaskCommandGroup.self, TokenCommand.self, DrainCommand.self,
                      DoctorCommand.self, PortGuardCommand.self])

    public init() {}

    /// The executable's entry point: parse, then run async subcommands asynchronously.
    public static func runMain() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// The exit status for configuration errors (sysexits EX_CONFIG); the unit's
/// RestartPreventExitStatus keeps systemd from restarting into the same mistake.
let exitConfigError: Int32 = 78

struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "YAML config file (default: none, or $KIOSKD_CONFIG; every key has a default).")
    var config: String?

    func load(_ environment: [String: String]) throws -> Config {
        do {
            return try ConfigLoader.load(path: config ?? environment["KIOSKD_CONFIG"], environment: environment)
        } catch {
            printError("kioskd: invalid configuration:")
            for issue in error.issues { printError("  \(issue)") }
            throw ExitCode(exitConfigError)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon (in the foreground; systemd runs it as Type=notify).")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let environment = currentEnvironment()
        let config = try options.load(environment)
        LogOutput.bootstrap(format: config.log.format, level: config.log.level, environment: environment)
        do {
            let sockets = try SocketActivation.take(environment)
            try await Daemon(config: config, environment: environment, sockets: sockets).run()
        } catch let error as DaemonError {
            printError("kioskd: \(error)")
            if case .setup = error { throw ExitCode(exitConfigError) }
            throw ExitCode.failure
        }
    }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Check or show the configuration.", subcommands: [Check.self, Show.self])
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check the config file and KIOSKD_* variables; name every mistake.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let config = try options.load(currentEnvironment())
        for warning in ConfigWarning.check(config) { printError("kioskd: warning: \(warning)") }
        print("configuration OK: \(config.programs.count) program(s), control socket \(config.control.socket), public listener \(config.publicListener.listen)")
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print every key with its effective value and environment variable.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let config = try options.load(currentEnvironment())
        for key in ConfigSchema.keys {
            print("\(key.path) = \(key.current(config))")
            print("    # \(key.doc) (\(key.environmentVariable))")
        }
        print("programs = \(config.programs.map(\.name))    # \(ConfigSchema.environmentVariable(for: ConfigSchema.programsKey)) (YAML)")
    }
}

func printError(_ text: String) {
    var line = Array((text + "\n").utf8)
    _ = write(2, &line, line.count)
}
