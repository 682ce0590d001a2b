import ArgumentParser
import Foundation
import GatewayProtocol
import VendorService

/// Adds a manufactured device to the registry of genuine devices.
struct RegisterDeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register-device",
        abstract: "Register a genuine device (serial, USB IDs, model) in the manufacturing registry."
    )

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "The device's USB serial number.")
    var serial: String

    @Option(name: .customLong("vendor-id"), help: "USB vendor ID, 4 hex digits (default: the model's).")
    var vendorID: String?

    @Option(name: .customLong("product-id"), help: "USB product ID, 4 hex digits (default: the model's).")
    var productID: String?

    @Option(name: .long, help: "A model name from the configuration.")
    var model: String

    func validate() throws {
        // The rule gateways check plans with: a serial they would refuse is not registered.
        guard Fields.serial.isValid(serial) else { throw ValidationError("--serial must be \(Fields.serial.form)") }
        for (name, value) in [("--vendor-id", vendorID), ("--product-id", productID)] {
            if let value, !Fields.usbID.isValid(value.lowercased()) {
                throw ValidationError("\(name) must be 4 hex digits, got \(Fields.quote(value))")
            }
        }
    }

    func run() async throws {
        let configuration = try options.load()
        guard let model = configuration.model(named: model) else {
            let known = configuration.models.map(\.name).joined(separator: ", ")
            throw refusal("model \"\(self.model)\" is not in \(options.config) (models: \(known.isEmpty ? "none" : known))")
        }
        let vendorID = (vendorID ?? model.vendorID).lowercased()
        let productID = (productID ?? model.productID).lowercased()
        guard vendorID == model.vendorID, productID == model.productID else {
            throw refusal("model \(model.name) is \(model.vendorID):\(model.productID), not \(vendorID):\(productID)")
        }
        do {
            let device = RegisteredDevice(serial: serial, vendorID: vendorID, productID: productID, model: model.name, registeredAt: Date())
            try await options.withStore(configuration) { try await $0.registerDevice(device) }
        } catch let error as StoreError where error.code == .conflict {
            throw refusal(error.message)
        }
        printError("registered device \(serial) (\(model.name), \(vendorID):\(productID))")
    }
}

/// Enrolls a gateway so its signed requests are accepted.
struct EnrollGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll-gateway",
        abstract: "Enroll a gateway by its id and public key (both shown by the gateway)."
    )

    @OptionGroup var options: ConfigOptions

    @Option(name: .customLong("gateway-id"), help: "The gateway's id, gw-<16 hex digits>.")
    var gatewayID: String

    @Option(name: .customLong("public-key"), help: "The gateway's Ed25519 public key, base64 of 32 bytes.")
    var publicKey: String

    func validate() throws {
        let key: String
        do { key = Keys.keyID(try Keys.decodePublic(publicKey)) } catch {
            throw ValidationError("--public-key must be base64 of a 32-byte Ed25519 public key")
        }
        // A gateway's id is derived from its key, so a mismatch means a copy-paste error.
        guard gatewayID == "gw-" + key else {
            throw ValidationError("--gateway-id \(gatewayID) does not belong to this public key (its id is gw-\(key))")
        }
    }

    func run() async throws {
        let configuration = try options.load()
        do {
            let gateway = EnrolledGateway(id: gatewayID, publicKey: publicKey, enrolledAt: Date())
            try await options.withStore(configuration) { try await $0.enrollGateway(gateway) }
        } catch let error as StoreError where error.code == .conflict {
            throw refusal(error.message)
        }
        printError("enrolled gateway \(gatewayID)")
        // The broker certificate is for the gateway's own key: nothing secret is made or handed over.
        if let fleet = configuration.fleet, let path = try GatewayCertificates.issue(gatewayID: gatewayID, publicKey: publicKey, settings: fleet) {
            printError("issued its broker certificate \(path) (CN \(gatewayID)); the gateway owner sets it as fleet.certificateFile")
            print(path)
        }
    }
}
