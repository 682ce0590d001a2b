import Foundation
import GatewayProtocol

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
    /// From the fleet channel: whether the gateway's broker connection is up, when a status last came,
    /// and the newest verified status (nil when the gateway never published one).
    public var online: Bool?
    public var lastSeenAt: Date?
    public var status: GatewayStatus?
    /// When the vendor revoked the gateway (its requests and broker connections are refused since).
    public var revokedAt: Date?

    public init(id: String, publicKey: String, enrolledAt: Date, devices: [String], planVersion: Int?, planIssuedAt: Date?,
                online: Bool? = nil, lastSeenAt: Date? = nil, status: GatewayStatus? = nil, revokedAt: Date? = nil) {
        self.id = id
        self.publicKey = publicKey
        self.enrolledAt = enrolledAt
        self.devices = devices
        self.planVersion = planVersion
        self.planIssuedAt = planIssuedAt
        self.online = online
        self.lastSeenAt = lastSeenAt
        self.status = status
        self.revokedAt = revokedAt
    }
}

/// `gateway_status`: the newest verified status of each gateway (fleet channel).
public struct GatewayStatusRecord: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var online: Bool
    public var session: Int64
    public var sequence: Int64
    /// The status as JSON (`GatewayStatus`), verified before it was stored.
    public var status: String
    /// When the last status or will of this gateway arrived.
    public var lastSeenAt: Date
}

/// `command_results`: what gateways answered to commands (verified).
public struct StoredCommandResult: Sendable, Codable, Equatable {
    public var id: Int64?
    public var gatewayID: String
    public var commandID: String
    public var command: String
    public var outcome: String
    public var message: String
    public var receivedAt: Date

    public init(id: Int64? = nil, gatewayID: String, commandID: String, command: String, outcome: String, message: String, receivedAt: Date) {
        self.id = id
        self.gatewayID = gatewayID
        self.commandID = commandID
        self.command = command
        self.outcome = outcome
        self.message = message
        self.receivedAt = receivedAt
    }
}

/// `app_releases`: an app version published with `iot-daemon publish-app`. The YAML catalog is the
/// baseline; the newest release of an app overrides its version and run list (see ``AppCatalog``).
/// Rows are never changed or deleted: the table is the history of what was published.
public struct AppRelease: Sendable, Codable, Equatable {
    /// Assigned by the store; orders releases (the highest id of an app is its current release).
    public var id: Int64?
    /// An app name from the configuration's catalog.
    public var app: String
    public var version: String
    /// The app's run list from this release on (stored as a JSON array).
    public var runList: [String]
    public var publishedAt: Date
    /// A rollout's release: plans carry it only where the rollout pinned it, until the rollout completes
    /// and promotes it (see ``Rollout``). `publish-app` releases are never staged.
    public var staged: Bool

    public init(id: Int64? = nil, app: String, version: String, runList: [String], publishedAt: Date, staged: Bool = false) {
        self.id = id
        self.app = app
        self.version = version
        self.runList = runList
        self.publishedAt = publishedAt
        self.staged = staged
    }
}

/// `chef_registrations`: a gateway whose container was registered as a Chef client and node.
///
/// Holds the client's private key, which the daemon hands to the gateway on every bootstrap (the key
/// lives on the Chef server's side only as its public half). Its description never shows the key.
public struct ChefRegistration: Sendable, Codable, Equatable, CustomStringConvertible {
    /// Primary key.
    public var gatewayID: String
    /// The node's (and its client's) name: `<gatewayID>-<vendor>`.
    public var nodeName: String
    /// PKCS#1 PEM of the node's client key. Secret.
    public var clientKeyPEM: String
    public var registeredAt: Date

    public init(gatewayID: String, nodeName: String, clientKeyPEM: String, registeredAt: Date) {
        self.gatewayID = gatewayID
        self.nodeName = nodeName
        self.clientKeyPEM = clientKeyPEM
        self.registeredAt = registeredAt
    }

    public var description: String {
        "ChefRegistration(gatewayID: \(gatewayID), nodeName: \(nodeName), clientKeyPEM: <redacted>, registeredAt: \(registeredAt))"
    }
}

/// `request_nonces`: the nonces of gateways' signed requests, kept until no request carrying them could
/// still pass the timestamp check (see ``VendorStore/claimNonce(gatewayID:nonce:expiresAt:now:)``).
/// Primary key (gatewayID, nonce).
public struct RequestNonce: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var nonce: String
    /// When the row may be pruned.
    public var expiresAt: Date

    public init(gatewayID: String, nonce: String, expiresAt: Date) {
        self.gatewayID = gatewayID
        self.nonce = nonce
        self.expiresAt = expiresAt
    }
}

/// Counts the changes to what a gateway's signed requests are checked against and its plan is composed
/// from, so that a replica may keep both in memory and still never answer from a stale copy.
///
/// Database triggers keep the counts, whoever writes (this replica, another one, the CLI): `gateway` is
/// the gateway row's `generation`, raised by any change to the row's key, revocation or withdrawal and to
/// its devices, plan and rollout pins; `catalog` is raised by any change to the device registry or the
/// app releases. Every nonce claim reads both in its own transaction, after the request arrived: an entry
/// kept under the generation a claim reads is as current as a read made then.
public struct PlanGeneration: Sendable, Hashable {
    public var gateway: Int64
    public var catalog: Int64

    public init(gateway: Int64, catalog: Int64) {
        self.gateway = gateway
        self.catalog = catalog
    }
}

/// An enrolled gateway (not revoked) and its row's generation (see ``PlanGeneration/gateway``).
public struct GatewayRecord: Sendable, Equatable {
    public var gateway: EnrolledGateway
    public var generation: Int64

    public init(gateway: EnrolledGateway, generation: Int64) {
        self.gateway = gateway
        self.generation = generation
    }
}

/// What a gateway's plan is composed from, read in the transaction that stores the plan.
public struct PlanInputs: Sendable, Equatable {
    /// The registered devices the gateway announced, in the order it first announced them, then by serial.
    public var devices: [RegisteredDevice]
    /// The plan issued last, if any.
    public var previous: StoredPlan?
    /// The newest release of each app that is not staged, except where a rollout pinned its staged
    /// release to this gateway (see ``AppCatalog``).
    public var releases: [AppRelease]
    /// The vendor withdrew everything from this gateway (`iot-daemon withdraw`): its plan grants nothing.
    public var withdrawn: Bool
    /// The generation these inputs were read at (in the same snapshot); nil where it was not read.
    public var generation: PlanGeneration?

    public init(devices: [RegisteredDevice], previous: StoredPlan?, releases: [AppRelease], withdrawn: Bool = false,
                generation: PlanGeneration? = nil) {
        self.devices = devices
        self.previous = previous
        self.releases = releases
        self.withdrawn = withdrawn
        self.generation = generation
    }
}
