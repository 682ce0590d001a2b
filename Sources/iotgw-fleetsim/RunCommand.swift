import ArgumentParser
import FleetSimulation
import Foundation
import GatewayProtocol
import VendorService

/// Every gateway announces, verifies its signed plan, bootstraps, reports, then polls and delivers each new
/// plan version; prints what was measured. Exits 1 when there was any error or version regression.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the simulated gateways' announce / plan / bootstrap / report cycle against the vendor's replicas."
    )

    @OptionGroup var stateOptions: StateOptions
    @OptionGroup var traffic: TrafficOptions

    @Option(name: .customLong("vendor-key"), help: "The vendor's plan-signing public key, base64 (default: --config's, else the one enroll saved).")
    var vendorKey: String?

    @Option(name: .long, help: "The vendor daemon's configuration, to read the plan-signing key from.")
    var config: String?

    @Option(name: .long, help: "Run for this many seconds, or until SIGTERM or SIGINT (each gateway finishes the exchange it is in; the summary is printed).")
    var duration: Double?

    @Option(name: .long, help: "Poll the plan this many times per gateway after announcing (default 1 without --duration).")
    var rounds: Int?

    @Option(name: .customLong("poll-seconds"), help: "Seconds between two polls of one gateway (jittered ±20 %).")
    var pollSeconds = 5.0

    @Option(name: .customLong("ramp-seconds"), help: "Gateways start spread over this many seconds (default: --poll-seconds).")
    var rampSeconds: Double?

    @Option(name: .customLong("failure-rate"), help: "Share (0-1) of the gateways, spread evenly over the fleet, whose deliveries are reported failed or rolled-back.")
    var failureRate = 0.0

    @Option(name: .customLong("fail-app"), help: "NAME@VERSION: only plans carrying this release fail.")
    var failApp: String?

    @Option(name: .long, help: "Use only the first N gateways of the state.")
    var gateways: Int?

    @Option(name: .long, help: "Also write every gateway's plans and reports, in order, to this JSON file.")
    var traces: String?

    @Flag(name: .long, help: "Every gateway also keeps a fleet channel to the broker in --config's fleet settings (certificates from enroll).")
    var mqtt = false

    func validate() throws {
        guard duration == nil || rounds == nil else { throw ValidationError("give --duration or --rounds, not both") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
        if let rounds, rounds < 0 { throw ValidationError("--rounds must be 0 or more") }
        guard pollSeconds >= 0, (rampSeconds ?? 0) >= 0 else { throw ValidationError("--poll-seconds and --ramp-seconds must be 0 or more") }
        guard (0...1).contains(failureRate) else { throw ValidationError("--failure-rate must be between 0 and 1") }
        if let failApp { _ = try FleetRunOptions.AppRelease(parsing: failApp) }
        if let gateways, gateways < 1 { throw ValidationError("--gateways must be positive") }
        if mqtt, config == nil { throw ValidationError("--mqtt needs --config (its fleet settings name the broker)") }
    }

    func run() async throws {
        var state = try stateOptions.load()
        if let gateways { state.gateways = Array(state.gateways.prefix(gateways)) }
        var key = vendorKey
        let configuration = try config.map { try VendorConfiguration.load(from: $0) }
        if key == nil, let configuration {
            key = Keys.encode(try SigningKeyFile.load(path: configuration.signingKey).publicKey)
        }
        var broker: FleetBroker?
        if mqtt {
            guard let fleet = configuration?.fleet, let directory = fleet.certificateDirectory else {
                throw ValidationError("--mqtt: \(config ?? "") has no fleet section with a certificateDirectory")
            }
            broker = FleetBroker(host: fleet.host, port: fleet.port, caFile: fleet.caCertificate, certificateDirectory: directory,
                                 keyDirectory: (stateOptions.state as NSString).appendingPathComponent("tls"))
        }
        // With --duration: stopped when it is up, or at the first SIGTERM or SIGINT (a benchmark ends a run once what
        // it waits for happened).
        let signal = duration.map { _ in Self.stopOnSignals() }
        let options = FleetRunOptions(
            stop: signal.map { .signal($0) } ?? .rounds(rounds ?? 1),
            pollInterval: .milliseconds(Int64(pollSeconds * 1000)), ramp: rampSeconds.map { .milliseconds(Int64($0 * 1000)) },
            failureRate: failureRate, failApp: try failApp.map(FleetRunOptions.AppRelease.init(parsing:)), concurrency: traffic.concurrency,
            broker: broker
        )
        let result = try await traffic.withClient(vendor: state.vendor) { client in
            let simulator = try FleetSimulator(state: state, client: client, endpoints: try traffic.endpoints(), vendorKey: key, logger: logger)
            return try await withThrowingTaskGroup(of: FleetRunResult?.self) { group in
                if let signal, let duration {
                    group.addTask {
                        try? await Task.sleep(for: .milliseconds(Int64(duration * 1000)))
                        signal.stop()
                        return nil
                    }
                }
                group.addTask { try await simulator.run(options) }
                while let next = try await group.next() {
                    if let result = next {
                        group.cancelAll()
                        return result
                    }
                }
                throw ExitCode.failure  // unreachable: the simulator's task always answers
            }
        }
        if let traces {
            let encoder = WireJSON.encoder()
            try encoder.encode(result.traces).write(to: URL(fileURLWithPath: traces))
        }
        try traffic.print(result.summary)
        if result.summary.errorCount > 0 || result.summary.versionRegressions > 0 { throw ExitCode.failure }
    }

    /// A stop signal given at the first SIGTERM or SIGINT.
    static func stopOnSignals() -> FleetRunOptions.StopSignal {
        let signal = FleetRunOptions.StopSignal()
        for number in [SIGTERM, SIGINT] {
            Foundation.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { signal.stop() }
            source.resume()
            _ = Unmanaged.passRetained(source as AnyObject)  // kept for the process's life
        }
        return signal
    }
}
