import Crypto
import Foundation

/// Why a plan or request was refused. Matchable by `code`.
public struct ProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        public static let tooLarge = Code("tooLarge")
        public static let malformed = Code("malformed")
        public static let unsupportedSchema = Code("unsupportedSchema")
        public static let badSignature = Code("badSignature")
        public static let unknownKey = Code("unknownKey")
        public static let wrongGateway = Code("wrongGateway")
        public static let wrongVendor = Code("wrongVendor")
        public static let foreignContainer = Code("foreignContainer")
        public static let expired = Code("expired")
        public static let versionRollback = Code("versionRollback")
        public static let invalidLimits = Code("invalidLimits")
        public static let invalidField = Code("invalidField")
        public static let invalidKey = Code("invalidKey")
        public static let staleRequest = Code("staleRequest")
        /// A plan reuses a version the gateway holds with different content.
        public static let versionReuse = Code("versionReuse")
        /// A request nonce was seen before (a replay).
        public static let replayedRequest = Code("replayedRequest")
        /// A request or bundle is meant for someone else (another vendor, host or plan version).
        public static let wrongAudience = Code("wrongAudience")
        /// A bootstrap bundle's archive does not match the digest it was signed with.
        public static let digestMismatch = Code("digestMismatch")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// A vendor as the gateway trusts it: its id, its plan-signing key (from the owner's configuration)
/// and this gateway's id, which everything the vendor signs must name.
struct TrustedVendor: Sendable {
    var vendor: String
    var gatewayID: String
    // Raw bytes: swift-crypto's key types are not Sendable on Linux.
    let rawKey: Data
    var key: Curve25519.Signing.PublicKey {
        // Invariant: rawKey came from a valid key's rawRepresentation in init.
        try! Curve25519.Signing.PublicKey(rawRepresentation: rawKey)
    }

    /// The key's id, computed once (every plan a gateway receives is checked against it).
    let keyID: String

    init(vendor: String, key: Curve25519.Signing.PublicKey, gatewayID: String) {
        self.vendor = vendor
        rawKey = key.rawRepresentation
        keyID = Keys.keyID(key)
        self.gatewayID = gatewayID
    }

    /// Checks that `payload` was signed by this vendor's key (with a domain tag, or none for plans).
    func verify(keyID: String, signature: String, payload: Data, domain: String?, what: String) throws {
        guard keyID == self.keyID else {
            throw ProtocolError(.unknownKey, "\(what) signed with key \(Fields.quote(keyID)), vendor \(vendor) uses \(self.keyID)")
        }
        guard let sig = Data(base64Encoded: signature),
              domain.map({ Envelope.isValid(sig, payload: payload, domain: $0, key: key) }) ?? key.isValidSignature(sig, for: payload) else {
            throw ProtocolError(.badSignature, "\(what) signature does not verify with vendor \(vendor)'s key")
        }
    }
}

/// The plan a gateway holds from a vendor: the newest version it accepted and the SHA-256 of that
/// plan's payload bytes. A plan is accepted only with a higher version, or the same version and the
/// very same bytes (a repeated answer).
public struct PlanHeld: Sendable, Equatable {
    public var version: Int
    public var payloadSHA256: String?

    public init(version: Int, payloadSHA256: String?) {
        self.version = version
        self.payloadSHA256 = payloadSHA256
    }

    public static let none = PlanHeld(version: 0, payloadSHA256: nil)
}

/// Checks a signed plan before anything changes. Pure: no I/O, time injected.
public struct PlanValidator: Sendable {
    /// Largest signed plan accepted, in bytes of JSON.
    public static let maxPlanBytes = 64 * 1024
    public static let maxDevices = 32
    public static let maxApps = 16
    public static let maxRunListItems = 32
    /// How far in the future `issuedAt` may be (clock skew) and how long a plan may be valid.
    public static let allowedSkew: TimeInterval = 300
    public static let maxLifetime: TimeInterval = 366 * 24 * 3600

    let trust: TrustedVendor
    public var vendor: String { trust.vendor }
    public var gatewayID: String { trust.gatewayID }

    public init(vendor: String, vendorKey: Curve25519.Signing.PublicKey, gatewayID: String) {
        trust = TrustedVendor(vendor: vendor, key: vendorKey, gatewayID: gatewayID)
    }

    /// Decodes the raw response body (size-checked) and validates it against the plan held.
    public func validate(rawBody: Data, held: PlanHeld, now: Date) throws -> (plan: ProvisioningPlan, payload: Data) {
        guard rawBody.count <= Self.maxPlanBytes else {
            throw ProtocolError(.tooLarge, "plan is \(rawBody.count) bytes, limit \(Self.maxPlanBytes)")
        }
        let signed: SignedPlan
        do { signed = try WireJSON.decoder().decode(SignedPlan.self, from: rawBody) } catch {
            throw ProtocolError(.malformed, "not a signed plan: \(Self.describe(error))")
        }
        return try validate(signed, held: held, now: now)
    }

    /// As ``validate(rawBody:held:now:)`` with only a version held (tests, tools).
    public func validate(rawBody: Data, lastVersion: Int, now: Date) throws -> (plan: ProvisioningPlan, payload: Data) {
        try validate(rawBody: rawBody, held: PlanHeld(version: lastVersion, payloadSHA256: nil), now: now)
    }

    /// Signature first (nothing unsigned is even parsed as a plan), then every field.
    public func validate(_ signed: SignedPlan, held: PlanHeld, now: Date) throws -> (plan: ProvisioningPlan, payload: Data) {
        guard let payload = Data(base64Encoded: signed.payload), payload.count <= Self.maxPlanBytes else {
            throw ProtocolError(.malformed, "plan payload is not base64 or too large")
        }
        try trust.verify(keyID: signed.keyID, signature: signed.signature, payload: payload, domain: nil, what: "plan")
        let plan: ProvisioningPlan
        do { plan = try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload) } catch {
            throw ProtocolError(.malformed, "plan does not match schema: \(Self.describe(error))")
        }
        try check(plan, now: now)
        try checkVersion(plan.version, payloadSHA256: Keys.sha256Hex(payload), held: held)
        return (plan, payload)
    }

    /// Versions strictly increase; the same version is accepted only as the very same bytes.
    func checkVersion(_ version: Int, payloadSHA256: String, held: PlanHeld) throws {
        guard version > 0, version >= held.version else {
            throw ProtocolError(.versionRollback, "plan version \(version) is older than \(held.version)")
        }
        if version == held.version, let sha = held.payloadSHA256, sha != payloadSHA256 {
            throw ProtocolError(.versionReuse, "plan version \(version) was already received with other content")
        }
    }

    /// Every field of the plan against ``Fields`` and this gateway's identity.
    func check(_ plan: ProvisioningPlan, now: Date) throws {
        guard plan.schema == ProvisioningPlan.currentSchema else {
            throw ProtocolError(.unsupportedSchema, "plan schema \(plan.schema), this gateway understands \(ProvisioningPlan.currentSchema)")
        }
        guard plan.vendor == vendor else { throw ProtocolError(.wrongVendor, "plan is for vendor \(Fields.quote(plan.vendor)), asked \(vendor)") }
        guard plan.gatewayID == gatewayID else {
            throw ProtocolError(.wrongGateway, "plan is for gateway \(Fields.quote(plan.gatewayID)), this is \(gatewayID)")
        }
        guard plan.expiresAt > now else { throw ProtocolError(.expired, "plan expired at \(plan.expiresAt)") }
        guard plan.issuedAt <= now.addingTimeInterval(Self.allowedSkew),
              plan.expiresAt.timeIntervalSince(plan.issuedAt) <= Self.maxLifetime else {
            throw ProtocolError(.invalidField, "plan issuedAt/expiresAt are in the future or more than a year apart")
        }
        let expected = ProvisioningPlan.containerName(forVendor: vendor)
        guard plan.container.name == expected else {
            throw ProtocolError(.foreignContainer, "vendor \(vendor) may only use container \(expected), plan names \(Fields.quote(plan.container.name))")
        }
        let l = plan.container.limits
        guard l.cpus >= 1, l.memoryMiB >= 16, l.diskMiB >= 64, l.processes >= 8 else {
            throw ProtocolError(.invalidLimits, "limits below minimum (cpus>=1, memory>=16MiB, disk>=64MiB, processes>=8)")
        }
        guard l.cpus <= 1024, l.memoryMiB <= 1 << 24, l.diskMiB <= 1 << 30, l.processes <= 1 << 22 else {
            throw ProtocolError(.invalidLimits, "limits are beyond any real gateway")
        }
        try Fields.name.named("image alias").check(plan.container.image.alias, at: "container.image.alias")
        try Fields.sha256.named("image fingerprint").check(plan.container.image.fingerprint, at: "container.image.fingerprint")
        if let url = plan.container.image.url { try Fields.url.named("image URL").check(url, at: "container.image.url") }
        guard plan.devices.count <= Self.maxDevices, plan.apps.count <= Self.maxApps else {
            throw ProtocolError(.invalidField, "plan lists more than \(Self.maxDevices) devices or \(Self.maxApps) apps")
        }
        var serials = Set<String>(), paths = Set<String>()
        for (i, d) in plan.devices.enumerated() {
            let at = "devices[\(i)]"
            try Fields.serial.check(d.serial, at: at + ".serial")
            guard serials.insert(d.serial).inserted else { throw ProtocolError(.invalidField, "\(at): device \(d.serial) listed twice") }
            try Fields.usbID.named("vendor ID").check(d.vendorID, at: at + ".vendorID")
            try Fields.usbID.named("product ID").check(d.productID, at: at + ".productID")
            switch d.kind {
            case .unixChar:
                guard let p = d.path else { throw ProtocolError(.invalidField, "\(at): a unix-char device needs a path under /dev/") }
                try Fields.containerDevicePath.check(p, at: at + ".path")
                guard paths.insert(p).inserted else { throw ProtocolError(.invalidField, "\(at): path \(p) is used twice") }
            case .usb:
                // Raw USB appears at its own /dev/bus/usb/BBB/DDD: a vendor does not choose where.
                guard d.path == nil else { throw ProtocolError(.invalidField, "\(at): a usb device takes no path") }
            }
        }
        var names = Set<String>()
        for (i, a) in plan.apps.enumerated() {
            let at = "apps[\(i)]"
            try Fields.name.named("app name").check(a.name, at: at + ".name")
            guard names.insert(a.name).inserted else { throw ProtocolError(.invalidField, "\(at): app \(a.name) listed twice") }
            try Fields.version.check(a.version, at: at + ".version")
            guard (1...Self.maxRunListItems).contains(a.runList.count) else {
                throw ProtocolError(.invalidField, "\(at): app \(a.name) needs 1-\(Self.maxRunListItems) run-list items")
            }
            for (j, item) in a.runList.enumerated() { try Fields.runListItem.check(item, at: "\(at).runList[\(j)]") }
            if let p = a.inspecProfile { try Fields.name.named("InSpec profile").check(p, at: at + ".inspecProfile") }
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let k, _): return "missing field \(Fields.quote(k.stringValue))"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type at \(Fields.escaped(c.codingPath.map(\.stringValue).joined(separator: "."), max: 128))"
        case DecodingError.dataCorrupted(let c):
            return "invalid value at \(Fields.escaped(c.codingPath.map(\.stringValue).joined(separator: "."), max: 128))"
        default: return "undecodable"
        }
    }
}
