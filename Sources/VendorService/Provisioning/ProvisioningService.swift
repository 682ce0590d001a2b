import Crypto
import Foundation
import GatewayProtocol
import Logging

/// What the daemon does for gateways, without HTTP: authenticates signed requests, decides whether a
/// device is genuine, issues plans, hands out bootstrap bundles, records reports and publishes app
/// releases. Errors are ``APIError``s carrying the status and code to answer with.
public struct ProvisioningService: Sendable {
    public let vendor: String
    /// Composes from the configuration's catalog; each plan applies the current app releases to it.
    public let composer: PlanComposer
    let store: any VendorStore
    let signer: PlanSigner
    let provisioner: any Provisioner
    let now: @Sendable () -> Date

    /// - Parameter now: the wall clock; tests pass a fixed one.
    public init(configuration: VendorConfiguration, store: any VendorStore, signer: PlanSigner,
                provisioner: any Provisioner = NoopProvisioner(), now: @escaping @Sendable () -> Date = { Date() }) {
        vendor = configuration.vendor
        composer = PlanComposer(configuration: configuration)
        self.store = store
        self.signer = signer
        self.provisioner = provisioner
        self.now = now
    }

    /// The longest serial accepted (USB string descriptors hold at most 126 UTF-16 units).
    static let maxSerialLength = 128
    /// Plan versions a gateway may claim to hold; far above any real count, far below overflow.
    static let maxPlanVersion = Int(Int32.max)

    // MARK: Authentication

    /// The `X-IoTGW-*` headers of a request, as received (nil when absent).
    public struct SignatureHeaders: Sendable {
        public var gatewayID: String?
        public var timestamp: String?
        public var signature: String?

        public init(gatewayID: String?, timestamp: String?, signature: String?) {
            self.gatewayID = gatewayID
            self.timestamp = timestamp
            self.signature = signature
        }
    }

    /// Verifies a request came from an enrolled gateway: its signature over method, path, timestamp and
    /// body must verify with the key the gateway was enrolled with, and its timestamp be fresh.
    /// - Returns: the gateway.
    public func authenticate(_ headers: SignatureHeaders, method: String, path: String, body: some DataProtocol,
                             logger: Logger) async throws -> EnrolledGateway {
        guard let gatewayID = headers.gatewayID, let timestamp = headers.timestamp, let signature = headers.signature else {
            throw APIError.badSignature("request needs the \(RequestSignature.gatewayHeader), \(RequestSignature.timestampHeader) "
                + "and \(RequestSignature.signatureHeader) headers")
        }
        guard let gateway = try await store.gateway(id: gatewayID) else {
            logger.notice("request from unknown gateway", metadata: ["gateway.id": "\(gatewayID)"])
            throw APIError.unknownGateway("gateway \(gatewayID) is not enrolled with vendor \(vendor)")
        }
        let key: Curve25519.Signing.PublicKey
        do { key = try Keys.decodePublic(gateway.publicKey) } catch {
            logger.error("enrolled gateway key is invalid", metadata: ["gateway.id": "\(gatewayID)"])
            throw APIError.internalError
        }
        do {
            try RequestSignature.verify(publicKey: key, method: method, path: path, timestamp: timestamp, signature: signature,
                                        body: body, now: now())
        } catch let error as ProtocolError {
            logger.notice("request signature refused", metadata: ["gateway.id": "\(gatewayID)", "error.code": "\(error.code)"])
            throw APIError.badSignature(error.code == .staleRequest
                ? "request timestamp is missing or more than \(Int(RequestSignature.allowedSkew))s from the vendor's clock"
                : "request signature does not verify with gateway \(gatewayID)'s enrolled key")
        }
        return gateway
    }

    // MARK: Announcements

    /// Answers an authenticated gateway's announcement with its signed plan.
    public func announce(_ announcement: Announcement, from gateway: EnrolledGateway, logger: Logger) async throws -> SignedPlan {
        guard announcement.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest,
                           "request is signed by \(gateway.id) but announces for \(announcement.gatewayID)")
        }
        let device = announcement.device
        guard !device.serial.isEmpty, device.serial.count <= Self.maxSerialLength else {
            throw APIError.malformed("device.serial must be 1-\(Self.maxSerialLength) characters")
        }
        guard (0...Self.maxPlanVersion).contains(announcement.currentPlanVersion) else {
            throw APIError.malformed("currentPlanVersion must be between 0 and \(Self.maxPlanVersion)")
        }
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        logger[metadataKey: "device.serial"] = "\(device.serial)"

        let registered: RegisteredDevice
        switch DeviceAuthenticity.check(device, registered: try await store.device(serial: device.serial)) {
        case .genuine(let d):
            registered = d
        case .unknownSerial:
            logger.notice("device refused", metadata: ["reason": "unknownSerial"])
            throw APIError.notGenuine("device \(device.serial) is not a genuine \(vendor) device")
        case .mismatchedIDs(let registered):
            logger.notice("device refused", metadata: [
                "reason": "mismatchedIDs", "device.seen": "\(device.vendorID):\(device.productID)",
                "device.registered": "\(registered.vendorID):\(registered.productID)",
            ])
            throw APIError.notGenuine("device \(device.serial) is not a genuine \(vendor) device")
        }
        guard composer.models.contains(where: { $0.name == registered.model }) else {
            logger.warning("device model missing from catalog", metadata: ["device.model": "\(registered.model)"])
            throw APIError(.unknownModel, status: .conflict, "vendor \(vendor) has no model \(registered.model) in its catalog")
        }

        let issue = issuer(gatewayID: gateway.id, gatewayVersion: announcement.currentPlanVersion)
        let (composed, signed) = try await store.recordAnnouncement(gatewayID: gateway.id, serial: registered.serial, at: now(),
                                                                    issue: issue)
        await issued(composed, logger: logger)
        return signed
    }

    /// The closure the store calls in its transaction: composes the plan from the inputs with the
    /// releases applied, signs it and returns it to be stored.
    func issuer(gatewayID: String, gatewayVersion: Int)
        -> @Sendable (PlanInputs) throws -> (plan: StoredPlan, issued: (PlanComposer.Composed, SignedPlan))
    {
        let composer = composer
        let signer = signer
        let issuedAt = now()
        return { inputs in
            let composed = try composer.applying(inputs.releases).compose(
                gatewayID: gatewayID, devices: inputs.devices,
                previous: inputs.previous.map { PlanComposer.Previous(version: $0.version, contentHash: $0.contentHash) },
                gatewayVersion: gatewayVersion, now: issuedAt
            )
            let signed = try signer.sign(composed.plan)
            let json = String(decoding: try WireJSON.encoder().encode(signed), as: UTF8.self)
            let stored = StoredPlan(gatewayID: gatewayID, version: composed.plan.version, contentHash: composed.contentHash,
                                    signedJSON: json, issuedAt: issuedAt)
            return (stored, (composed, signed))
        }
    }

    /// After a plan was stored for an announcement or a poll: logs it and, for a new version, lets the
    /// provisioner follow it. A provisioner failure does not fail the answer: the plan is stored, and the
    /// gateway's next bootstrap brings the provisioner in line again.
    func issued(_ composed: PlanComposer.Composed, logger: Logger) async {
        if !composed.omitted.isEmpty {
            logger.warning("devices left out of plan", metadata: ["device.omitted": "\(composed.omitted.joined(separator: ","))"])
        }
        logger.info("plan issued", metadata: [
            "plan.version": "\(composed.plan.version)", "plan.new": "\(composed.isNewVersion)",
            "plan.devices": "\(composed.plan.devices.count)", "plan.apps": "\(composed.plan.apps.count)",
        ])
        guard composed.isNewVersion else { return }
        do {
            try await provisioner.planIssued(composed.plan, isNewVersion: true, logger: logger)
        } catch {
            logger.warning("provisioner did not follow the plan", metadata: [
                "plan.version": "\(composed.plan.version)", "error.message": "\(error)",
            ])
        }
    }

    // MARK: Reports

    /// Records an authenticated gateway's report.
    public func report(_ report: ProvisioningReport, from gateway: EnrolledGateway, logger: Logger) async throws {
        guard report.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest, "request is signed by \(gateway.id) but reports for \(report.gatewayID)")
        }
        guard report.vendor == vendor else {
            throw APIError(.wrongVendor, status: .badRequest, "report is for vendor \(report.vendor), this is \(vendor)")
        }
        guard (0...Self.maxPlanVersion).contains(report.planVersion) else {
            throw APIError.malformed("planVersion must be between 0 and \(Self.maxPlanVersion)")
        }
        let json = String(decoding: try WireJSON.encoder().encode(report), as: UTF8.self)
        let stored = try await store.addReport(StoredReport(gatewayID: gateway.id, planVersion: report.planVersion,
                                                            outcome: report.outcome.rawValue, json: json, receivedAt: now()))
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        var metadata: Logger.Metadata = [
            "report.id": "\(stored.id ?? 0)", "plan.version": "\(report.planVersion)", "report.outcome": "\(report.outcome.rawValue)",
        ]
        if let delivery = report.delivery {
            metadata["delivery.result"] = "\(delivery.result)"
            metadata["delivery.provisioner"] = "\(delivery.provisioner)"
            if !delivery.failingControls.isEmpty { metadata["delivery.failing"] = "\(delivery.failingControls.joined(separator: ","))" }
        }
        logger.info("report received", metadata: metadata)
        if report.outcome == .applied {
            try await provisioner.nodeRegistered(report, logger: logger)
        }
    }
}
