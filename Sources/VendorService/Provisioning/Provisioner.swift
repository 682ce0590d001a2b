import Foundation
import GatewayProtocol
import Logging

/// How the vendor's apps get into a gateway's container beyond the plan: registering the container as
/// a node with the vendor's configuration management (``ChefProvisioner``) and keeping what that
/// manages in line with the plan. ``NoopProvisioner`` delivers nothing itself.
public protocol Provisioner: Sendable {
    /// A plan was stored for `plan.gatewayID` (`isNewVersion` false: unchanged, only re-signed). Brings
    /// what the provisioner manages for that gateway in line with it (Chef: a registered node's run list)
    /// and says what it changed, nil when nothing. Must not register anything new: registration is
    /// ``bootstrap(_:logger:)``'s job.
    @discardableResult
    func planIssued(_ plan: ProvisioningPlan, isNewVersion: Bool, logger: Logger) async throws -> ProvisionerChange?

    /// A gateway reported it applied a plan.
    func nodeRegistered(_ report: ProvisioningReport, logger: Logger) async throws

    /// What the gateway's container needs to converge `plan` (the gateway's current plan): registers the
    /// container (once) and answers its credentials, or the playbook archive. The service binds the bundle
    /// (gateway, vendor, plan version, expiry, archive digest) and signs it. Throws ``APIError``s to answer
    /// with (``APIError/Code/chefUnavailable`` when the configuration management server cannot be reached).
    func bootstrap(_ plan: ProvisioningPlan, logger: Logger) async throws -> BootstrapContents
}

/// What a ``Provisioner`` answers for a bootstrap: the bundle and, for Ansible, the playbook archive
/// that travels beside it (``ProvisioningService`` puts its digest into the bundle before signing).
public struct BootstrapContents: Sendable, Equatable {
    public var bundle: BootstrapBundle
    /// A gzip'd tar of the playbook directory, at most `BootstrapBundle.maxPlaybookBytes`.
    public var playbookArchive: Data?

    public init(bundle: BootstrapBundle, playbookArchive: Data? = nil) {
        self.bundle = bundle
        self.playbookArchive = playbookArchive
    }
}

extension BootstrapBundle {
    /// A bundle for `plan`: its gateway, vendor and version, the run list of its apps
    /// (``AppCatalog/runList(of:)``) and, until the service sets the bundle's own, the plan's expiry.
    init(_ kind: Kind, for plan: ProvisioningPlan, chefServerURL: String? = nil, nodeName: String? = nil, clientKeyPEM: String? = nil,
         environment: String? = nil, extraVars: [String: String]? = nil) {
        self.init(kind: kind, gatewayID: plan.gatewayID, vendor: plan.vendor, planVersion: plan.version, expiresAt: plan.expiresAt,
                  chefServerURL: chefServerURL, nodeName: nodeName, clientKeyPEM: clientKeyPEM, runList: AppCatalog.runList(of: plan.apps),
                  environment: environment, extraVars: extraVars)
    }
}

/// What a ``Provisioner`` changed to follow a plan.
public struct ProvisionerChange: Sendable, Equatable {
    /// The node changed, e.g. `gw-0123456789abcdef-acme`.
    public var node: String
    /// Its run list now.
    public var runList: [String]

    public init(node: String, runList: [String]) {
        self.node = node
        self.runList = runList
    }
}

/// A ``Provisioner`` that delivers nothing: bootstrap answers `kind: none` with the plan's run list.
public struct NoopProvisioner: Provisioner {
    public init() {}
    public func planIssued(_ plan: ProvisioningPlan, isNewVersion: Bool, logger: Logger) async throws -> ProvisionerChange? { nil }
    public func nodeRegistered(_ report: ProvisioningReport, logger: Logger) async throws {}
    public func bootstrap(_ plan: ProvisioningPlan, logger: Logger) async throws -> BootstrapContents {
        BootstrapContents(bundle: BootstrapBundle(.none, for: plan))
    }
}
