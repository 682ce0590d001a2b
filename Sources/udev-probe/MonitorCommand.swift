import ArgumentParser
import Udev

/// `udev-probe monitor`: uevents as they arrive.
struct MonitorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor",
        abstract: "Print each uevent of the subsystems, one JSON object per line.",
        discussion: """
            Prints {"ready":true} first, once the monitor socket is bound: every event from then on is caught. \
            Runs until interrupted, or until --count events; with --timeout it exits with status 3 if they \
            have not arrived in time.
            """)

    @OptionGroup var subsystems: SubsystemOptions

    // .unconditional: "--count -1" reaches validate() and its message, as any value did before.
    @Option(parsing: .unconditional, help: ArgumentHelp("Exit after N events.", valueName: "N"))
    var count: Int?

    @Option(parsing: .unconditional, help: ArgumentHelp("Exit with status 3 if the events have not arrived within SECONDS.", valueName: "SECONDS"))
    var timeout: Double?

    func validate() throws {
        if let count, count <= 0 { throw ValidationError("--count needs a positive integer") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout needs positive seconds") }
    }

    private struct Ready: Encodable { var ready = true }
    private struct Timeout: Error {}

    func run() async throws {
        let (count, timeout) = (count, timeout)
        try await reportingFailure {
            let out = LineWriter()
            let monitor = try UdevMonitor(subsystems: subsystems.subsystems)
            try out.write(Ready())
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        var seen = 0
                        for try await event in monitor.events() {
                            try out.write(event)
                            seen += 1
                            if let count, seen >= count { return }
                        }
                    }
                    if let timeout {
                        group.addTask {
                            try await Task.sleep(for: .seconds(timeout))
                            throw Timeout()
                        }
                    }
                    try await group.next()
                    group.cancelAll()
                }
            } catch is Timeout {
                printError("udev-probe: timed out waiting for events")
                throw ExitCode(3)
            }
        }
    }
}
