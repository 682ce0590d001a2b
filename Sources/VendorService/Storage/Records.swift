import Foundation

// One Codable struct per table. Property names are the column names; the SQLite store adds the GRDB
// conformances, so another backend can reuse these values unchanged.

/// `devices`: the vendor's manufacturing registry, the devices it knows to be genuine.
public struct RegisteredDevice: Sendable, Codable, Equatable {
    /// USB serial number; primary key.
    public var serial: String
    /// 4 lowercase hex digits.
    public var vendorID: String
    /// 4 lowercase hex digits.
    public var productID: String
    /// A model name from the configuration.
    public var model: String
    public var registeredAt: Date

    public init(serial: String, vendorID: String, productID: String, model: String, registeredAt: Date) {
        self.serial = serial
        self.vendorID = vendorID.lowercased()
        self.productID = productID.lowercased()
        self.model = model
        self.registeredAt = registeredAt
    }
}

/// `gateways`: gateways enrolled with this vendor, with the key their requests are signed with.
public struct EnrolledGateway: Sendable, Codable, Equatable {
    /// `gw-` + the first 16 hex digits of the SHA-256 of the public key; primary key.
    public var id: String
    /// Base64 of the raw 32-byte Ed25519 public key.
    public var publicKey: String
    public var enrolledAt: Date

    public init(id: String, publicKey: String, enrolledAt: Date) {
        self.id = id
        self.publicKey = publicKey
        self.enrolledAt = enrolledAt
    }
}

/// `gateway_devices`: a genuine device a gateway has announced. Primary key (gatewayID, serial).
public struct GatewayDevice: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var serial: String
    public var firstSeenAt: Date

    public init(gatewayID: String, serial: String, firstSeenAt: Date) {
        self.gatewayID = gatewayID
        self.serial = serial
        self.firstSeenAt = firstSeenAt
    }
}

/// `plans`: the last plan issued to each gateway.
public struct StoredPlan: Sendable, Codable, Equatable {
    /// Primary key.
    public var gatewayID: String
    public var version: Int
    /// SHA-256 hex of the plan's content (everything but version and times), see `PlanComposer`.
    public var contentHash: String
    /// The `SignedPlan` exactly as answered (WireJSON).
    public var signedJSON: String
    public var issuedAt: Date

    public init(gatewayID: String, version: Int, contentHash: String, signedJSON: String, issuedAt: Date) {
        self.gatewayID = gatewayID
        self.version = version
        self.contentHash = contentHash
        self.signedJSON = signedJSON
        self.issuedAt = issuedAt
    }
}

/// `reports`: what gateways said they did with a plan.
public struct StoredReport: Sendable, Codable, Equatable {
    /// Assigned by the store.
    public var id: Int64?
    public var gatewayID: String
    public var planVersion: Int
    /// A `ProvisioningReport.Outcome` raw value.
    public var outcome: String
    /// The `ProvisioningReport` as WireJSON.
    public var json: String
    public var receivedAt: Date

    public init(id: Int64? = nil, gatewayID: String, planVersion: Int, outcome: String, json: String, receivedAt: Date) {
        self.id = id
        self.gatewayID = gatewayID
        self.planVersion = planVersion
        self.outcome = outcome
        self.json = json
        self.receivedAt = receivedAt
    }
}

/// A gateway as operators list it: the enrollment, the devices it announced and its current plan.
public struct GatewaySummary: Sendable, Codable, Equatable {
    public var id: String
    public var publicKey: String
    public var enrolledAt: Date
    /// Serials of the devices it announced, sorted.
    public var devices: [String]
    public var planVersion: Int?
    public var planIssuedAt: Date?

    public init(id: String, publicKey: String, enrolledAt: Date, devices: [String], planVersion: Int?, planIssuedAt: Date?) {
        self.id = id
        self.publicKey = publicKey
        self.enrolledAt = enrolledAt
        self.devices = devices
        self.planVersion = planVersion
        self.planIssuedAt = planIssuedAt
    }
}
