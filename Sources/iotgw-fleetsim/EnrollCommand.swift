import ArgumentParser
import FleetSimulation
import Foundation
import GatewayProtocol
import Logging
import VendorService

/// Makes N gateway keys (kept in the state folder) and enrolls each gateway, with one genuine device, in
/// the vendor's store through the store API, as `iot-daemon enroll-gateway` and `register-device` do.
struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Create N simulated gateways and enroll them, each with a genuine device, in the vendor's store (idempotent).",
        discussion: """
            Keys already in the state folder are kept, so running it again (from any replica's configuration: \
            SQLite or PostgreSQL) enrolls the same gateways again, which changes nothing.
            """
    )

    @OptionGroup var stateOptions: StateOptions

    @Option(name: .long, help: "The vendor daemon's configuration file (YAML): its store is written to.")
    var config: String

    @Option(name: .long, help: "How many gateways the fleet has (at least).")
    var gateways: Int

    @Option(name: .long, help: "The model of every gateway's device (default: the configuration's first model).")
    var model: String?

    func validate() throws {
        guard (1...100_000).contains(gateways) else { throw ValidationError("--gateways must be 1-100000") }
    }

    func run() async throws {
        let configuration = try VendorConfiguration.load(from: config)
        guard let model = model.map({ configuration.model(named: $0) }) ?? configuration.models.first else {
            throw ValidationError("model \(model ?? "") is not in \(config) (models: \(configuration.models.map(\.name).joined(separator: ", ")))")
        }
        let vendorKey = Keys.encode(try SigningKeyFile.load(path: configuration.signingKey).publicKey)
        var state = try FleetState.load(from: stateOptions.state) ?? FleetState(vendor: configuration.vendor, vendorKey: vendorKey, gateways: [])
        guard state.vendor == configuration.vendor, state.vendorKey == vendorKey else {
            throw ValidationError("\(stateOptions.state) holds a fleet of vendor \(state.vendor) (key \(state.vendorKey)), "
                + "not of \(configuration.vendor) with this signing key: use another --state")
        }
        state = state.growing(to: gateways, model: model.name, usbVendorID: model.vendorID, usbProductID: model.productID)
        // Keys first: a store failure below must not lose gateways that may already be enrolled.
        try state.save(to: stateOptions.state)
        let now = Date()
        try await withVendorStore(configuration, create: false, logger: logger) { store in
            for gateway in state.gateways {
                try await store.registerDevice(RegisteredDevice(serial: gateway.device.serial, vendorID: gateway.device.vendorID,
                                                                productID: gateway.device.productID, model: gateway.model, registeredAt: now))
                try await store.enrollGateway(EnrolledGateway(id: gateway.id, publicKey: gateway.publicKey, enrolledAt: now))
            }
        }
        // Broker certificates for the gateways' own keys, as `iot-daemon enroll-gateway` issues them (kept when present).
        if let fleet = configuration.fleet, fleet.issueCommand != nil, let directory = fleet.certificateDirectory {
            var issued = 0
            for gateway in state.gateways
            where !FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent("\(gateway.id).crt")) {
                _ = try GatewayCertificates.issue(gatewayID: gateway.id, publicKey: gateway.publicKey, settings: fleet)
                issued += 1
            }
            printError("broker certificates: \(issued) issued, \(state.gateways.count - issued) kept (\(directory))")
        }
        printError("enrolled \(state.gateways.count) gateways with vendor \(state.vendor), one \(model.name) device each (state \(stateOptions.state))")
    }
}
