import ArgumentParser
import FleetSimulation

extension LoadRoute: ExpressibleByArgument {}

/// Hammers one route for throughput: signed `POST /v1/plan` (a fresh nonce each) or `GET /v1/health`.
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Send K requests on one route (plan: signed POST /v1/plan; hello: GET /v1/health) and print requests/s, p50, p99, errors."
    )

    @OptionGroup var stateOptions: StateOptions
    @OptionGroup var traffic: TrafficOptions

    @Option(name: .long, help: "plan or hello.")
    var route: LoadRoute

    @Option(name: .long, help: "How many requests in all.")
    var requests: Int

    func validate() throws {
        guard (1...10_000_000).contains(requests) else { throw ValidationError("--requests must be 1-10000000") }
    }

    func run() async throws {
        let state = try stateOptions.load()
        let summary = try await traffic.withClient(vendor: state.vendor) { client in
            try await FleetSimulator(state: state, client: client, endpoints: try traffic.endpoints(), logger: logger)
                .load(route: route, requests: requests, concurrency: traffic.concurrency)
        }
        try traffic.print(summary)
        if summary.errorCount > 0 { throw ExitCode.failure }
    }
}
