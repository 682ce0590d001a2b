import Foundation
import GatewayProtocol
import Logging

// Polling for the current plan and fetching the bootstrap bundle: what a gateway asks after it announced.
extension ProvisioningService {
    /// Answers `POST /v1/plan`: the gateway's current plan, composed again from its devices and the
    /// current catalog (releases applied). Unchanged content is answered with the stored plan's very same
    /// signed bytes while it has more than half of its lifetime left; new content, or a plan nearing its
    /// expiry, gets the next version. 409 ``APIError/Code/noPlan`` when the gateway never announced a
    /// genuine device.
    public func currentPlan(_ request: PlanRequest, from gateway: EnrolledGateway, logger: Logger) async throws -> SignedPlan {
        try WireJSON.decoder().decode(SignedPlan.self, from: Data(try await currentPlanJSON(request, from: gateway, logger: logger).utf8))
    }

    /// As ``currentPlan(_:from:logger:)``, as the `SignedPlan` JSON to answer with (WireJSON: for a stored plan,
    /// its stored bytes as they are).
    ///
    /// - Parameter generation: what the request's nonce claim read (``PlanGeneration``). When the gateway's
    ///   plan was last found unchanged at that very generation, nothing it is composed from changed since,
    ///   and it is answered without reading the store at all.
    func currentPlanJSON(_ request: PlanRequest, from gateway: EnrolledGateway, generation: PlanGeneration? = nil,
                         logger: Logger) async throws -> String {
        try APIError.checkingFields {
            try Fields.gatewayID.check(request.gatewayID, at: "gatewayID")
            try Self.checkVersion(request.currentPlanVersion, at: "currentPlanVersion")
        }
        guard request.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest, "request is signed by \(gateway.id) but asks for \(request.gatewayID)'s plan")
        }
        // The common case first, without a logger of its own (setting its metadata cost more than the lookup).
        if let generation, let known = unchangedPlans.entry(for: generation, gatewayID: gateway.id), let stored = known.inputs.previous,
           composer.answersAgain(known.plan, gatewayVersion: request.currentPlanVersion, now: now()) {
            answeredUnchanged(known.plan, omitted: known.omitted, gatewayID: gateway.id, logger: logger)
            return stored.signedJSON
        }
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        // Most polls find their plan unchanged: composed from a snapshot, without locking the gateway's row
        // or writing anything, the stored plan is answered as is. A poll that reads the very inputs an
        // earlier one found unchanged does not even compose (`UnchangedPlans`). Only a changed plan takes the
        // locked path, which composes again from what it reads under the lock.
        let snapshot = try await store.planInputs(gatewayID: gateway.id)
        if let stored = snapshot.previous {
            if let known = unchangedPlans.entry(for: snapshot, gatewayID: gateway.id),
               composer.answersAgain(known.plan, gatewayVersion: request.currentPlanVersion, now: now()) {
                answeredUnchanged(known.plan, omitted: known.omitted, gatewayID: gateway.id, logger: logger)
                return stored.signedJSON
            }
            let issue = issuer(gatewayID: gateway.id, gatewayVersion: request.currentPlanVersion)
            if case let (plan, (composed, _)) = try issue(snapshot), plan == stored {
                unchangedPlans.remember(.init(inputs: snapshot, plan: composed.plan, omitted: composed.omitted), gatewayID: gateway.id)
                answeredUnchanged(composed.plan, omitted: composed.omitted, gatewayID: gateway.id, logger: logger)
                return stored.signedJSON
            }
        }
        let issue = issuer(gatewayID: gateway.id, gatewayVersion: request.currentPlanVersion)
        guard let (composed, signed) = try await store.reissuePlan(gatewayID: gateway.id, issue: issue) else {
            throw Self.noPlan(gateway.id)
        }
        await issued(composed, logger: logger)
        return String(decoding: try WireJSON.encoder().encode(signed), as: UTF8.self)
    }

    /// ``issued(_:logger:)`` for a plan answered again as stored: nothing for the provisioner to follow.
    private func answeredUnchanged(_ plan: ProvisioningPlan, omitted: [String], gatewayID: String, logger: Logger) {
        if !omitted.isEmpty {
            logger.warning("devices left out of plan", metadata: ["gateway.id": "\(gatewayID)", "device.omitted": "\(omitted.joined(separator: ","))"])
        }
        logger.debug("plan issued", metadata: [
            "gateway.id": "\(gatewayID)", "plan.version": "\(plan.version)", "plan.new": "false", "plan.devices": "\(plan.devices.count)", "plan.apps": "\(plan.apps.count)",
        ])
    }

    /// Answers `POST /v1/bootstrap`: what the gateway's container needs to converge its current plan's
    /// apps, from the provisioner (Chef: registers the node once, then answers its key and run list), as a
    /// `SignedBootstrap` signed with the plan-signing key and bound to the gateway, the vendor, the plan
    /// version and an expiry (`BootstrapBundle.lifetime` from now); an Ansible playbook travels beside it,
    /// bound by its digest.
    ///
    /// Only the current plan is bootstrapped: 409 ``APIError/Code/planVersionMismatch`` when the request
    /// names another version (a gateway behind polls its plan first), 409 ``APIError/Code/noPlan`` before
    /// the gateway has a plan.
    public func bootstrap(_ request: BootstrapRequest, from gateway: EnrolledGateway, logger: Logger) async throws -> SignedBootstrap {
        try APIError.checkingFields {
            try Fields.gatewayID.check(request.gatewayID, at: "gatewayID")
            try Self.checkVersion(request.planVersion, at: "planVersion")
        }
        guard request.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest, "request is signed by \(gateway.id) but bootstraps \(request.gatewayID)")
        }
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        guard let stored = try await store.plan(gatewayID: gateway.id) else { throw Self.noPlan(gateway.id) }
        let plan: ProvisioningPlan
        do { plan = try stored.decodedPlan() } catch {
            logger.error("stored plan cannot be decoded", metadata: ["plan.version": "\(stored.version)", "error.message": "\(error)"])
            throw APIError.internalError
        }
        guard request.planVersion == plan.version else {
            logger.notice("bootstrap for another plan version refused", metadata: [
                "plan.version": "\(plan.version)", "plan.requested": "\(request.planVersion)",
            ])
            throw APIError(.planVersionMismatch, status: .conflict,
                           "gateway \(gateway.id)'s current plan is version \(plan.version), not \(request.planVersion): "
                               + "poll the plan (POST /v1/plan) and bootstrap for that version")
        }
        let contents = try await provisioner.bootstrap(plan, logger: logger)
        var bundle = contents.bundle
        bundle.gatewayID = plan.gatewayID
        bundle.vendor = vendor
        bundle.planVersion = plan.version
        bundle.expiresAt = now().addingTimeInterval(BootstrapBundle.lifetime)
        bundle.playbookArchiveSHA256 = contents.playbookArchive.map { Keys.sha256Hex($0) }
        let signed = try signer.sign(bundle, archive: contents.playbookArchive)
        logger.info("bootstrap answered", metadata: [
            "plan.version": "\(plan.version)", "bootstrap.kind": "\(bundle.kind.rawValue)", "chef.node": "\(bundle.nodeName ?? "-")",
        ])
        return signed
    }

    /// Composes and stores the gateway's plan again (see ``VendorStore/reissuePlan(gatewayID:issue:)``);
    /// nil when it has none.
    func reissue(gatewayID: String, gatewayVersion: Int) async throws -> (PlanComposer.Composed, SignedPlan)? {
        try await store.reissuePlan(gatewayID: gatewayID, issue: issuer(gatewayID: gatewayID, gatewayVersion: gatewayVersion))
    }

    static func noPlan(_ gatewayID: String) -> APIError {
        APIError(.noPlan, status: .conflict, "gateway \(gatewayID) has no plan yet: announce a genuine device first")
    }
}

extension StoredPlan {
    /// The `SignedPlan` exactly as it was answered.
    public func signedPlan() throws -> SignedPlan {
        try WireJSON.decoder().decode(SignedPlan.self, from: Data(signedJSON.utf8))
    }

    /// The plan inside `signedJSON`, as it was signed.
    public func decodedPlan() throws -> ProvisioningPlan {
        let signed = try signedPlan()
        guard let payload = Data(base64Encoded: signed.payload) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "plan payload is not base64"))
        }
        return try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload)
    }

    /// What ``PlanComposer`` needs of it; a plan that cannot be decoded is never answered again.
    var previous: PlanComposer.Previous {
        PlanComposer.Previous(version: version, contentHash: contentHash, plan: try? decodedPlan())
    }
}
