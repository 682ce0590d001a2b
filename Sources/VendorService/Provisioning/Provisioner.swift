import GatewayProtocol
import Logging

/// Work that follows the plan's life beyond storing it: registering the gateway's container as a node
/// with the vendor's configuration management (Chef server), say. The daemon calls it; what it does is
/// up to the implementation. ``NoopProvisioner`` does nothing, which is all there is for now.
public protocol Provisioner: Sendable {
    /// A plan was stored and is about to be answered. `isNewVersion` is false when an unchanged plan was
    /// only re-signed. Throwing fails the announcement (the plan stays stored).
    func planIssued(_ plan: ProvisioningPlan, isNewVersion: Bool, logger: Logger) async throws

    /// A gateway reported it applied a plan: its container exists and runs, so the node can be registered.
    func nodeRegistered(_ report: ProvisioningReport, logger: Logger) async throws
}

/// A ``Provisioner`` that does nothing.
public struct NoopProvisioner: Provisioner {
    public init() {}
    public func planIssued(_ plan: ProvisioningPlan, isNewVersion: Bool, logger: Logger) async throws {}
    public func nodeRegistered(_ report: ProvisioningReport, logger: Logger) async throws {}
}
