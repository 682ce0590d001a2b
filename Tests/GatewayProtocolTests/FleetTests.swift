import Crypto
import Foundation
import GatewayProtocol
import Testing

@Suite("Fleet channel documents")
struct FleetTests {
    let vendorKey = Curve25519.Signing.PrivateKey()
    let gatewayKey = Curve25519.Signing.PrivateKey()
    var gatewayID: String { "gw-" + Keys.keyID(gatewayKey.publicKey) }

    func command(_ kind: FleetCommand.Kind = .status, gateway: String? = nil, vendor: String = "acme", seconds: Int? = nil,
                 issuedAt: Date = Date(), lifetime: TimeInterval = 60, key: Curve25519.Signing.PrivateKey? = nil) throws -> Data {
        let c = FleetCommand(gatewayID: gateway ?? gatewayID, vendor: vendor, command: kind, seconds: seconds, issuedAt: issuedAt,
                             expiresAt: issuedAt.addingTimeInterval(lifetime))
        return try PlanSigner(privateKey: key ?? vendorKey).signDocument(c, domain: Envelope.commandDomain)
    }

    var validator: CommandValidator { CommandValidator(vendor: "acme", vendorKey: vendorKey.publicKey, gatewayID: gatewayID) }

    @Test func topicsAreOneSubtreePerGatewayAndParseOnlyWellFormedIds() {
        #expect(FleetTopics.plan(gatewayID) == "iotgw/v1/\(gatewayID)/plan")
        let parsed = FleetTopics.parse(FleetTopics.status(gatewayID))
        #expect(parsed?.gatewayID == gatewayID && parsed?.leaf == "status")
        #expect(FleetTopics.parse("iotgw/v1/gw-XYZ/status") == nil)
        #expect(FleetTopics.parse("iotgw/v1/\(gatewayID)/status/extra") == nil)
        #expect(FleetTopics.parse("other/v1/\(gatewayID)/status") == nil)
    }

    @Test func aValidCommandPassesAndEveryBindingIsChecked() throws {
        #expect(try validator.validate(try command(), now: Date()).command == .status)
        #expect(throws: ProtocolError.self) { try validator.validate(try command(gateway: "gw-0000000000000000"), now: Date()) }
        #expect(throws: ProtocolError.self) { try validator.validate(try command(vendor: "globex"), now: Date()) }
        #expect(throws: ProtocolError.self) { try validator.validate(try command(key: Curve25519.Signing.PrivateKey()), now: Date()) }
        #expect(throws: ProtocolError.self) { try validator.validate(try command(issuedAt: Date().addingTimeInterval(-120)), now: Date()) }
        #expect(throws: ProtocolError.self) { try validator.validate(try command(issuedAt: Date().addingTimeInterval(900)), now: Date()) }
        #expect(throws: ProtocolError.self) { try validator.validate(try command(lifetime: 7200), now: Date()) }
        #expect(throws: ProtocolError.self) { try validator.validate(try command(.logsStart), now: Date()) }
        #expect(try validator.validate(try command(.logsStart, seconds: 30), now: Date()).seconds == 30)
        #expect(throws: ProtocolError.self) { try validator.validate(Data(repeating: 0x20, count: SignedDocument.maxBytes + 1), now: Date()) }
        #expect(throws: ProtocolError.self) { try validator.validate(Data("{}".utf8), now: Date()) }
    }

    @Test func aSignatureMadeForOneKindOfDocumentNeverPassesAsAnother() throws {
        // A status signed by the gateway, or a command signed under the status domain, is no command.
        let c = FleetCommand(gatewayID: gatewayID, vendor: "acme", command: .restartContainer, issuedAt: Date(), expiresAt: Date().addingTimeInterval(60))
        let underStatus = try SignedDocument.sign(c, domain: Envelope.statusDomain, key: vendorKey)
        #expect(throws: ProtocolError.self) { try validator.validate(underStatus, now: Date()) }
        let asBundle = try SignedDocument.sign(c, domain: Envelope.bootstrapDomain, key: vendorKey)
        #expect(throws: ProtocolError.self) { try validator.validate(asBundle, now: Date()) }
        // A tampered payload fails the signature.
        var doc = try WireJSON.decoder().decode(SignedDocument.self, from: try command())
        doc.payload = Data(String(decoding: Data(base64Encoded: doc.payload)!, as: UTF8.self)
            .replacingOccurrences(of: "\"status\"", with: "\"restart-container\"").utf8).base64EncodedString()
        let e = #expect(throws: ProtocolError.self) { try validator.validate(try WireJSON.encoder().encode(doc), now: Date()) }
        #expect(e?.code == .badSignature)
    }

    func status(online: Bool = true, session: Int64 = 1, sequence: Int64 = 1, devices: [String] = ["ACME-1"]) -> GatewayStatus {
        GatewayStatus(gatewayID: gatewayID, vendor: "acme", online: online, session: session, sequence: sequence, publishedAt: Date(),
                      agentVersion: "0.8.0", uptimeSeconds: 1, container: .init(name: "iotgw-acme", state: "Running"), devices: devices,
                      plan: .init(received: 2, approved: 2, applied: 2, delivered: 2), lastDelivery: nil, rejection: nil)
    }

    @Test func newerStatusesWinAndAWillOnlyEndsItsOwnSession() {
        #expect(status(sequence: 2).supersedes(status(sequence: 1)))
        #expect(!status(sequence: 1).supersedes(status(sequence: 2)), "a late, older status does not win")
        #expect(status(session: 2, sequence: 1).supersedes(status(session: 1, sequence: 9)), "a new connection wins")
        #expect(status(online: false, session: 1, sequence: 0).supersedes(status(session: 1, sequence: 5)))
        #expect(!status(online: false, session: 1, sequence: 0).supersedes(status(session: 2, sequence: 1)), "an old will does not end a newer session")
        #expect(status(session: 1, sequence: 6).supersedes(status(online: false, session: 1, sequence: 0)), "back online in the same session")
    }

    @Test func statusFieldsAreCheckedAgainstTheTopicAndTheRules() throws {
        try status().validate(gatewayID: gatewayID, vendor: "acme")
        #expect(throws: ProtocolError.self) { try status().validate(gatewayID: "gw-0000000000000000", vendor: "acme") }
        #expect(throws: ProtocolError.self) { try status().validate(gatewayID: gatewayID, vendor: "globex") }
        #expect(throws: ProtocolError.self) { try status(devices: ["bad serial\u{1b}[2J"]).validate(gatewayID: gatewayID, vendor: "acme") }
        let signed = try SignedDocument.sign(status(), domain: Envelope.statusDomain, key: gatewayKey)
        #expect(try SignedDocument.open(signed, as: GatewayStatus.self, domain: Envelope.statusDomain, key: gatewayKey.publicKey, what: "s").devices == ["ACME-1"])
        #expect(throws: ProtocolError.self) {
            try SignedDocument.open(signed, as: GatewayStatus.self, domain: Envelope.statusDomain, key: vendorKey.publicKey, what: "status")
        }
    }
}
