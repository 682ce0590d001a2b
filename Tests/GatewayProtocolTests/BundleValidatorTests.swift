import Crypto
import Foundation
import Testing
@testable import GatewayProtocol

/// Signed bootstrap bundles: bound to gateway, vendor, plan version and expiry; the archive by its digest.
@Suite("BundleValidator")
struct BundleValidatorTests {
    let vendorKey = Curve25519.Signing.PrivateKey()
    let gatewayID = GatewayIdentity(key: Curve25519.Signing.PrivateKey()).id
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    var node: String { "\(gatewayID)-acme" }
    var signer: PlanSigner { PlanSigner(privateKey: vendorKey) }
    var validator: BundleValidator { BundleValidator(vendor: "acme", vendorKey: vendorKey.publicKey, gatewayID: gatewayID) }
    static let archive = Data([0x1f, 0x8b]) + Data("a playbook".utf8)
    static let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----\n"

    func chef(_ change: (inout BootstrapBundle) -> Void = { _ in }) -> BootstrapBundle {
        var b = BootstrapBundle(kind: .chef, gatewayID: gatewayID, vendor: "acme", planVersion: 3, expiresAt: now.addingTimeInterval(3600),
                                chefServerURL: "http://127.0.0.1:4545", nodeName: node, clientKeyPEM: Self.pem, runList: ["recipe[thermo]"])
        change(&b)
        return b
    }

    func ansible(_ change: (inout BootstrapBundle) -> Void = { _ in }) -> BootstrapBundle {
        var b = BootstrapBundle(kind: .ansible, gatewayID: gatewayID, vendor: "acme", planVersion: 3, expiresAt: now.addingTimeInterval(3600),
                                runList: ["recipe[thermo]"], playbookArchiveSHA256: Keys.sha256Hex(Self.archive),
                                extraVars: ["app_version": "1.0.0", "thermo_version": "1.0.0"])
        change(&b)
        return b
    }

    func encoded(_ signed: SignedBootstrap) throws -> Data { try WireJSON.encoder().encode(signed) }

    func validate(_ raw: Data, planVersion: Int = 3, at: Date? = nil) throws -> VerifiedBootstrap {
        try validator.validate(rawBody: raw, planVersion: planVersion, expectedNode: node, now: at ?? now)
    }

    func refusal(_ raw: Data, planVersion: Int = 3, at: Date? = nil) -> ProtocolError? {
        do {
            _ = try validate(raw, planVersion: planVersion, at: at)
            return nil
        } catch {
            return error as? ProtocolError
        }
    }

    @Test func acceptsSignedBundlesForThisGatewayAndVersion() throws {
        let chef = try validate(try encoded(try signer.sign(chef())))
        #expect(chef.bundle == self.chef())
        #expect(chef.playbookArchive == nil)
        let ansible = try validate(try encoded(try signer.sign(ansible(), archive: Self.archive)))
        #expect(ansible.bundle == self.ansible())
        #expect(ansible.playbookArchive == Self.archive)
        let none = BootstrapBundle(kind: .none, gatewayID: gatewayID, vendor: "acme", planVersion: 3, expiresAt: now.addingTimeInterval(1))
        #expect(try validate(try encoded(try signer.sign(none))).bundle == none)
    }

    @Test func refusesBundlesBoundToSomethingElse() throws {
        #expect(refusal(try encoded(try signer.sign(chef { $0.gatewayID = GatewayIdentity(key: .init()).id })))?.code == .wrongGateway)
        #expect(refusal(try encoded(try signer.sign(chef { $0.vendor = "globex" })))?.code == .wrongVendor)
        let raw = try encoded(try signer.sign(chef()))
        #expect(refusal(raw, planVersion: 2)?.code == .wrongAudience)
        #expect(refusal(raw, planVersion: 4)?.code == .wrongAudience)
        #expect(refusal(raw, at: now.addingTimeInterval(3600))?.code == .expired)
        #expect(refusal(try encoded(try signer.sign(chef { $0.nodeName = "gw-ffffffffffffffff-acme" })))?.code == .wrongAudience)
        let otherGateway = BundleValidator(vendor: "acme", vendorKey: vendorKey.publicKey, gatewayID: GatewayIdentity(key: .init()).id)
        #expect(throws: ProtocolError.self) { try otherGateway.validate(rawBody: raw, planVersion: 3, expectedNode: node, now: now) }
    }

    @Test func refusesWhatIsNotSignedByTheVendor() throws {
        #expect(refusal(try encoded(try PlanSigner(privateKey: .init()).sign(chef())))?.code == .unknownKey)
        var tampered = try signer.sign(chef())
        var payload = try #require(Data(base64Encoded: tampered.payload))
        payload[payload.count / 2] ^= 0x01
        tampered.payload = payload.base64EncodedString()
        #expect(refusal(try encoded(tampered))?.code == .badSignature)
        var garbage = try signer.sign(chef())
        garbage.signature = "!!"
        #expect(refusal(try encoded(garbage))?.code == .badSignature)
    }

    @Test func signaturesDoNotCrossDomains() throws {
        // The bundle's bytes signed the way plans are (no domain tag) do not pass as a bundle...
        let bytes = try WireJSON.encoder().encode(chef())
        let planStyle = SignedBootstrap(payload: bytes.base64EncodedString(), signature: try vendorKey.signature(for: bytes).base64EncodedString(),
                                        keyID: Keys.keyID(vendorKey.publicKey), playbookArchive: nil)
        #expect(refusal(try encoded(planStyle))?.code == .badSignature)
        // ...and a bundle's signature does not pass as a plan's.
        let signed = try signer.sign(chef())
        let asPlan = SignedPlan(payload: signed.payload, signature: signed.signature, keyID: signed.keyID)
        let plans = PlanValidator(vendor: "acme", vendorKey: vendorKey.publicKey, gatewayID: gatewayID)
        let error = #expect(throws: ProtocolError.self) { try plans.validate(asPlan, held: .none, now: now) }
        #expect(error?.code == .badSignature)
    }

    @Test func theArchiveIsBoundByItsDigest() throws {
        var signed = try signer.sign(ansible(), archive: Self.archive)
        signed.playbookArchive = (Self.archive + Data([0])).base64EncodedString()
        #expect(refusal(try encoded(signed))?.code == .digestMismatch)
        signed.playbookArchive = nil
        #expect(refusal(try encoded(signed))?.code == .digestMismatch)
        // An archive beside a bundle that names none.
        var extra = try signer.sign(chef())
        extra.playbookArchive = Self.archive.base64EncodedString()
        #expect(refusal(try encoded(extra))?.code == .digestMismatch)
        var notBase64 = try signer.sign(ansible(), archive: Self.archive)
        notBase64.playbookArchive = "%%%"
        #expect(refusal(try encoded(notBase64))?.code == .tooLarge)
        // The signer refuses to sign a digest that is not the archive's.
        #expect(throws: ProtocolError.self) { try signer.sign(ansible(), archive: Self.archive + Data([0])) }
        #expect(throws: ProtocolError.self) { try signer.sign(ansible(), archive: nil) }
        #expect(throws: ProtocolError.self) { try signer.sign(chef(), archive: Self.archive) }
    }

    @Test func refusesOversizedBundlesAndArchives() throws {
        #expect(refusal(Data(count: BootstrapBundle.maxSignedBytes + 1))?.code == .tooLarge)
        let big = Data(count: BootstrapBundle.maxPlaybookBytes + 1)
        let signed = try signer.sign(ansible { $0.playbookArchiveSHA256 = Keys.sha256Hex(big) }, archive: big)
        #expect(refusal(try encoded(signed))?.code == .tooLarge)
    }

    @Test func refusesMalformedInput() throws {
        #expect(refusal(Data("{not json".utf8))?.code == .malformed)
        var payload = try signer.sign(chef())
        payload.payload = "%%%"
        #expect(refusal(try encoded(payload))?.code == .malformed)
        // Signed, but not a bundle.
        let bytes = Data(#"{"kind":"chef"}"#.utf8)
        let notABundle = SignedBootstrap(payload: bytes.base64EncodedString(),
                                         signature: try Envelope.sign(bytes, domain: Envelope.bootstrapDomain, key: vendorKey).base64EncodedString(),
                                         keyID: Keys.keyID(vendorKey.publicKey), playbookArchive: nil)
        #expect(refusal(try encoded(notABundle))?.code == .malformed)
    }

    static let invalidBundles: [(String, @Sendable (BundleValidatorTests) -> (BootstrapBundle, Data?))] = [
        ("chef without key", { ($0.chef { $0.clientKeyPEM = nil }, nil) }),
        ("chef URL with user info", { ($0.chef { $0.chefServerURL = "http://admin:pw@chef.example" }, nil) }),
        ("chef URL with escape", { ($0.chef { $0.chefServerURL = "http://chef.example/\u{1B}[2J" }, nil) }),
        ("client key not PEM", { ($0.chef { $0.clientKeyPEM = "ssh-rsa AAAA" }, nil) }),
        ("certificate not PEM", { ($0.chef { $0.trustedCerts = ["$(curl evil)"] }, nil) }),
        ("too many certificates", { ($0.chef { $0.trustedCerts = Array(repeating: BundleValidatorTests.pem, count: 9) }, nil) }),
        ("bad run-list item", { ($0.chef { $0.runList = ["recipe[x]; rm -rf /"] }, nil) }),
        ("bad environment", { ($0.chef { $0.environment = "../prod" }, nil) }),
        ("chef with variables", { ($0.chef { $0.extraVars = ["a": "b"] }, nil) }),
        ("ansible without archive", { ($0.ansible { $0.playbookArchiveSHA256 = nil }, nil) }),
        ("bad variable name", { t in (t.ansible { $0.extraVars = ["app-version": "1"] }, BundleValidatorTests.archive) }),
        ("variable with newline", { t in (t.ansible { $0.extraVars = ["app_version": "1\n- hosts: all"] }, BundleValidatorTests.archive) }),
        ("too many variables", { t in
            (t.ansible { b in b.extraVars = Dictionary(uniqueKeysWithValues: (0...64).map { ("v\($0)", "x") }) }, BundleValidatorTests.archive)
        }),
        ("ansible with a chef key", { t in (t.ansible { $0.clientKeyPEM = BundleValidatorTests.pem }, BundleValidatorTests.archive) }),
        ("empty bundle with a key", { ($0.chef { $0.kind = .none }, nil) }),
    ]

    @Test(arguments: 0..<invalidBundles.count)
    func refusesInvalidFields(_ index: Int) throws {
        let (what, make) = Self.invalidBundles[index]
        let (bundle, archive) = make(self)
        let error = refusal(try encoded(try signer.sign(bundle, archive: archive)))
        #expect(error?.code == .invalidField, "\(what): \(error.map(String.init(describing:)) ?? "accepted")")
        #expect(error.map { Fields.isShowable($0.message, max: 4096) } == true, "\(what)")
    }
}
