import ArgumentParser
import Display
import Supervision

struct LockdownCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockdown", abstract: "Show the kiosk lockdown.", subcommands: [GrabListCommand.self])
}

/// `kioskd lockdown list`: the combinations each session's key grabber holds, with the
/// configuration's additions and removals applied, and what each would do in Chromium.
struct GrabListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Print the grab list: combination, purpose, what it prevents.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let config = try options.load(currentEnvironment())
        let entries = try GrabList.configured(add: config.sessions.lockdownAdd, remove: config.sessions.lockdownRemove)
        let width = entries.map { $0.combo.description.count }.max() ?? 0
        for entry in entries {
            let combo = entry.combo.description
            let purpose = entry.purpose.rawValue
            print(combo + String(repeating: " ", count: width - combo.count + 2) + purpose + String(repeating: " ", count: max(2, 12 - purpose.count)) + entry.prevents)
        }
    }
}
