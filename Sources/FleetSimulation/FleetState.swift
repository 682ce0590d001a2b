import Crypto
import Foundation
import GatewayProtocol

/// One simulated gateway: its own Ed25519 identity and the one genuine device it announces.
public struct SimulatedGateway: Sendable, Codable, Equatable {
    /// `gw-<16 hex>`, derived from the key.
    public var id: String
    /// Base64 of the raw 32-byte private key.
    public var privateKey: String
    public var publicKey: String
    public var device: DeviceIdentity
    /// The vendor's model name the device is registered as.
    public var model: String

    public init(identity: GatewayIdentity, device: DeviceIdentity, model: String) {
        id = identity.id
        privateKey = identity.privateKeyBase64
        publicKey = identity.publicKey
        self.device = device
        self.model = model
    }

    /// The identity requests are signed with.
    public func identity() throws -> GatewayIdentity { GatewayIdentity(key: try Keys.decodePrivate(privateKey)) }

    /// The serial a simulated gateway's device gets: unique per gateway key, valid as `Fields.serial`.
    public static func serial(forGatewayID id: String) -> String { "SIM-" + id.dropFirst(3) }
}

/// What `iotgw-fleetsim enroll` keeps so that runs can be repeated with the same gateways: the vendor they
/// are enrolled with, its plan-signing public key, and every gateway's key (so the file is 0600).
public struct FleetState: Sendable, Codable, Equatable {
    public var vendor: String
    /// Base64 Ed25519 public key plans and bundles must verify with.
    public var vendorKey: String
    public var gateways: [SimulatedGateway]

    public init(vendor: String, vendorKey: String, gateways: [SimulatedGateway]) {
        self.vendor = vendor
        self.vendorKey = vendorKey
        self.gateways = gateways
    }

    public static let fileName = "fleet.json"

    public static func url(in directory: String) -> URL { URL(fileURLWithPath: directory).appendingPathComponent(fileName) }

    /// The state in `directory`, nil when there is none yet.
    public static func load(from directory: String) throws -> FleetState? {
        let url = url(in: directory)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do { return try WireJSON.decoder().decode(FleetState.self, from: try Data(contentsOf: url)) } catch {
            throw FleetError(.badState, "\(url.path) is not a fleet state file: \(error)")
        }
    }

    /// Writes the state atomically, readable by its owner only (it holds private keys).
    public func save(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let url = Self.url(in: directory)
        let temporary = url.appendingPathExtension("tmp")
        let data = try WireJSON.encoder().encode(self)
        guard FileManager.default.createFile(atPath: temporary.path, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw FleetError(.badState, "cannot write \(temporary.path)")
        }
        // rename(2) replaces the old file atomically (Foundation's replaceItemAt does not on Linux).
        guard rename(temporary.path, url.path) == 0 else { throw FleetError(.badState, "cannot replace \(url.path) (errno \(errno))") }
    }

    /// This state with at least `count` gateways: the existing ones kept (same keys), new ones made for
    /// the rest, each with a device of the model `model` (`usbVendorID`:`usbProductID`).
    public func growing(to count: Int, model: String, usbVendorID: String, usbProductID: String) -> FleetState {
        var state = self
        while state.gateways.count < count {
            let identity = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            let device = DeviceIdentity(vendorID: usbVendorID, productID: usbProductID, serial: SimulatedGateway.serial(forGatewayID: identity.id),
                                        manufacturer: "iotgw-fleetsim", product: model, subsystem: "tty")
            state.gateways.append(SimulatedGateway(identity: identity, device: device, model: model))
        }
        return state
    }
}

/// Why the simulator stopped or a simulated exchange failed. Matchable by `code`.
public struct FleetError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// The state directory has no usable `fleet.json`.
        public static let badState = Code("badState")
        /// A URL or option cannot be used.
        public static let badOption = Code("badOption")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
