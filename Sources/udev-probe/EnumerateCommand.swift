import ArgumentParser
import Udev

/// `udev-probe enumerate`: the devices present now.
struct EnumerateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enumerate",
        abstract: "Print every device of the subsystems present now, one JSON object per line.")

    @OptionGroup var subsystems: SubsystemOptions

    @Flag(name: .customLong("include-uninitialized"), help: "Also list devices udev has not initialized yet.")
    var includeUninitialized = false

    func run() async throws {
        try await reportingFailure {
            let out = LineWriter()
            for device in try Udev.enumerate(subsystems: subsystems.subsystems, includeUninitialized: includeUninitialized) {
                try out.write(device)
            }
        }
    }
}
