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
    /// The host names requests must be signed for (the configuration's `publicHosts`); nil: the request's
    /// own `Host` header host.
    public let publicHosts: Set<String>?
    let store: any VendorStore
    let signer: PlanSigner
    let provisioner: any Provisioner
    let now: @Sendable () -> Date
    /// What the daemon counts (plans signed, reports received, requests); served on the metrics listener.
    public let metrics: VendorMetrics
    /// The inputs each gateway's stored plan was last found unchanged for (polls reading them again answer it
    /// without composing).
    let unchangedPlans = UnchangedPlans()
    /// The gateway rows signed requests were last checked against, with their generation.
    let knownGateways = BoundedCache<GatewayRecord>()
    /// What session keys are derived from (`RequestSession`): the same on every replica with this signing key.
    let sessionSecret: Data
    /// The sequence numbers this replica has seen per session ticket.
    let sessionWindows = SessionWindows()

    /// - Parameter now: the wall clock; tests pass a fixed one.
    /// - Parameter metrics: where counts go; a fresh registry by default (each service its own, no global state).
    public init(configuration: VendorConfiguration, store: any VendorStore, signer: PlanSigner,
                provisioner: any Provisioner = NoopProvisioner(), now: @escaping @Sendable () -> Date = { Date() },
                metrics: VendorMetrics = VendorMetrics()) {
        vendor = configuration.vendor
        composer = PlanComposer(configuration: configuration)
        publicHosts = configuration.publicHosts.map(Set.init)
        self.store = store
        self.signer = signer
        sessionSecret = signer.sessionSecret
        self.provisioner = provisioner
        self.now = now
        self.metrics = metrics
    }

    /// Plan versions a gateway may claim to hold; far above any real count, far below overflow.
    static let maxPlanVersion = Int(Int32.max)
    /// How long a request's nonce is remembered: a request signed at `t` passes the timestamp check until
    /// `t + allowedSkew`, which is at most twice the skew after the vendor first saw it.
    static let nonceLifetime = 2 * RequestSignature.allowedSkew

    // MARK: Authentication

    /// Verifies a request came from an enrolled gateway and is meant for this daemon, once
    /// (`RequestSignature` v2): the five `X-IoTGW-*` headers must be present; the audience vendor must be
    /// this daemon's (401 ``APIError/Code/wrongAudience``); the timestamp within
    /// `RequestSignature.allowedSkew` of the clock and the signature over method, path, host, vendor,
    /// gateway, timestamp, nonce and body valid with the gateway's enrolled key for one of this daemon's
    /// hosts (401 ``APIError/Code/badSignature``); and only then, so that nobody without the key can burn
    /// a gateway's nonces, the nonce is claimed (401 ``APIError/Code/replayedRequest`` when already used).
    ///
    /// - Parameter requestHost: the request's `Host` header (or HTTP/2 authority) as received; it is the
    ///   accepted host only when the configuration has no `publicHosts`.
    /// - Returns: the gateway.
    public func authenticate(_ received: RequestSignature.Received, method: String, path: String, requestHost: String?,
                             body: some DataProtocol, logger: Logger) async throws -> EnrolledGateway {
        try await authenticateRequest(received, method: method, path: path, requestHost: requestHost, body: body, logger: logger).gateway
    }

    /// As ``authenticate(_:method:path:requestHost:body:logger:)``, with the ``PlanGeneration`` its nonce claim
    /// read.
    ///
    /// The gateway's key is checked against this replica's copy of its row when it has one (read from the
    /// store otherwise). The claim reads the row's generation after the request arrived: a copy older than
    /// that (revoked, withdrawn, another key) is read again, and checked again, before anything is answered.
    func authenticateRequest(_ received: RequestSignature.Received, method: String, path: String, requestHost: String?,
                             body: some DataProtocol, logger: Logger) async throws -> (gateway: EnrolledGateway, generation: PlanGeneration) {
        guard let gatewayID = received.gatewayID, received.vendor != nil, received.timestamp != nil, let nonce = received.nonce,
              received.signature != nil else {
            throw APIError.badSignature("request needs the \(RequestSignature.gatewayHeader), \(RequestSignature.vendorHeader), "
                + "\(RequestSignature.timestampHeader), \(RequestSignature.nonceHeader) and \(RequestSignature.signatureHeader) headers")
        }
        let hosts = acceptedHosts(requestHost: requestHost)
        let now = now()
        func read() async throws -> GatewayRecord { try await readGateway(gatewayID, logger: logger) }
        func verify(_ record: GatewayRecord) throws {
            try verifySignature(received, of: record.gateway, method: method, path: path, hosts: hosts, body: body, now: now, logger: logger)
        }
        var record: GatewayRecord
        if let known = knownGateways.value(for: gatewayID) {
            record = known
            do { try verify(record) } catch {
                // Refused with the copy: decided by the store's row.
                record = try await read()
                try verify(record)
            }
        } else {
            record = try await read()
            try verify(record)
        }
        guard let generation = try await store.claimNonceReadingGeneration(gatewayID: record.gateway.id, nonce: nonce,
                                                                           expiresAt: now.addingTimeInterval(Self.nonceLifetime), now: now) else {
            logger.notice("request replayed", metadata: ["gateway.id": "\(record.gateway.id)", "request.nonce": .untrusted(nonce)])
            throw APIError(.replayedRequest, status: .unauthorized, "request nonce was already used: every request needs a fresh nonce")
        }
        if generation.gateway != record.generation {
            let checked = record
            record = try await read()
            if record.gateway.publicKey != checked.gateway.publicKey { try verify(record) }
        }
        return (record.gateway, generation)
    }

    /// The store's row of an enrolled, unrevoked gateway, kept in ``knownGateways`` (403 `unknownGateway` otherwise,
    /// and the kept copy is dropped).
    func readGateway(_ gatewayID: String, logger: Logger) async throws -> GatewayRecord {
        guard Fields.gatewayID.isValid(gatewayID), let record = try await store.gatewayRecord(id: gatewayID) else {
            knownGateways.remove(gatewayID)
            logger.notice("request from unknown gateway", metadata: ["gateway.id": .untrusted(gatewayID)])
            throw APIError.unknownGateway("gateway \(Fields.quote(gatewayID)) is not enrolled with vendor \(vendor)")
        }
        knownGateways.set(record, for: gatewayID)
        return record
    }

    /// Checks the request's signature with `gateway`'s key; refusals are logged and thrown as ``APIError``s.
    private func verifySignature(_ received: RequestSignature.Received, of gateway: EnrolledGateway, method: String, path: String,
                                 hosts: Set<String>, body: some DataProtocol, now: Date, logger: Logger) throws {
        let key: Curve25519.Signing.PublicKey
        do { key = try Keys.decodePublic(gateway.publicKey) } catch {
            logger.error("enrolled gateway key is invalid", metadata: ["gateway.id": "\(gateway.id)"])
            throw APIError.internalError
        }
        do {
            try RequestSignature.verify(received, publicKey: key, method: method, path: path, vendor: vendor, hosts: hosts, body: body,
                                        now: now)
        } catch let error as ProtocolError {
            let audience = received.vendor ?? ""
            logger.notice("request signature refused", metadata: [
                "gateway.id": "\(gateway.id)", "error.code": "\(error.code)", "request.vendor": .untrusted(audience),
            ])
            switch error.code {
            case .wrongAudience:
                throw APIError(.wrongAudience, status: .unauthorized,
                               "request is signed for vendor \(Fields.quote(audience)), this daemon serves \(vendor)")
            case .staleRequest:
                throw APIError.badSignature("request timestamp is missing or more than \(Int(RequestSignature.allowedSkew))s from the vendor's clock")
            default:
                let forHosts = hosts.isEmpty
                    ? "(the request names no host)" : "and host " + hosts.sorted().map { Fields.quote($0) }.joined(separator: " or ")
                throw APIError.badSignature("request signature does not verify with gateway \(gateway.id)'s enrolled key for vendor \(vendor) "
                    + forHosts)
            }
        }
    }

    /// The hosts a request may be signed for: the configured `publicHosts`, or else the host of the
    /// request's own `Host` header (weaker, see ``VendorConfiguration/publicHosts``).
    func acceptedHosts(requestHost: String?) -> Set<String> {
        if let publicHosts { return publicHosts }
        return requestHost.flatMap(Self.host(ofAuthority:)).map { [$0] } ?? []
    }

    /// `Example.com:8470` → `example.com`, `[::1]:8470` → `::1`; nil when nothing is left.
    static func host(ofAuthority authority: String) -> String? {
        var host = Substring(authority)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            host = host[host.index(after: host.startIndex)..<close]
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        return host.isEmpty ? nil : host.lowercased()
    }

    // MARK: Announcements

    /// Answers an authenticated gateway's announcement with its signed plan. Every field is checked
    /// (`Fields`) before anything is looked up or stored: 400 ``APIError/Code/invalidField``.
    public func announce(_ announcement: Announcement, from gateway: EnrolledGateway, logger: Logger) async throws -> SignedPlan {
        try APIError.checkingFields {
            try Fields.gatewayID.check(announcement.gatewayID, at: "gatewayID")
            try announcement.device.validate()
            try Self.checkVersion(announcement.currentPlanVersion, at: "currentPlanVersion")
        }
        guard announcement.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest,
                           "request is signed by \(gateway.id) but announces for \(announcement.gatewayID)")
        }
        let device = announcement.device
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        logger[metadataKey: "device.serial"] = .untrusted(device.serial)

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
    /// releases applied and returns it to be stored: the stored plan itself, unchanged (the very same
    /// signed bytes), when ``PlanComposer`` keeps it, else the new version, signed.
    func issuer(gatewayID: String, gatewayVersion: Int)
        -> @Sendable (PlanInputs) throws -> (plan: StoredPlan, issued: (PlanComposer.Composed, SignedPlan))
    {
        let composer = composer
        let signer = signer
        let issuedAt = now()
        return { inputs in
            let composed = try composer.applying(inputs.releases).compose(
                gatewayID: gatewayID, devices: inputs.withdrawn ? [] : inputs.devices, previous: inputs.previous.map { $0.previous },
                gatewayVersion: gatewayVersion, now: issuedAt
            )
            if !composed.isNewVersion, let stored = inputs.previous {
                return (stored, (composed, try stored.signedPlan()))
            }
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
        // A poll answered with the unchanged plan is the common case: not worth an info line each.
        logger.log(level: composed.isNewVersion ? .info : .debug, "plan issued", metadata: [
            "plan.version": "\(composed.plan.version)", "plan.new": "\(composed.isNewVersion)",
            "plan.devices": "\(composed.plan.devices.count)", "plan.apps": "\(composed.plan.apps.count)",
        ])
        guard composed.isNewVersion else { return }
        metrics.planSigned()
        do {
            try await provisioner.planIssued(composed.plan, isNewVersion: true, logger: logger)
        } catch {
            logger.warning("provisioner did not follow the plan", metadata: [
                "plan.version": "\(composed.plan.version)", "error.message": "\(error)",
            ])
        }
    }

    // MARK: Reports

    /// Records an authenticated gateway's report. Every field is checked (`ProvisioningReport.validate()`)
    /// before anything is stored: 400 ``APIError/Code/invalidField``.
    public func report(_ report: ProvisioningReport, from gateway: EnrolledGateway, logger: Logger) async throws {
        try APIError.checkingFields { try report.validate() }
        guard report.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest, "request is signed by \(gateway.id) but reports for \(report.gatewayID)")
        }
        guard report.vendor == vendor else {
            throw APIError(.wrongVendor, status: .badRequest, "report is for vendor \(report.vendor), this is \(vendor)")
        }
        let json = String(decoding: try WireJSON.encoder().encode(report), as: UTF8.self)
        let stored = try await store.addReport(StoredReport(gatewayID: gateway.id, planVersion: report.planVersion,
                                                            outcome: report.outcome.rawValue, json: json, receivedAt: now()))
        metrics.reportReceived(report.outcome)
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        var metadata: Logger.Metadata = [
            "report.id": "\(stored.id ?? 0)", "plan.version": "\(report.planVersion)", "report.outcome": "\(report.outcome.rawValue)",
        ]
        if let delivery = report.delivery {
            metadata["delivery.result"] = "\(delivery.result)"
            metadata["delivery.provisioner"] = "\(delivery.provisioner)"
            if !delivery.failingControls.isEmpty { metadata["delivery.failing"] = .untrusted(delivery.failingControls.joined(separator: ",")) }
        }
        logger.info("report received", metadata: metadata)
        if report.outcome == .applied {
            try await provisioner.nodeRegistered(report, logger: logger)
        }
    }

    /// A plan version from a gateway: 0 (none) to ``maxPlanVersion``.
    static func checkVersion(_ version: Int, at path: String) throws {
        guard (0...maxPlanVersion).contains(version) else {
            throw ProtocolError(.invalidField, "\(path): \(version) must be between 0 and \(maxPlanVersion)")
        }
    }
}

extension DeviceIdentity {
    /// Checks what a gateway says about a device against `Fields`: the serial, 4 lowercase hex digit
    /// USB IDs, printable manufacturer and product strings of at most 128 characters, a subsystem name.
    func validate() throws {
        try Fields.serial.check(serial, at: "device.serial")
        try Fields.usbID.named("vendor ID").check(vendorID, at: "device.vendorID")
        try Fields.usbID.named("product ID").check(productID, at: "device.productID")
        for (field, value) in [("manufacturer", manufacturer), ("product", product)] {
            guard let value else { continue }
            guard Fields.isShowable(value, max: 128) else {
                throw ProtocolError(.invalidField, "device.\(field): \(Fields.quote(value)) must be at most 128 printable characters")
            }
        }
        try Fields.name.named("subsystem").check(subsystem, at: "device.subsystem")
    }
}

extension Logger.MetadataValue {
    /// Text from a gateway for log metadata: escaped (`Fields.escaped`), at most 128 characters.
    static func untrusted(_ value: String) -> Logger.MetadataValue { .string(Fields.escaped(value, max: 128)) }
}
