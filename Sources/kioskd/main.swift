import KioskdDaemon

await KioskdCommand.runMain()
