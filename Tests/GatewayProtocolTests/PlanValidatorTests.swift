import Crypto
import Foundation
import Testing
@testable import GatewayProtocol

@Suite struct PlanValidatorTests {
    let vendorKey = Curve25519.Signing.PrivateKey()
    let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func plan(version: Int = 2, vendor: String = "acme", container: String? = nil, gatewayID: String? = nil,
              expires: TimeInterval = 3600, limits: ResourceLimits = .init(cpus: 1, memoryMiB: 256, diskMiB: 1024, processes: 200),
              devices: [DeviceGrant]? = nil) -> ProvisioningPlan {
        ProvisioningPlan(vendor: vendor, gatewayID: gatewayID ?? gateway.id, version: version, issuedAt: now,
                         expiresAt: now.addingTimeInterval(expires),
                         container: ContainerSpec(name: container ?? ProvisioningPlan.containerName(forVendor: vendor),
                                                  image: ImageRef(alias: "iotgw-debian12", fingerprint: String(repeating: "ab", count: 32)),
                                                  limits: limits, network: .nat),
                         devices: devices ?? [DeviceGrant(serial: "SN1", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB0")],
                         apps: [AppSpec(name: "thermo", version: "1.0.0", runList: ["recipe[thermo]"])])
    }

    var validator: PlanValidator { PlanValidator(vendor: "acme", vendorKey: vendorKey.publicKey, gatewayID: gateway.id) }

    func body(_ p: ProvisioningPlan, key: Curve25519.Signing.PrivateKey? = nil) throws -> Data {
        try WireJSON.encoder().encode(try PlanSigner(privateKey: key ?? vendorKey).sign(p))
    }

    func rejects(_ data: Data, last: Int = 1, _ code: ProtocolError.Code) {
        #expect { try validator.validate(rawBody: data, lastVersion: last, now: now) } throws: {
            ($0 as? ProtocolError)?.code == code
        }
    }

    @Test func acceptsAValidPlanAndReturnsTheSignedBytes() throws {
        let (p, payload) = try validator.validate(rawBody: try body(plan()), lastVersion: 1, now: now)
        #expect(p == plan())
        #expect(try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload) == p)
        // The same version again is idempotent (a retried response), not a rollback.
        #expect(try validator.validate(rawBody: try body(plan()), lastVersion: 2, now: now).plan.version == 2)
    }

    @Test func rejectsEveryKindOfBadPlan() throws {
        rejects(try body(plan(), key: Curve25519.Signing.PrivateKey()), .unknownKey)
        var tampered = try PlanSigner(privateKey: vendorKey).sign(plan())
        var bytes = Data(base64Encoded: tampered.payload)!
        bytes[bytes.count / 2] ^= 0x01
        tampered.payload = bytes.base64EncodedString()
        rejects(try WireJSON.encoder().encode(tampered), .badSignature)
        rejects(try body(plan(version: 1)), last: 2, .versionRollback)
        rejects(try body(plan(gatewayID: "gw-someoneelse")), .wrongGateway)
        rejects(try body(plan(vendor: "globex")), .wrongVendor)
        rejects(try body(plan(container: "iotgw-globex")), .foreignContainer)
        rejects(try body(plan(expires: -1)), .expired)
        rejects(try body(plan(limits: .init(cpus: 0, memoryMiB: 256, diskMiB: 1024, processes: 10))), .invalidLimits)
        rejects(try body(plan(devices: [DeviceGrant(serial: "S", vendorID: "xyz", productID: "6001", kind: .usb, path: nil)])), .invalidField)
        rejects(try body(plan(devices: [DeviceGrant(serial: "S", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/etc/shadow")])), .invalidField)
        rejects(Data("{not json".utf8), .malformed)
        rejects(Data(count: PlanValidator.maxPlanBytes + 1), .tooLarge)
        var future = plan()
        future.schema = 99
        rejects(try body(future), .unsupportedSchema)
    }

    @Test func unsignedFieldsInTheEnvelopeCannotChangeThePlan() throws {
        // Extra JSON around the signed payload is ignored; only the signed bytes are parsed.
        var obj = try JSONSerialization.jsonObject(with: try body(plan())) as! [String: Any]
        obj["version"] = 999
        let data = try JSONSerialization.data(withJSONObject: obj)
        #expect(try validator.validate(rawBody: data, lastVersion: 1, now: now).plan.version == 2)
    }

    @Test func grantCoverage() {
        let a = plan().grant
        var more = plan(devices: [DeviceGrant(serial: "SN1", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB0"),
                                  DeviceGrant(serial: "SN2", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB1")]).grant
        #expect(a.isCovered(by: more))
        #expect(!more.isCovered(by: a))
        more = plan(limits: .init(cpus: 2, memoryMiB: 256, diskMiB: 1024, processes: 200)).grant
        #expect(!more.isCovered(by: a))
    }

    @Test func requestSignaturesVerifyAndExpire() throws {
        let body = Data("{\"x\":1}".utf8)
        let h = Dictionary(uniqueKeysWithValues: try RequestSignature.headers(gatewayID: gateway.id, key: gateway.key, method: "POST",
                                                                             path: "/v1/announce", body: body, now: now))
        let ts = try #require(h[RequestSignature.timestampHeader]), sig = try #require(h[RequestSignature.signatureHeader])
        try RequestSignature.verify(publicKey: gateway.key.publicKey, method: "POST", path: "/v1/announce", timestamp: ts,
                                    signature: sig, body: body, now: now)
        #expect { try RequestSignature.verify(publicKey: gateway.key.publicKey, method: "POST", path: "/v1/report", timestamp: ts,
                                              signature: sig, body: body, now: now) } throws: { ($0 as? ProtocolError)?.code == .badSignature }
        #expect { try RequestSignature.verify(publicKey: gateway.key.publicKey, method: "POST", path: "/v1/announce", timestamp: ts,
                                              signature: sig, body: body, now: now.addingTimeInterval(3600)) } throws: {
            ($0 as? ProtocolError)?.code == .staleRequest
        }
        #expect(gateway.id.hasPrefix("gw-") && gateway.id.count == 19)
    }
}
