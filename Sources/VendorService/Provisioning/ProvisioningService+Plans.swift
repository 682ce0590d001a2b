import Foundation
import GatewayProtocol
import Logging

// Polling for the current plan and fetching the bootstrap bundle: what a gateway asks after it announced.
extension ProvisioningService {
    /// Answers `POST /v1/plan`: the gateway's current plan, composed again from its devices and the
    /// current catalog (releases applied). New content gets the next version; unchanged content keeps its
    /// version and is only re-signed with a fresh expiry. 409 ``APIError/Code/noPlan`` when the gateway
    /// never announced a genuine device.
    public func currentPlan(_ request: PlanRequest, from gateway: EnrolledGateway, logger: Logger) async throws -> SignedPlan {
        guard request.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest, "request is signed by \(gateway.id) but asks for \(request.gatewayID)'s plan")
        }
        guard (0...Self.maxPlanVersion).contains(request.currentPlanVersion) else {
            throw APIError.malformed("currentPlanVersion must be between 0 and \(Self.maxPlanVersion)")
        }
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        guard let (composed, signed) = try await reissue(gatewayID: gateway.id, gatewayVersion: request.currentPlanVersion) else {
            throw Self.noPlan(gateway.id)
        }
        await issued(composed, logger: logger)
        return signed
    }

    /// Answers `POST /v1/bootstrap`: what the gateway's container needs to converge its current plan's
    /// apps, from the provisioner (Chef: registers the node once, then answers its key and run list).
    /// 409 ``APIError/Code/noPlan`` before the gateway has a plan.
    public func bootstrap(_ request: BootstrapRequest, from gateway: EnrolledGateway, logger: Logger) async throws -> BootstrapBundle {
        guard request.gatewayID == gateway.id else {
            throw APIError(.gatewayMismatch, status: .badRequest, "request is signed by \(gateway.id) but bootstraps \(request.gatewayID)")
        }
        guard (0...Self.maxPlanVersion).contains(request.planVersion) else {
            throw APIError.malformed("planVersion must be between 0 and \(Self.maxPlanVersion)")
        }
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gateway.id)"
        guard let stored = try await store.plan(gatewayID: gateway.id) else { throw Self.noPlan(gateway.id) }
        let plan: ProvisioningPlan
        do { plan = try stored.decodedPlan() } catch {
            logger.error("stored plan cannot be decoded", metadata: ["plan.version": "\(stored.version)", "error.message": "\(error)"])
            throw APIError.internalError
        }
        if request.planVersion != plan.version {
            // Answered anyway: the bundle follows the current plan, which the gateway gets on its next poll.
            logger.notice("bootstrap for another plan version", metadata: [
                "plan.version": "\(plan.version)", "plan.requested": "\(request.planVersion)",
            ])
        }
        let bundle = try await provisioner.bootstrap(plan, logger: logger)
        logger.info("bootstrap answered", metadata: [
            "plan.version": "\(plan.version)", "bootstrap.kind": "\(bundle.kind.rawValue)", "chef.node": "\(bundle.nodeName ?? "-")",
        ])
        return bundle
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
    /// The plan inside `signedJSON`, as it was signed.
    public func decodedPlan() throws -> ProvisioningPlan {
        let signed = try WireJSON.decoder().decode(SignedPlan.self, from: Data(signedJSON.utf8))
        guard let payload = Data(base64Encoded: signed.payload) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "plan payload is not base64"))
        }
        return try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload)
    }
}
