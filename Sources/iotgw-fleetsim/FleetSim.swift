import ArgumentParser
import AsyncHTTPClient
import FleetSimulation
import Foundation
import GatewayProtocol
import Logging

/// Simulated gateways at fleet scale against a vendor's `iot-daemon` replicas: enroll them, run their
/// announce / plan / bootstrap / report cycle, or hammer one route for throughput.
@main
struct FleetSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotgw-fleetsim",
        abstract: "Simulate N gateways (each with its own Ed25519 key) against a vendor's iot-daemon replicas.",
        subcommands: [EnrollCommand.self, RunCommand.self, LoadCommand.self]
    )
}

/// `--state`, shared by every command.
struct StateOptions: ParsableArguments {
    @Option(name: .long, help: "The folder keeping the simulated gateways' keys (fleet.json, mode 0600).")
    var state: String

    func load() throws -> FleetState {
        guard let state = try FleetState.load(from: state) else {
            throw ValidationError("\(self.state) has no fleet.json: run iotgw-fleetsim enroll first")
        }
        return state
    }
}

/// `--url`, `--concurrency`, `--json`: shared by `run` and `load`.
struct TrafficOptions: ParsableArguments {
    @Option(name: .long, help: "The vendor's iot-daemon URL, or several replicas' comma-separated (gateways are spread round-robin).")
    var url: String

    @Option(name: .long, help: "Requests in flight at once, over all gateways (and connections per replica).")
    var concurrency = 64

    @Option(name: .customLong("timeout-seconds"), help: "Timeout of every request.")
    var timeoutSeconds = 30

    @Flag(name: .long, help: "Print the summary as JSON.")
    var json = false

    func validate() throws {
        _ = try endpoints()
        guard (1...4096).contains(concurrency) else { throw ValidationError("--concurrency must be 1-4096") }
        guard (1...600).contains(timeoutSeconds) else { throw ValidationError("--timeout-seconds must be 1-600") }
    }

    func endpoints() throws -> [VendorEndpoint] {
        do { return try VendorEndpoint.list(url) } catch let error as FleetError { throw ValidationError("--url: \(error.message)") }
    }

    /// Runs `body` with the one HTTP client of the process, shut down afterwards whatever happens.
    func withClient<T: Sendable>(vendor: String, _ body: (FleetClient) async throws -> T) async throws -> T {
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: FleetClient.httpConfiguration(concurrency: concurrency))
        let client = FleetClient(http: http, vendor: vendor, timeout: .seconds(Int64(timeoutSeconds)), logger: logger)
        let result: Result<T, any Error>
        do { result = .success(try await body(client)) } catch { result = .failure(error) }
        try await http.shutdown()
        return try result.get()
    }

    func print(_ summary: FleetSummary) throws {
        if json {
            let encoder = WireJSON.encoder()
            encoder.outputFormatting.insert(.prettyPrinted)
            Swift.print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            Swift.print(summary.text)
        }
    }
}

/// The process's logger: warnings and worse, to standard error.
let logger: Logger = {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .warning
        return handler
    }
    return Logger(label: "iotgw-fleetsim")
}()

/// Status lines go to standard error, so standard output carries only the result.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
