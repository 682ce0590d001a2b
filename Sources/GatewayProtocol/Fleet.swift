import Crypto
import Foundation

// The fleet channel: what gateways and their vendor exchange over the vendor's MQTT broker.
//
// Every gateway keeps one outbound connection per vendor broker (gateways sit behind NAT). Topics live
// under one versioned prefix, one subtree per gateway; the broker's ACL confines each gateway to its
// own subtree (read plan and commands, write status, results and logs). Every payload is signed: plans
// and commands by the vendor's key, status, results and logs by the gateway's key, each with its own
// domain tag so a signature made for one kind of document never passes as another's.

/// Topic names of the fleet channel (README "Fleet channel").
public enum FleetTopics {
    public static let prefix = "iotgw/v1"

    /// Vendor → gateway, retained: the signed plan (the same bytes `GET /v1/plan` answers with).
    public static func plan(_ gatewayID: String) -> String { "\(prefix)/\(gatewayID)/plan" }
    /// Vendor → gateway, QoS 1, not retained: signed ``FleetCommand``s.
    public static func commands(_ gatewayID: String) -> String { "\(prefix)/\(gatewayID)/commands" }
    /// Gateway → vendor, retained: the signed ``GatewayStatus`` (the last will marks it offline).
    public static func status(_ gatewayID: String) -> String { "\(prefix)/\(gatewayID)/status" }
    /// Gateway → vendor: signed ``CommandResult``s.
    public static func results(_ gatewayID: String) -> String { "\(prefix)/\(gatewayID)/results" }
    /// Gateway → vendor: signed ``LogBatch``es of the vendor's own container journal.
    public static func logs(_ gatewayID: String) -> String { "\(prefix)/\(gatewayID)/logs" }

    /// What the vendor's control plane subscribes to.
    public static let allStatus = "\(prefix)/+/status"
    public static let allResults = "\(prefix)/+/results"
    public static let allLogs = "\(prefix)/+/logs"

    /// The gateway id and leaf of a topic under the prefix, if it is one of ours and the id is well formed.
    public static func parse(_ topic: String) -> (gatewayID: String, leaf: String)? {
        let parts = topic.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, "\(parts[0])/\(parts[1])" == prefix, Fields.gatewayID.isValid(parts[2]) else { return nil }
        return (parts[2], parts[3])
    }
}

extension Envelope {
    public static let statusDomain = "iotgw-status-v1"
    public static let commandDomain = "iotgw-command-v1"
    public static let resultDomain = "iotgw-result-v1"
    public static let logsDomain = "iotgw-logs-v1"
}

/// A signed fleet document: the exact payload bytes, an Ed25519 signature over the domain tag and
/// those bytes, and the signing key's id.
public struct SignedDocument: Sendable, Codable, Equatable {
    public var payload: String
    public var signature: String
    public var keyID: String

    /// Largest signed document accepted on the fleet channel, in bytes of JSON.
    public static let maxBytes = 256 * 1024

    public static func sign<T: Encodable>(_ value: T, domain: String, key: Curve25519.Signing.PrivateKey) throws -> Data {
        let bytes = try WireJSON.encoder().encode(value)
        let sig = try Envelope.sign(bytes, domain: domain, key: key)
        let doc = SignedDocument(payload: bytes.base64EncodedString(), signature: sig.base64EncodedString(), keyID: Keys.keyID(key.publicKey))
        return try WireJSON.encoder().encode(doc)
    }

    /// Size, shape, key id and signature, then the payload decoded. Nothing of the payload is trusted before.
    public static func open<T: Decodable>(_ raw: some DataProtocol, as: T.Type, domain: String, key: Curve25519.Signing.PublicKey,
                                          what: String) throws -> T {
        guard raw.count <= maxBytes else { throw ProtocolError(.tooLarge, "\(what) is \(raw.count) bytes, limit \(maxBytes)") }
        let doc: SignedDocument
        do { doc = try WireJSON.decoder().decode(SignedDocument.self, from: Data(raw)) } catch {
            throw ProtocolError(.malformed, "\(what) is not a signed document: \(PlanValidator.describe(error))")
        }
        guard doc.keyID == Keys.keyID(key) else {
            throw ProtocolError(.unknownKey, "\(what) signed with key \(Fields.quote(doc.keyID)), expected \(Keys.keyID(key))")
        }
        guard let payload = Data(base64Encoded: doc.payload), let sig = Data(base64Encoded: doc.signature),
              Envelope.isValid(sig, payload: payload, domain: domain, key: key) else {
            throw ProtocolError(.badSignature, "\(what) signature does not verify")
        }
        do { return try WireJSON.decoder().decode(T.self, from: payload) } catch {
            throw ProtocolError(.malformed, "\(what) does not match its schema: \(PlanValidator.describe(error))")
        }
    }
}

// MARK: - Status (gateway → vendor)

/// What a gateway tells one vendor about that vendor's slice of it, and nothing else: its container,
/// its devices, its plan versions. Signed with the gateway's key.
public struct GatewayStatus: Sendable, Codable, Equatable {
    public struct Container: Sendable, Codable, Equatable {
        public var name: String
        /// LXD's status ("Running", "Stopped"), or "Absent".
        public var state: String
        public var cpuSeconds: Double?
        public var memoryBytes: Int64?
        public var diskBytes: Int64?
        public var processes: Int64?

        public init(name: String, state: String, cpuSeconds: Double? = nil, memoryBytes: Int64? = nil, diskBytes: Int64? = nil,
                    processes: Int64? = nil) {
            self.name = name
            self.state = state
            self.cpuSeconds = cpuSeconds
            self.memoryBytes = memoryBytes
            self.diskBytes = diskBytes
            self.processes = processes
        }
    }

    /// Plan versions as far as each got on this gateway.
    public struct PlanVersions: Sendable, Codable, Equatable {
        public var received: Int?
        public var approved: Int?
        public var applied: Int?
        public var delivered: Int?
        /// Waiting for the owner's decision.
        public var pending: Int?

        public init(received: Int? = nil, approved: Int? = nil, applied: Int? = nil, delivered: Int? = nil, pending: Int? = nil) {
            self.received = received
            self.approved = approved
            self.applied = applied
            self.delivered = delivered
            self.pending = pending
        }
    }

    public struct LastDelivery: Sendable, Codable, Equatable {
        public var planVersion: Int
        /// `applied`, `rolledBack` or `failed`.
        public var result: String
        public var failingControls: [String]
        public var at: Date

        public init(planVersion: Int, result: String, failingControls: [String], at: Date) {
            self.planVersion = planVersion
            self.result = result
            self.failingControls = failingControls
            self.at = at
        }
    }

    public var gatewayID: String
    public var vendor: String
    /// False only in the last will, which the broker publishes when the connection drops.
    public var online: Bool
    /// The connection this status belongs to (ms since 1970 at connect) and its order within it: a
    /// vendor keeps the highest (session, sequence), and a will only of the session it belongs to.
    public var session: Int64
    public var sequence: Int64
    public var publishedAt: Date
    public var agentVersion: String
    public var uptimeSeconds: Int64
    public var container: Container?
    /// Serials of this vendor's devices attached to its container now.
    public var devices: [String]
    public var plan: PlanVersions
    public var lastDelivery: LastDelivery?
    /// Why the gateway refused this vendor's last plan or bundle, if it did (escaped, cut).
    public var rejection: String?

    public init(gatewayID: String, vendor: String, online: Bool, session: Int64, sequence: Int64, publishedAt: Date, agentVersion: String,
                uptimeSeconds: Int64, container: Container?, devices: [String], plan: PlanVersions, lastDelivery: LastDelivery?,
                rejection: String?) {
        self.gatewayID = gatewayID
        self.vendor = vendor
        self.online = online
        self.session = session
        self.sequence = sequence
        self.publishedAt = publishedAt
        self.agentVersion = agentVersion
        self.uptimeSeconds = uptimeSeconds
        self.container = container
        self.devices = devices
        self.plan = plan
        self.lastDelivery = lastDelivery
        self.rejection = rejection
    }

    public static let maxDevices = 64
    public static let maxControls = 64

    /// What the vendor checks after the signature: the status is about the gateway whose topic it came
    /// on and about this vendor, and every text field follows its rule.
    public func validate(gatewayID expected: String, vendor expectedVendor: String) throws {
        guard gatewayID == expected else { throw ProtocolError(.wrongGateway, "status names gateway \(Fields.quote(gatewayID))") }
        guard vendor == expectedVendor else { throw ProtocolError(.wrongVendor, "status is for vendor \(Fields.quote(vendor))") }
        guard devices.count <= Self.maxDevices, devices.allSatisfy(Fields.serial.isValid) else {
            throw ProtocolError(.invalidField, "status devices must be at most \(Self.maxDevices) serials")
        }
        if let c = container {
            guard Fields.name.isValid(c.name), Fields.name.isValid(c.state) else { throw ProtocolError(.invalidField, "status container fields") }
        }
        if let d = lastDelivery {
            guard Fields.name.isValid(d.result), d.failingControls.count <= Self.maxControls,
                  d.failingControls.allSatisfy({ Fields.isShowable($0, max: 256) }) else {
                throw ProtocolError(.invalidField, "status delivery fields")
            }
        }
        guard Fields.version.isValid(agentVersion), rejection.map({ Fields.isShowable($0, max: 1024) }) ?? true else {
            throw ProtocolError(.invalidField, "status text fields")
        }
    }

    /// Whether this status replaces `current` (the newest kept): newer session, or same session and
    /// later in it. A last will replaces only the status of its own session.
    public func supersedes(_ current: GatewayStatus?) -> Bool {
        guard let current else { return true }
        if !online { return session >= current.session && current.online }
        return (session, sequence) > (current.session, current.sequence)
    }
}

// MARK: - Commands (vendor → gateway)

/// A command a vendor sends one gateway. Signed by the vendor's key; bound to the gateway and vendor,
/// valid for a short time, and never accepted twice (the gateway remembers ids until they expire).
public struct FleetCommand: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// Publish the status now.
        case status
        /// Fetch the plan now (over HTTP).
        case resync
        /// Run the current plan's delivery again (converge and validate).
        case redeliver
        /// Restart the vendor's own container.
        case restartContainer = "restart-container"
        /// Relay the container's journal for `seconds`.
        case logsStart = "logs-start"
        case logsStop = "logs-stop"
    }

    /// Unique per command (16-64 base64url characters): the replay key.
    public var id: String
    public var gatewayID: String
    public var vendor: String
    public var command: Kind
    /// `logs-start`: how long to relay (the owner's cap applies).
    public var seconds: Int?
    public var issuedAt: Date
    public var expiresAt: Date

    public init(id: String = RequestSignature.makeNonce(), gatewayID: String, vendor: String, command: Kind, seconds: Int? = nil,
                issuedAt: Date, expiresAt: Date) {
        self.id = id
        self.gatewayID = gatewayID
        self.vendor = vendor
        self.command = command
        self.seconds = seconds
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
    }

    /// The longest a command may be valid.
    public static let maxLifetime: TimeInterval = 3600
}

/// Checks a signed command before anything happens. Pure: replay memory is the caller's (it stores
/// accepted ids until their expiry).
public struct CommandValidator: Sendable {
    let trust: TrustedVendor
    public var vendor: String { trust.vendor }
    public var gatewayID: String { trust.gatewayID }

    public init(vendor: String, vendorKey: Curve25519.Signing.PublicKey, gatewayID: String) {
        trust = TrustedVendor(vendor: vendor, key: vendorKey, gatewayID: gatewayID)
    }

    public func validate(_ raw: some DataProtocol, now: Date) throws -> FleetCommand {
        let c = try SignedDocument.open(raw, as: FleetCommand.self, domain: Envelope.commandDomain, key: trust.key, what: "command")
        guard Fields.nonce.isValid(c.id) else { throw ProtocolError(.invalidField, "command id must be \(Fields.nonce.form)") }
        guard c.vendor == vendor else { throw ProtocolError(.wrongVendor, "command is for vendor \(Fields.quote(c.vendor))") }
        guard c.gatewayID == gatewayID else { throw ProtocolError(.wrongGateway, "command is for gateway \(Fields.quote(c.gatewayID))") }
        guard c.issuedAt <= now.addingTimeInterval(RequestSignature.allowedSkew) else {
            throw ProtocolError(.staleRequest, "command issued in the future (\(c.issuedAt))")
        }
        guard c.expiresAt > now else { throw ProtocolError(.expired, "command expired at \(c.expiresAt)") }
        guard c.expiresAt.timeIntervalSince(c.issuedAt) <= FleetCommand.maxLifetime else {
            throw ProtocolError(.invalidField, "command valid for more than \(Int(FleetCommand.maxLifetime)) s")
        }
        if c.command == .logsStart {
            guard let s = c.seconds, (1...86_400).contains(s) else { throw ProtocolError(.invalidField, "logs-start needs seconds 1-86400") }
        }
        return c
    }
}

/// What the gateway did with a command. Signed by the gateway's key.
public struct CommandResult: Sendable, Codable, Equatable {
    public enum Outcome: String, Sendable, Codable {
        case done
        /// Not accepted: bad signature, expired, replayed, not allowed by the owner.
        case refused
        /// Accepted, but doing it failed.
        case failed
    }

    /// The command's id; for a command too malformed to read, "-".
    public var id: String
    public var gatewayID: String
    public var vendor: String
    public var command: String
    public var outcome: Outcome
    public var message: String
    public var at: Date

    public init(id: String, gatewayID: String, vendor: String, command: String, outcome: Outcome, message: String, at: Date) {
        self.id = id
        self.gatewayID = gatewayID
        self.vendor = vendor
        self.command = command
        self.outcome = outcome
        self.message = message
        self.at = at
    }
}

/// A slice of the vendor's container journal. Signed by the gateway's key.
public struct LogBatch: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var vendor: String
    /// The `logs-start` command this relay answers.
    public var session: String
    public var sequence: Int
    /// Journal lines, escaped.
    public var lines: [String]
    /// Lines left out by the owner's rate limit since the last batch.
    public var dropped: Int
    /// The relay ended with this batch (time up, `logs-stop`, the owner, or disconnect).
    public var final: Bool
    public var reason: String?
    public var at: Date

    public init(gatewayID: String, vendor: String, session: String, sequence: Int, lines: [String], dropped: Int, final: Bool,
                reason: String? = nil, at: Date) {
        self.gatewayID = gatewayID
        self.vendor = vendor
        self.session = session
        self.sequence = sequence
        self.lines = lines
        self.dropped = dropped
        self.final = final
        self.reason = reason
        self.at = at
    }
}

extension PlanSigner {
    /// Signs a fleet document (a command) with the vendor's key under `domain`.
    public func signDocument<T: Encodable>(_ value: T, domain: String) throws -> Data {
        try SignedDocument.sign(value, domain: domain, key: key)
    }
}
