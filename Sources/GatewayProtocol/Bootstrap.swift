import Crypto
import Foundation

/// `POST /v1/plan`: the gateway polls its current plan (gateways are behind NAT, so updates are
/// pulled, never pushed). Answered with a `SignedPlan` like an announcement.
public struct PlanRequest: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var currentPlanVersion: Int

    public init(gatewayID: String, currentPlanVersion: Int) {
        self.gatewayID = gatewayID
        self.currentPlanVersion = currentPlanVersion
    }
}

/// `POST /v1/bootstrap`: what the container needs to converge the vendor's apps. Kept out of the
/// signed plan because it carries a secret (the node's Chef client key) and the plan is stored and
/// shown to the owner; it travels only in answer to a signed gateway request.
public struct BootstrapRequest: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var planVersion: Int

    public init(gatewayID: String, planVersion: Int) {
        self.gatewayID = gatewayID
        self.planVersion = planVersion
    }
}

/// What a gateway's container needs to converge the vendor's apps, bound to one gateway, vendor and
/// plan version, with an expiry. Travels inside a ``SignedBootstrap`` (signed by the vendor's key).
public struct BootstrapBundle: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// Chef: the vendor registered a client and node on its Chef server.
        case chef
        /// Ansible: the vendor ships a playbook that the gateway converges locally in the container.
        case ansible
        /// The vendor delivers no apps through a provisioner.
        case none
    }
    public var kind: Kind
    /// The gateway this bundle is for.
    public var gatewayID: String
    public var vendor: String
    /// The plan version whose apps this bundle converges.
    public var planVersion: Int
    public var expiresAt: Date
    /// e.g. `http://chef.acme.example:4545` or `https://chef.example/organizations/acme`.
    public var chefServerURL: String?
    public var nodeName: String?
    /// PEM of the node's client key (the container's `/etc/chef/client.pem`).
    public var clientKeyPEM: String?
    /// The node's run list on the Chef server now.
    public var runList: [String]
    public var environment: String?
    /// PEM certificates the container must trust for the Chef server (`/etc/chef/trusted_certs`).
    public var trustedCerts: [String]
    /// Ansible: SHA-256 (hex) of the playbook archive that travels beside the signed payload.
    public var playbookArchiveSHA256: String?
    /// Ansible: variables passed with `-e` (e.g. `app_version`).
    public var extraVars: [String: String]?

    /// Largest playbook archive a gateway accepts, decoded.
    public static let maxPlaybookBytes = 4 * 1024 * 1024
    /// Largest signed bundle (with its base64 archive) a gateway reads.
    public static let maxSignedBytes = maxPlaybookBytes * 4 / 3 + 64 * 1024
    /// How long a vendor signs bundles for.
    public static let lifetime: TimeInterval = 3600

    public init(kind: Kind, gatewayID: String, vendor: String, planVersion: Int, expiresAt: Date, chefServerURL: String? = nil,
                nodeName: String? = nil, clientKeyPEM: String? = nil, runList: [String] = [], environment: String? = nil,
                trustedCerts: [String] = [], playbookArchiveSHA256: String? = nil, extraVars: [String: String]? = nil) {
        self.kind = kind
        self.gatewayID = gatewayID
        self.vendor = vendor
        self.planVersion = planVersion
        self.expiresAt = expiresAt
        self.chefServerURL = chefServerURL
        self.nodeName = nodeName
        self.clientKeyPEM = clientKeyPEM
        self.runList = runList
        self.environment = environment
        self.trustedCerts = trustedCerts
        self.playbookArchiveSHA256 = playbookArchiveSHA256
        self.extraVars = extraVars
    }
}

/// A bootstrap bundle as it travels: the bundle's exact JSON bytes signed with the vendor's key
/// (domain ``Envelope/bootstrapDomain``), and the Ansible playbook archive beside them, bound by the
/// digest inside the signed bytes.
public struct SignedBootstrap: Sendable, Codable, Equatable {
    /// Base64 of the bundle's JSON bytes.
    public var payload: String
    /// Base64 Ed25519 signature over the domain tag and those bytes.
    public var signature: String
    public var keyID: String
    /// Ansible: base64 of a gzip'd tar of the playbook directory (`site.yml` at its top).
    public var playbookArchive: String?

    public init(payload: String, signature: String, keyID: String, playbookArchive: String?) {
        self.payload = payload
        self.signature = signature
        self.keyID = keyID
        self.playbookArchive = playbookArchive
    }
}

extension PlanSigner {
    /// Signs a bundle; `archive` is the playbook archive whose digest the bundle must already carry.
    /// - Throws: ``ProtocolError/Code/digestMismatch`` when the bundle's `playbookArchiveSHA256` is not the
    ///   archive's (or names an archive that is not given), so no bundle is signed that gateways must refuse.
    public func sign(_ bundle: BootstrapBundle, archive: Data? = nil) throws -> SignedBootstrap {
        guard bundle.playbookArchiveSHA256 == archive.map({ Keys.sha256Hex($0) }) else {
            throw ProtocolError(.digestMismatch, "the bundle's playbookArchiveSHA256 is not the digest of the archive signed with it")
        }
        let bytes = try WireJSON.encoder().encode(bundle)
        let sig = try Envelope.sign(bytes, domain: Envelope.bootstrapDomain, key: key)
        return SignedBootstrap(payload: bytes.base64EncodedString(), signature: sig.base64EncodedString(), keyID: keyID,
                               playbookArchive: archive?.base64EncodedString())
    }
}

/// A bootstrap bundle that passed ``BundleValidator``, with its archive decoded.
public struct VerifiedBootstrap: Sendable, Equatable {
    public var bundle: BootstrapBundle
    public var playbookArchive: Data?
}

/// Checks a signed bootstrap bundle before anything of it is used. Pure: no I/O, time injected.
public struct BundleValidator: Sendable {
    public static let maxTrustedCerts = 8
    /// The longest a bundle may be valid from the moment the gateway checks it.
    public static let maxLifetime: TimeInterval = 24 * 3600
    public static let maxExtraVars = 64

    let trust: TrustedVendor
    public var vendor: String { trust.vendor }
    public var gatewayID: String { trust.gatewayID }

    public init(vendor: String, vendorKey: Curve25519.Signing.PublicKey, gatewayID: String) {
        trust = TrustedVendor(vendor: vendor, key: vendorKey, gatewayID: gatewayID)
    }

    /// Signature first, then binding (gateway, vendor, plan version, expiry, archive digest), then
    /// every field. `expectedNode` is the Chef node name this gateway derives for itself.
    public func validate(rawBody: Data, planVersion: Int, expectedNode: String, now: Date) throws -> VerifiedBootstrap {
        guard rawBody.count <= BootstrapBundle.maxSignedBytes else {
            throw ProtocolError(.tooLarge, "bootstrap bundle is \(rawBody.count) bytes, limit \(BootstrapBundle.maxSignedBytes)")
        }
        let signed: SignedBootstrap
        do { signed = try WireJSON.decoder().decode(SignedBootstrap.self, from: rawBody) } catch {
            throw ProtocolError(.malformed, "not a signed bootstrap bundle: \(PlanValidator.describe(error))")
        }
        guard let payload = Data(base64Encoded: signed.payload), payload.count <= 256 * 1024 else {
            throw ProtocolError(.malformed, "bundle payload is not base64 or too large")
        }
        try trust.verify(keyID: signed.keyID, signature: signed.signature, payload: payload, domain: Envelope.bootstrapDomain, what: "bundle")
        let bundle: BootstrapBundle
        do { bundle = try WireJSON.decoder().decode(BootstrapBundle.self, from: payload) } catch {
            throw ProtocolError(.malformed, "bundle does not match schema: \(PlanValidator.describe(error))")
        }
        guard bundle.vendor == vendor else { throw ProtocolError(.wrongVendor, "bundle is for vendor \(Fields.quote(bundle.vendor))") }
        guard bundle.gatewayID == gatewayID else { throw ProtocolError(.wrongGateway, "bundle is for gateway \(Fields.quote(bundle.gatewayID))") }
        guard bundle.planVersion == planVersion else {
            throw ProtocolError(.wrongAudience, "bundle is for plan v\(bundle.planVersion), this delivery is v\(planVersion)")
        }
        guard bundle.expiresAt > now else { throw ProtocolError(.expired, "bundle expired at \(bundle.expiresAt)") }
        // A bundle carries a key: it must not stay usable for long if it leaks.
        guard bundle.expiresAt <= now.addingTimeInterval(Self.maxLifetime) else {
            throw ProtocolError(.invalidField, "bundle expires more than \(Int(Self.maxLifetime))s from now")
        }
        var archive: Data?
        if let b64 = signed.playbookArchive {
            guard let data = Data(base64Encoded: b64), data.count <= BootstrapBundle.maxPlaybookBytes else {
                throw ProtocolError(.tooLarge, "playbook archive is not base64 or over \(BootstrapBundle.maxPlaybookBytes) bytes")
            }
            guard let digest = bundle.playbookArchiveSHA256, Keys.sha256Hex(data) == digest else {
                throw ProtocolError(.digestMismatch, "playbook archive does not match the digest the vendor signed")
            }
            archive = data
        } else if bundle.playbookArchiveSHA256 != nil {
            throw ProtocolError(.digestMismatch, "bundle names a playbook archive but carries none")
        }
        try check(bundle, hasArchive: archive != nil, expectedNode: expectedNode)
        return VerifiedBootstrap(bundle: bundle, playbookArchive: archive)
    }

    func check(_ b: BootstrapBundle, hasArchive: Bool, expectedNode: String) throws {
        guard b.runList.count <= PlanValidator.maxRunListItems * PlanValidator.maxApps else {
            throw ProtocolError(.invalidField, "bundle run list is too long")
        }
        for (i, item) in b.runList.enumerated() { try Fields.runListItem.check(item, at: "runList[\(i)]") }
        if let e = b.environment { try Fields.name.named("environment").check(e, at: "environment") }
        switch b.kind {
        case .chef:
            guard let url = b.chefServerURL, let node = b.nodeName, let key = b.clientKeyPEM else {
                throw ProtocolError(.invalidField, "a Chef bundle needs chefServerURL, nodeName and clientKeyPEM")
            }
            try Fields.url.named("Chef server URL").check(url, at: "chefServerURL")
            try Fields.nodeName.check(node, at: "nodeName")
            // The node is this gateway's own: a vendor cannot make a container act as another node.
            guard node == expectedNode else {
                throw ProtocolError(.wrongAudience, "bundle names node \(Fields.quote(node)), this gateway's node is \(expectedNode)")
            }
            try Fields.pem.named("client key").check(key, at: "clientKeyPEM")
            guard b.trustedCerts.count <= Self.maxTrustedCerts else { throw ProtocolError(.invalidField, "too many trusted certificates") }
            for (i, c) in b.trustedCerts.enumerated() { try Fields.pem.named("certificate").check(c, at: "trustedCerts[\(i)]") }
            guard !hasArchive, b.extraVars == nil else { throw ProtocolError(.invalidField, "a Chef bundle carries no playbook") }
        case .ansible:
            guard hasArchive else { throw ProtocolError(.invalidField, "an Ansible bundle needs a playbook archive") }
            let vars = b.extraVars ?? [:]
            guard vars.count <= Self.maxExtraVars else { throw ProtocolError(.invalidField, "too many variables") }
            for (k, v) in vars.sorted(by: { $0.key < $1.key }) {
                try Fields.variableName.check(k, at: "extraVars")
                try Fields.shortValue.check(v, at: "extraVars.\(k)")
            }
            guard b.clientKeyPEM == nil, b.chefServerURL == nil else { throw ProtocolError(.invalidField, "an Ansible bundle carries no Chef key") }
        case .none:
            guard !hasArchive, b.clientKeyPEM == nil else { throw ProtocolError(.invalidField, "an empty bundle carries nothing") }
        }
    }
}

/// What a delivery did, attached to a `ProvisioningReport`.
public struct DeliverySummary: Sendable, Codable, Equatable {
    /// `applied`, `rolled-back` or `failed`.
    public var result: String
    public var provisioner: String
    public var convergeSummary: String?
    /// Per control: `passed`, `failed` or `skipped`.
    public var controls: [String: String]
    public var failingControls: [String]
    /// The snapshot restored, if the delivery was rolled back.
    public var restoredSnapshot: String?
    public var message: String

    public init(result: String, provisioner: String, convergeSummary: String?, controls: [String: String], failingControls: [String],
                restoredSnapshot: String?, message: String) {
        self.result = result
        self.provisioner = provisioner
        self.convergeSummary = convergeSummary
        self.controls = controls
        self.failingControls = failingControls
        self.restoredSnapshot = restoredSnapshot
        self.message = message
    }
}
