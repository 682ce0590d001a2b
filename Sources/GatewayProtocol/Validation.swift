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
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// Checks a signed plan before anything changes. Pure: no I/O, time injected.
public struct PlanValidator: Sendable {
    /// Largest signed plan accepted, in bytes of JSON.
    public static let maxPlanBytes = 64 * 1024

    public var vendor: String
    public var gatewayID: String
    // Raw bytes: swift-crypto's key types are not Sendable on Linux.
    let rawVendorKey: Data
    var vendorKey: Curve25519.Signing.PublicKey {
        // Invariant: rawVendorKey came from a valid key's rawRepresentation in init.
        try! Curve25519.Signing.PublicKey(rawRepresentation: rawVendorKey)
    }

    public init(vendor: String, vendorKey: Curve25519.Signing.PublicKey, gatewayID: String) {
        self.vendor = vendor
        self.rawVendorKey = vendorKey.rawRepresentation
        self.gatewayID = gatewayID
    }

    /// Decodes the raw response body (size-checked) and validates it.
    public func validate(rawBody: Data, lastVersion: Int, now: Date) throws -> (plan: ProvisioningPlan, payload: Data) {
        guard rawBody.count <= Self.maxPlanBytes else {
            throw ProtocolError(.tooLarge, "plan is \(rawBody.count) bytes, limit \(Self.maxPlanBytes)")
        }
        let signed: SignedPlan
        do { signed = try WireJSON.decoder().decode(SignedPlan.self, from: rawBody) } catch {
            throw ProtocolError(.malformed, "not a signed plan: \(Self.describe(error))")
        }
        return try validate(signed, lastVersion: lastVersion, now: now)
    }

    /// Signature first (nothing unsigned is even parsed as a plan), then every field.
    public func validate(_ signed: SignedPlan, lastVersion: Int, now: Date) throws -> (plan: ProvisioningPlan, payload: Data) {
        guard let payload = Data(base64Encoded: signed.payload), payload.count <= Self.maxPlanBytes else {
            throw ProtocolError(.malformed, "plan payload is not base64 or too large")
        }
        guard signed.keyID == Keys.keyID(vendorKey) else {
            throw ProtocolError(.unknownKey, "plan signed with key \(signed.keyID), vendor \(vendor) uses \(Keys.keyID(vendorKey))")
        }
        guard let sig = Data(base64Encoded: signed.signature), vendorKey.isValidSignature(sig, for: payload) else {
            throw ProtocolError(.badSignature, "plan signature does not verify with vendor \(vendor)'s key")
        }
        let plan: ProvisioningPlan
        do { plan = try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload) } catch {
            throw ProtocolError(.malformed, "plan does not match schema: \(Self.describe(error))")
        }
        try check(plan, lastVersion: lastVersion, now: now)
        return (plan, payload)
    }

    func check(_ plan: ProvisioningPlan, lastVersion: Int, now: Date) throws {
        guard plan.schema == ProvisioningPlan.currentSchema else {
            throw ProtocolError(.unsupportedSchema, "plan schema \(plan.schema), this gateway understands \(ProvisioningPlan.currentSchema)")
        }
        guard plan.vendor == vendor else { throw ProtocolError(.wrongVendor, "plan is for vendor \(plan.vendor), asked \(vendor)") }
        guard plan.gatewayID == gatewayID else {
            throw ProtocolError(.wrongGateway, "plan is for gateway \(plan.gatewayID), this is \(gatewayID)")
        }
        guard plan.expiresAt > now else { throw ProtocolError(.expired, "plan expired at \(plan.expiresAt)") }
        guard plan.version >= lastVersion, plan.version > 0 else {
            throw ProtocolError(.versionRollback, "plan version \(plan.version) is older than \(lastVersion)")
        }
        let expected = ProvisioningPlan.containerName(forVendor: vendor)
        guard plan.container.name == expected else {
            throw ProtocolError(.foreignContainer, "vendor \(vendor) may only use container \(expected), plan names \(plan.container.name)")
        }
        let l = plan.container.limits
        guard l.cpus >= 1, l.memoryMiB >= 16, l.diskMiB >= 64, l.processes >= 8 else {
            throw ProtocolError(.invalidLimits, "limits below minimum (cpus>=1, memory>=16MiB, disk>=64MiB, processes>=8)")
        }
        try Self.checkToken(plan.container.image.alias, "image alias")
        guard plan.container.image.fingerprint.count == 64, plan.container.image.fingerprint.allSatisfy(\.isHexDigit) else {
            throw ProtocolError(.invalidField, "image fingerprint must be 64 hex digits")
        }
        var serials = Set<String>()
        for d in plan.devices {
            guard serials.insert(d.serial).inserted else { throw ProtocolError(.invalidField, "device \(d.serial) listed twice") }
            guard Self.isHex4(d.vendorID), Self.isHex4(d.productID) else {
                throw ProtocolError(.invalidField, "device \(d.serial): vendor/product IDs must be 4 hex digits")
            }
            if d.kind == .unixChar {
                guard let p = d.path, p.hasPrefix("/dev/"), !p.contains(".."), p.count < 128 else {
                    throw ProtocolError(.invalidField, "device \(d.serial): path must be under /dev/")
                }
            }
        }
        for a in plan.apps {
            try Self.checkToken(a.name, "app name")
            guard !a.runList.isEmpty else { throw ProtocolError(.invalidField, "app \(a.name) has an empty run list") }
        }
    }

    static func isHex4(_ s: String) -> Bool { s.count == 4 && s.allSatisfy(\.isHexDigit) }

    static func checkToken(_ s: String, _ what: String) throws {
        guard !s.isEmpty, s.count <= 64, s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw ProtocolError(.invalidField, "\(what) \"\(s)\" must be 1-64 of [A-Za-z0-9._-]")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let k, _): return "missing field \(k.stringValue)"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.dataCorrupted(let c): return c.debugDescription
        default: return "\(error)"
        }
    }
}
