// udev-probe: show what the gateway's udev layer sees. Diagnostic tool for owners, and the
// vehicle for the Udev integration tests (which run it under a umockdev testbed).
//
//   udev-probe enumerate [--subsystem S]... [--include-uninitialized]
//   udev-probe monitor   [--subsystem S]... [--count N] [--timeout SECONDS]
//
// Output: one JSON object per line (sorted keys), written unbuffered. `monitor` first prints
// {"ready":true} once its socket is bound, so a caller knows events from then on are caught.
// Exit status: 0 done, 1 udev failed, 3 monitor timed out, 64 usage error.
import ArgumentParser
import Foundation

@main
struct UdevProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udev-probe",
        abstract: "Print what libudev sees, one JSON object per line.",
        discussion: """
            Prints one JSON object (sorted keys) per device (enumerate) or per uevent (monitor) per line, \
            unbuffered. Default subsystems: usb tty.
            """,
        subcommands: [EnumerateCommand.self, MonitorCommand.self])

    /// Only reached without a command: a usage error, like an unknown command. (Not `validate()`:
    /// argument-parser validates every command on the path, this one also when a subcommand follows.)
    func run() async throws {
        throw ValidationError("missing command: enumerate or monitor")
    }
}

/// `--subsystem`, taken by both commands.
struct SubsystemOptions: ParsableArguments {
    @Option(name: .customLong("subsystem"), help: ArgumentHelp("A udev subsystem to include; repeat for more (default: usb tty).",
                                                               valueName: "S"))
    var given: [String] = []

    var subsystems: [String] { given.isEmpty ? ["usb", "tty"] : given }
}

/// Writes straight to fd 1 (no stdio buffer), so a reader sees each line as soon as it is printed.
struct LineWriter: Sendable {
    let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    func write<T: Encodable>(_ value: T) throws {
        var data = try encoder.encode(value)
        data.append(0x0A)
        FileHandle.standardOutput.write(data)
    }
}

/// Runs a command's work; a failure is reported on stderr as `udev-probe: ...` and ends the
/// process with status 1.
func reportingFailure(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let e as ExitCode {
        throw e
    } catch {
        printError("udev-probe: \(error)")
        throw ExitCode.failure
    }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
