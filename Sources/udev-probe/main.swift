// udev-probe: show what the gateway's udev layer sees. Diagnostic tool for owners, and the
// vehicle for the Udev integration tests (which run it under a umockdev testbed).
//
//   udev-probe enumerate [--subsystem S]... [--include-uninitialized]
//   udev-probe monitor   [--subsystem S]... [--count N] [--timeout SECONDS]
//
// Output: one JSON object per line (sorted keys), written unbuffered. `monitor` first prints
// {"ready":true} once its socket is bound, so a caller knows events from then on are caught.
import Foundation
import Udev

let usage = """
    usage: udev-probe enumerate [--subsystem S]... [--include-uninitialized]
           udev-probe monitor   [--subsystem S]... [--count N] [--timeout SECONDS]
    Prints one JSON object per device (enumerate) or per uevent (monitor) per line.
    Default subsystems: usb tty. monitor prints {"ready":true} first; --count exits after N events,
    --timeout exits with status 3 if they have not arrived in time.
    """

struct Options {
    var command: String
    var subsystems: [String] = []
    var includeUninitialized = false
    var count: Int?
    var timeout: Double?
}

struct UsageError: Error { var message: String }

func parse(_ args: [String]) throws(UsageError) -> Options {
    guard let command = args.first, ["enumerate", "monitor"].contains(command) else {
        throw UsageError(message: args.first.map { "unknown command \($0)" } ?? "missing command")
    }
    var options = Options(command: command)
    var rest = args.dropFirst()
    func value(_ flag: String) throws(UsageError) -> String {
        guard let v = rest.popFirst() else { throw UsageError(message: "\(flag) needs a value") }
        return v
    }
    while let arg = rest.popFirst() {
        switch arg {
        case "--subsystem":
            options.subsystems.append(try value(arg))
        case "--include-uninitialized" where command == "enumerate":
            options.includeUninitialized = true
        case "--count" where command == "monitor":
            guard let n = Int(try value(arg)), n > 0 else { throw UsageError(message: "--count needs a positive integer") }
            options.count = n
        case "--timeout" where command == "monitor":
            guard let t = Double(try value(arg)), t > 0 else { throw UsageError(message: "--timeout needs positive seconds") }
            options.timeout = t
        default:
            throw UsageError(message: "unknown option \(arg) for \(command)")
        }
    }
    if options.subsystems.isEmpty { options.subsystems = ["usb", "tty"] }
    return options
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

struct Ready: Encodable { var ready = true }
struct Timeout: Error {}

func run(_ options: Options) async throws {
    let out = LineWriter()
    switch options.command {
    case "enumerate":
        for device in try Udev.enumerate(subsystems: options.subsystems, includeUninitialized: options.includeUninitialized) {
            try out.write(device)
        }
    default:
        let monitor = try UdevMonitor(subsystems: options.subsystems)
        try out.write(Ready())
        let count = options.count
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var seen = 0
                for try await event in monitor.events() {
                    try out.write(event)
                    seen += 1
                    if let count, seen >= count { return }
                }
            }
            if let timeout = options.timeout {
                group.addTask {
                    try await Task.sleep(for: .seconds(timeout))
                    throw Timeout()
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

let status: Int32
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first.map({ ["-h", "--help", "help"].contains($0) }) == true {
    print(usage)
    exit(0)
}
do {
    try await run(try parse(arguments))
    status = 0
} catch let e as UsageError {
    FileHandle.standardError.write(Data("udev-probe: \(e.message)\n\(usage)\n".utf8))
    status = 64
} catch is Timeout {
    FileHandle.standardError.write(Data("udev-probe: timed out waiting for events\n".utf8))
    status = 3
} catch {
    FileHandle.standardError.write(Data("udev-probe: \(error)\n".utf8))
    status = 1
}
exit(status)
