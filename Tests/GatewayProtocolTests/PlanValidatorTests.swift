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

    /// The plan's payload digest, as a gateway holding it records it.
    func held(_ p: ProvisioningPlan) throws -> PlanHeld {
        PlanHeld(version: p.version, payloadSHA256: Keys.sha256Hex(try validator.validate(rawBody: try body(p), held: .none, now: now).payload))
    }

    func refusal(_ data: Data, held: PlanHeld = PlanHeld(version: 1, payloadSHA256: nil)) -> ProtocolError? {
        do {
            _ = try validator.validate(rawBody: data, held: held, now: now)
            return nil
        } catch {
            return error as? ProtocolError
        }
    }

    func rejects(_ data: Data, last: Int = 1, _ code: ProtocolError.Code, sourceLocation: SourceLocation = #_sourceLocation) {
        let error = refusal(data, held: PlanHeld(version: last, payloadSHA256: nil))
        #expect(error?.code == code, "\(error.map(String.init(describing:)) ?? "accepted")", sourceLocation: sourceLocation)
        // Whatever the vendor sent, the message is safe to show.
        #expect(error.map { Fields.isShowable($0.message, max: 4096) } != false, sourceLocation: sourceLocation)
    }

    @Test func acceptsAValidPlanAndReturnsTheSignedBytes() throws {
        let (p, payload) = try validator.validate(rawBody: try body(plan()), lastVersion: 1, now: now)
        #expect(p == plan())
        #expect(try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload) == p)
    }

    @Test func rejectsEveryKindOfBadPlan() throws {
        rejects(try body(plan(), key: Curve25519.Signing.PrivateKey()), .unknownKey)
        var tampered = try PlanSigner(privateKey: vendorKey).sign(plan())
        var bytes = try #require(Data(base64Encoded: tampered.payload))
        bytes[bytes.count / 2] ^= 0x01
        tampered.payload = bytes.base64EncodedString()
        rejects(try WireJSON.encoder().encode(tampered), .badSignature)
        rejects(try body(plan(version: 1)), last: 2, .versionRollback)
        rejects(try body(plan(gatewayID: "gw-someoneelse")), .wrongGateway)
        rejects(try body(plan(vendor: "globex")), .wrongVendor)
        rejects(try body(plan(container: "iotgw-globex")), .foreignContainer)
        rejects(try body(plan(expires: -1)), .expired)
        rejects(Data("{not json".utf8), .malformed)
        rejects(Data(count: PlanValidator.maxPlanBytes + 1), .tooLarge)
        var future = plan()
        future.schema = 99
        rejects(try body(future), .unsupportedSchema)
    }

    /// One plan change per field rule, each refused with its code.
    static let fieldCases: [(String, ProtocolError.Code, @Sendable (inout ProvisioningPlan) -> Void)] = [
        ("escape sequence in serial", .invalidField, { $0.devices[0].serial = "SN1\u{1B}[2J" }),
        ("over-long serial", .invalidField, { $0.devices[0].serial = String(repeating: "S", count: 65) }),
        ("option as serial", .invalidField, { $0.devices[0].serial = "-rf" }),
        ("serial listed twice", .invalidField, { $0.devices.append($0.devices[0]); $0.devices[1].path = "/dev/ttyUSB1" }),
        ("uppercase vendor ID", .invalidField, { $0.devices[0].vendorID = "ABCD" }),
        ("short product ID", .invalidField, { $0.devices[0].productID = "601" }),
        ("unix-char without path", .invalidField, { $0.devices[0].path = nil }),
        ("path outside /dev", .invalidField, { $0.devices[0].path = "/etc/shadow" }),
        ("path traversal", .invalidField, { $0.devices[0].path = "/dev/../etc/shadow" }),
        ("reserved path", .invalidField, { $0.devices[0].path = "/dev/null" }),
        ("reserved directory", .invalidField, { $0.devices[0].path = "/dev/pts/0" }),
        ("path with a newline", .invalidField, { $0.devices[0].path = "/dev/tty\nUSB0" }),
        ("path used twice", .invalidField, {
            $0.devices.append(DeviceGrant(serial: "SN2", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB0"))
        }),
        ("usb device with a path", .invalidField, { $0.devices[0].kind = .usb }),
        ("too many devices", .invalidField, { p in
            p.devices = (0...PlanValidator.maxDevices).map { DeviceGrant(serial: "S\($0)", vendorID: "0403", productID: "6001", kind: .usb, path: nil) }
        }),
        ("image alias with escape", .invalidField, { $0.container.image.alias = "iotgw\u{1B}[2J" }),
        ("image alias as option", .invalidField, { $0.container.image.alias = "-debian" }),
        ("uppercase fingerprint", .invalidField, { $0.container.image.fingerprint = String(repeating: "AB", count: 32) }),
        ("short fingerprint", .invalidField, { $0.container.image.fingerprint = "abcd" }),
        ("app name with bidi override", .invalidField, { $0.apps[0].name = "thermo\u{202E}" }),
        ("app name traversal", .invalidField, { $0.apps[0].name = ".." }),
        ("app listed twice", .invalidField, { $0.apps.append($0.apps[0]) }),
        ("app version with a space", .invalidField, { $0.apps[0].version = "1 0" }),
        ("empty run list", .invalidField, { $0.apps[0].runList = [] }),
        ("bare run-list item", .invalidField, { $0.apps[0].runList = ["thermo"] }),
        ("run-list item with NUL", .invalidField, { $0.apps[0].runList = ["recipe[thermo\u{0}]"] }),
        ("too long a run list", .invalidField, { $0.apps[0].runList = Array(repeating: "recipe[x]", count: PlanValidator.maxRunListItems + 1) }),
        ("InSpec profile traversal", .invalidField, { $0.apps[0].inspecProfile = "../../etc" }),
        ("too many apps", .invalidField, { p in
            p.apps = (0...PlanValidator.maxApps).map { AppSpec(name: "app\($0)", version: "1", runList: ["recipe[a\($0)]"]) }
        }),
        ("issued in the future", .invalidField, { $0.issuedAt = $0.issuedAt.addingTimeInterval(PlanValidator.allowedSkew + 1) }),
        ("valid for over a year", .invalidField, { $0.issuedAt = $0.expiresAt.addingTimeInterval(-PlanValidator.maxLifetime - 1) }),
        ("no CPU", .invalidLimits, { $0.container.limits.cpus = 0 }),
        ("too little memory", .invalidLimits, { $0.container.limits.memoryMiB = 15 }),
        ("absurd CPUs", .invalidLimits, { $0.container.limits.cpus = 1025 }),
        ("absurd processes", .invalidLimits, { $0.container.limits.processes = (1 << 22) + 1 }),
        ("vendor with escape", .wrongVendor, { $0.vendor = "acme\u{1B}[2J" }),
        ("gateway with newline", .wrongGateway, { $0.gatewayID += "\n" }),
    ]

    @Test(arguments: 0..<fieldCases.count)
    func everyFieldRuleIsReachedThroughASignedPlan(_ index: Int) throws {
        let (what, code, change) = Self.fieldCases[index]
        var p = plan()
        change(&p)
        let error = refusal(try body(p))
        #expect(error?.code == code, "\(what): \(error.map(String.init(describing:)) ?? "accepted")")
        #expect(error.map { Fields.isShowable($0.message, max: 4096) } == true, "\(what): \(error?.message.debugDescription ?? "")")
    }

    @Test func theBoundsThemselvesAreAccepted() throws {
        var p = plan(limits: .init(cpus: 1024, memoryMiB: 1 << 24, diskMiB: 1 << 30, processes: 1 << 22))
        p.devices = (0..<PlanValidator.maxDevices).map { DeviceGrant(serial: "S\($0)", vendorID: "0403", productID: "6001", kind: .usb, path: nil) }
        p.apps = (0..<PlanValidator.maxApps).map {
            AppSpec(name: "app\($0)", version: "1.0.0+b~1", runList: Array(repeating: "recipe[a::b@1.2.3]", count: PlanValidator.maxRunListItems),
                    inspecProfile: "p\($0)")
        }
        p.issuedAt = now.addingTimeInterval(PlanValidator.allowedSkew)
        _ = try validator.validate(rawBody: try body(p), held: .none, now: now)
    }

    // MARK: Versions

    @Test func theSameVersionIsAcceptedOnlyAsTheSameBytes() throws {
        let held = try held(plan())
        // A repeated answer: the very same bytes.
        #expect(try validator.validate(rawBody: try body(plan()), held: held, now: now).plan.version == 2)
        // The same version with anything else (one second later, another device) is refused.
        var later = plan()
        later.issuedAt = now.addingTimeInterval(1)
        #expect(refusal(try body(later), held: held)?.code == .versionReuse)
        let other = plan(devices: [DeviceGrant(serial: "SN9", vendorID: "0403", productID: "6001", kind: .usb, path: nil)])
        #expect(refusal(try body(other), held: held)?.code == .versionReuse)
        // The next version may be anything valid.
        var next = other
        next.version = 3
        #expect(try validator.validate(rawBody: try body(next), held: held, now: now).plan == next)
    }

    @Test func versionsNeverGoBack() throws {
        let held = try held(plan(version: 5))
        #expect(refusal(try body(plan(version: 4)), held: held)?.code == .versionRollback)
        #expect(refusal(try body(plan(version: 0)), held: .none)?.code == .versionRollback)
        #expect(refusal(try body(plan(version: -1)), held: .none)?.code == .versionRollback)
        #expect(try validator.validate(rawBody: try body(plan(version: 1)), held: .none, now: now).plan.version == 1)
        // Without a recorded digest (tools, older state) the same version is taken as a repeat.
        #expect(try validator.validate(rawBody: try body(plan(version: 5)), held: PlanHeld(version: 5, payloadSHA256: nil), now: now)
            .plan.version == 5)
    }

    @Test func unsignedFieldsInTheEnvelopeCannotChangeThePlan() throws {
        // Extra JSON around the signed payload is ignored; only the signed bytes are parsed.
        var obj = try #require(try JSONSerialization.jsonObject(with: try body(plan())) as? [String: Any])
        obj["version"] = 999
        let data = try JSONSerialization.data(withJSONObject: obj)
        #expect(try validator.validate(rawBody: data, lastVersion: 1, now: now).plan.version == 2)
    }

    @Test func schemaErrorsQuoteNothingRaw() throws {
        // A signed payload that is not a plan: the message names the problem without echoing keys raw.
        let payload = Data(#"{"vendor\u001b[2J": 1}"#.utf8)
        let signed = SignedPlan(payload: payload.base64EncodedString(), signature: try vendorKey.signature(for: payload).base64EncodedString(),
                                keyID: Keys.keyID(vendorKey.publicKey))
        let error = refusal(try WireJSON.encoder().encode(signed))
        #expect(error?.code == .malformed)
        #expect(error.map { Fields.isShowable($0.message, max: 4096) } == true)
    }

    @Test func gatewayIDsAreDerivedFromTheirKey() {
        #expect(gateway.id.hasPrefix("gw-") && gateway.id.count == 19)
        #expect(Fields.gatewayID.isValid(gateway.id))
    }
}
