import Crypto
import Foundation
import GatewayProtocol
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
@testable import VendorService

/// This repository's root (for its `cookbooks/`).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The host HummingbirdTesting's clients (router and live) send as the request's authority.
let testHost = "localhost"

/// A configuration like the documented example, with paths in `folder`. Gateways reach it as ``testHost``.
func makeConfiguration(folder: URL, port: Int = 0) -> VendorConfiguration {
    VendorConfiguration(
        vendor: "acme",
        listen: .init(host: "127.0.0.1", port: port),
        publicHosts: [testHost],
        database: folder.appendingPathComponent("acme.sqlite").path,
        signingKey: folder.appendingPathComponent("acme.key").path,
        planTTLSeconds: 86_400,
        image: ImageRef(alias: "iotgw-debian12", fingerprint: String(repeating: "ab", count: 32)),
        container: .init(cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300, network: .nat),
        models: [
            .init(name: "thermo-v1", vendorID: "0403", productID: "6001", devicePath: "/dev/ttyUSB0", kind: .unixChar, apps: ["thermo-agent"]),
            .init(name: "hygro-v2", vendorID: "10c4", productID: "ea60", devicePath: nil, kind: .usb, apps: ["hygro-agent", "thermo-agent"]),
        ],
        apps: [
            AppSpec(name: "thermo-agent", version: "1.0.0", runList: ["recipe[thermo_agent]"], inspecProfile: "thermo-agent"),
            AppSpec(name: "hygro-agent", version: "2.1.0", runList: ["recipe[hygro_agent]"]),
        ]
    )
}

/// A fresh folder, removed after `body`.
func withTemporaryFolder<T>(_ body: (URL) async throws -> T) async throws -> T {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vendor-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    return try await body(folder)
}

/// A daemon on a temp SQLite file with an enrolled gateway and a fixed clock.
struct Harness: Sendable {
    static let now = Date(timeIntervalSince1970: 1_750_000_000)

    let configuration: VendorConfiguration
    let store: SQLiteVendorStore
    let signer: PlanSigner
    let gateway: GatewayIdentity

    /// - Parameter configure: changes to the documented-example configuration (a `chef` section, say).
    static func with<T>(configure: (inout VendorConfiguration) throws -> Void = { _ in },
                        _ body: (Harness) async throws -> T) async throws -> T {
        try await withTemporaryFolder { folder in
            var configuration = makeConfiguration(folder: folder)
            try configure(&configuration)
            try configuration.validate()
            let store = try SQLiteVendorStore(path: configuration.database, create: true)
            let signer = try SigningKeyFile.loadOrCreate(path: configuration.signingKey).signer
            let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await store.enrollGateway(EnrolledGateway(id: gateway.id, publicKey: gateway.publicKey, enrolledAt: now))
            let harness = Harness(configuration: configuration, store: store, signer: signer, gateway: gateway)
            return try await body(harness)
        }
    }

    func register(_ serial: String, model: String = "thermo-v1") async throws {
        let m = try #require(configuration.model(named: model))
        try await store.registerDevice(RegisteredDevice(serial: serial, vendorID: m.vendorID, productID: m.productID, model: m.name,
                                                        registeredAt: Self.now))
    }

    static var logger: Logger {
        var logger = Logger(label: "vendor-tests")
        logger.logLevel = .warning
        return logger
    }

    /// - Parameter now: the service's clock (default: the fixed ``now``).
    /// - Parameter metrics: where the service counts (default: a fresh registry of its own).
    func service(provisioner: any Provisioner = NoopProvisioner(), now: Date = Harness.now,
                 metrics: VendorMetrics = VendorMetrics()) -> ProvisioningService {
        ProvisioningService(configuration: configuration, store: store, signer: signer, provisioner: provisioner, now: { now },
                            metrics: metrics)
    }

    func app(provisioner: any Provisioner = NoopProvisioner(), now: Date = Harness.now,
             metrics: VendorMetrics = VendorMetrics()) -> some ApplicationProtocol {
        buildApplication(configuration: configuration, service: service(provisioner: provisioner, now: now, metrics: metrics),
                         logger: Self.logger)
    }

    /// Checks a signed bootstrap answer as the gateway does, for this harness's gateway and `planVersion`.
    func verifiedBootstrap(_ response: TestResponse, planVersion: Int, now: Date = Harness.now) throws -> VerifiedBootstrap {
        try BundleValidator(vendor: configuration.vendor, vendorKey: signer.publicKey, gatewayID: gateway.id)
            .validate(rawBody: Data(response.body.readableBytesView), planVersion: planVersion,
                      expectedNode: ChefProvisioner.nodeName(gatewayID: gateway.id, vendor: configuration.vendor), now: now)
    }

    func validator(for gateway: GatewayIdentity? = nil) -> PlanValidator {
        PlanValidator(vendor: configuration.vendor, vendorKey: signer.publicKey, gatewayID: (gateway ?? self.gateway).id)
    }

    static func announcement(_ gateway: GatewayIdentity, serial: String, vendorID: String = "0403", productID: String = "6001",
                             currentPlanVersion: Int = 0) throws -> Data {
        try WireJSON.encoder().encode(Announcement(
            gatewayID: gateway.id,
            device: DeviceIdentity(vendorID: vendorID, productID: productID, serial: serial, manufacturer: "FTDI", product: "Thermo",
                                   subsystem: "tty"),
            currentPlanVersion: currentPlanVersion
        ))
    }
}

/// The signature headers a gateway adds, plus the JSON content type: signed for `vendor` at `host` (default:
/// the harness's vendor at ``testHost``) with a fresh nonce unless one is given.
func signedHeaders(_ gateway: GatewayIdentity, path: String, body: Data, now: Date = Harness.now, vendor: String = "acme",
                   host: String = testHost, nonce: String = RequestSignature.makeNonce()) throws -> HTTPFields {
    var fields = HTTPFields()
    for (name, value) in try RequestSignature.headers(gatewayID: gateway.id, key: gateway.key, method: "POST", path: path,
                                                      audience: .init(vendor: vendor, host: host), body: body, now: now, nonce: nonce) {
        fields[try #require(HTTPField.Name(name))] = value
    }
    fields[.contentType] = "application/json"
    return fields
}

func errorCode(_ response: TestResponse) -> String? {
    (try? WireJSON.decoder().decode(ErrorBody.self, from: Data(response.body.readableBytesView)))?.error.code
}

/// POSTs `value` as WireJSON to `path`, signed by `gateway` (default: the harness's enrolled one) for the
/// harness's vendor at ``testHost``, at `now`.
func signedPost(_ client: some TestClientProtocol, _ h: Harness, _ path: String, _ value: some Encodable,
                from gateway: GatewayIdentity? = nil, now: Date = Harness.now) async throws -> TestResponse {
    try await signedPost(client, path, body: try WireJSON.encoder().encode(value), from: gateway ?? h.gateway, vendor: h.configuration.vendor,
                         now: now)
}

/// POSTs `body` to `path`, signed by `gateway` for `vendor` at ``testHost``.
func signedPost(_ client: some TestClientProtocol, _ path: String, body: Data, from gateway: GatewayIdentity, vendor: String = "acme",
                now: Date = Harness.now) async throws -> TestResponse {
    try await client.execute(uri: path, method: .post, headers: try signedHeaders(gateway, path: path, body: body, now: now, vendor: vendor),
                             body: ByteBuffer(bytes: body))
}

/// Decodes a WireJSON answer.
func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
    try WireJSON.decoder().decode(type, from: Data(response.body.readableBytesView))
}
