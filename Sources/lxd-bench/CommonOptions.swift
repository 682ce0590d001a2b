import ArgumentParser
import LXD
import Logging

/// Options both modes take, as one `@OptionGroup`.
struct CommonOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Local image alias.", valueName: "ALIAS"))
    var image = "iotgw-busybox"

    // .unconditional here and on the counts: "--margin -1" reaches validate() and its message, as
    // any value did before.
    @Option(parsing: .unconditional, help: ArgumentHelp("""
        Noise margin: fail only where the ratio client/cli exceeds 1 + FRACTION and its 95% bootstrap \
        interval lies above 1 (0.10 = 10%).
        """, valueName: "FRACTION"))
    var margin = 0.10

    @Option(help: ArgumentHelp("LXD unix socket (default: LXD_SOCKET, LXD_DIR, snap, /var/lib/lxd).", valueName: "PATH"))
    var socket: String?

    @Option(help: ArgumentHelp("lxc binary (default: first lxc on PATH).", valueName: "PATH"))
    var lxc: String?

    @Flag(help: "Print the result as JSON instead of a table.")
    var json = false

    @Flag(name: .shortAndLong, help: "Log every request of the client at debug level (stderr).")
    var verbose = false

    func validate() throws {
        guard margin >= 0, margin < 10 else { throw ValidationError("--margin needs a fraction >= 0 (0.10 = 10%)") }
    }

    /// What both modes need first: the logger (debug with `--verbose`), the LXD client and the lxc
    /// binary. Nil after printing why as `<name>: ...`; the mode then exits with status 3.
    func open(as name: String) -> (logger: Logger, client: LXDClient, lxcPath: String)? {
        var logger = Logger(label: "lxd-bench")
        logger.logLevel = verbose ? .debug : .warning
        let client: LXDClient
        do {
            client = try LXDClient(socketPath: socket, logger: logger)
        } catch {
            stderrLine("\(name): \(error)")
            return nil
        }
        guard let lxcPath = CommandRunner.locate(lxc ?? "lxc") else {
            stderrLine("\(name): lxc not found (\(lxc ?? "PATH")); install lxd-client or pass --lxc")
            return nil
        }
        return (logger, client, lxcPath)
    }
}

/// Rejects `value` of `option` unless it lies in `range`.
func requireInRange(_ value: Int, _ range: ClosedRange<Int>, option: String) throws {
    guard range.contains(value) else {
        throw ValidationError("\(option) needs an integer in \(range.lowerBound)...\(range.upperBound)")
    }
}
