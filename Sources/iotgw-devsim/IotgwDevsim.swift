// iotgw-devsim: simulated USB hotplug for demos and benchmarks (there is no USB bus in these VMs).
//
//   iotgw-devsim --control FIFO -- COMMAND [ARGS...]
//
// Creates a umockdev testbed, runs COMMAND under it (its libudev sees the simulated devices), and
// reads commands, one per line, from FIFO (see `discussion` below). Exit status: COMMAND's, 2 if
// the simulator could not start, 64 usage error.
import ArgumentParser
import Foundation

/// A synchronous `ParsableCommand`, unlike the other tools: the simulator polls the FIFO and runs
/// the main run loop (where its signal sources fire) on the main thread until COMMAND exits, which
/// an async `run()` would do on a cooperative thread, blocking it.
@main
struct IotgwDevsim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotgw-devsim",
        abstract: "Run a command under a umockdev testbed and plug simulated USB serial adapters on request.",
        usage: "iotgw-devsim --control FIFO -- COMMAND [ARGS...]",
        discussion: """
            Creates the testbed, runs COMMAND under it (its libudev sees the simulated devices), and reads \
            commands, one per line, from FIFO (created 0600, replaced if it exists, removed at exit):

              plug VID PID SERIAL DEVNODE
                  add a USB serial adapter whose tty is DEVNODE (a real char node is
                  created there if missing, so it can be passed into LXD)
              unplug SERIAL
                  remove it (remove uevents for tty, interface and device)
              quit
                  stop COMMAND (SIGTERM) and exit with its status

            Each handled command is acknowledged on stdout: "ok plug SERIAL DEVNODE", "ok unplug SERIAL" or \
            "error ...". SIGTERM and SIGINT are passed on to COMMAND as SIGTERM. Exits with COMMAND's status; \
            2 if the FIFO, the testbed or COMMAND could not be set up.
            """)

    @Option(help: ArgumentHelp("The FIFO to create and read commands from.", valueName: "FIFO"))
    var control: String

    @Argument(parsing: .postTerminator, help: ArgumentHelp("The command to run under the testbed, and its arguments.",
                                                           valueName: "COMMAND"))
    var command: [String] = []

    func validate() throws {
        guard !control.isEmpty else { throw ValidationError("--control needs a FIFO path") }
        guard let program = command.first, !program.isEmpty else {
            throw ValidationError("missing COMMAND after --: iotgw-devsim --control FIFO -- COMMAND [ARGS...]")
        }
    }

    func run() throws {
        let simulator: DeviceSimulator
        do {
            simulator = try DeviceSimulator(control: control, command: command)
        } catch {
            FileHandle.standardError.write(Data("iotgw-devsim: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let status = simulator.run()
        if status != 0 { throw ExitCode(status) }
    }
}
