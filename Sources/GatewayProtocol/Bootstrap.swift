/// `POST /v1/plan`: the gateway polls its current plan (gateways are behind NAT, so updates are
/// pulled, never pushed). Answered with a `SignedPlan` like an announcement.
public struct PlanRequest: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var currentPlanVersion: Int

    public init(gatewayID: String, currentPlanVersion: Int) {
        self.gatewayID = gatewayID
        self.currentPlanVersion = currentPlanVersion
    }
}

/// `POST /v1/bootstrap`: what the container needs to converge the vendor's apps. Kept out of the
/// signed plan because it carries a secret (the node's Chef client key) and the plan is stored and
/// shown to the owner; it travels only in answer to a signed gateway request.
public struct BootstrapRequest: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var planVersion: Int

    public init(gatewayID: String, planVersion: Int) {
        self.gatewayID = gatewayID
        self.planVersion = planVersion
    }
}

public struct BootstrapBundle: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// Chef: the vendor registered a client and node on its Chef server.
        case chef
        /// Ansible: the vendor ships a playbook that the gateway converges locally in the container.
        case ansible
        /// The vendor delivers no apps through a provisioner.
        case none
    }
    public var kind: Kind
    /// e.g. `http://chef.acme.example:4545` or `https://chef.example/organizations/acme`.
    public var chefServerURL: String?
    public var nodeName: String?
    /// PEM of the node's client key (the container's `/etc/chef/client.pem`).
    public var clientKeyPEM: String?
    /// The node's run list on the Chef server now.
    public var runList: [String]
    public var environment: String?
    /// PEM certificates the container must trust for the Chef server (`/etc/chef/trusted_certs`).
    public var trustedCerts: [String]
    /// Ansible: base64 of a gzip'd tar of the playbook directory (`site.yml` at its top).
    public var playbookArchive: String?
    /// Ansible: variables passed with `-e` (e.g. `app_version`).
    public var extraVars: [String: String]?

    /// Largest playbook archive a gateway accepts, decoded.
    public static let maxPlaybookBytes = 4 * 1024 * 1024

    public init(kind: Kind, chefServerURL: String? = nil, nodeName: String? = nil, clientKeyPEM: String? = nil, runList: [String] = [],
                environment: String? = nil, trustedCerts: [String] = [], playbookArchive: String? = nil,
                extraVars: [String: String]? = nil) {
        self.kind = kind
        self.chefServerURL = chefServerURL
        self.nodeName = nodeName
        self.clientKeyPEM = clientKeyPEM
        self.runList = runList
        self.environment = environment
        self.trustedCerts = trustedCerts
        self.playbookArchive = playbookArchive
        self.extraVars = extraVars
    }
}

/// What a delivery did, attached to a `ProvisioningReport`.
public struct DeliverySummary: Sendable, Codable, Equatable {
    /// `applied`, `rolled-back` or `failed`.
    public var result: String
    public var provisioner: String
    public var convergeSummary: String?
    /// Per control: `passed`, `failed` or `skipped`.
    public var controls: [String: String]
    public var failingControls: [String]
    /// The snapshot restored, if the delivery was rolled back.
    public var restoredSnapshot: String?
    public var message: String

    public init(result: String, provisioner: String, convergeSummary: String?, controls: [String: String], failingControls: [String],
                restoredSnapshot: String?, message: String) {
        self.result = result
        self.provisioner = provisioner
        self.convergeSummary = convergeSummary
        self.controls = controls
        self.failingControls = failingControls
        self.restoredSnapshot = restoredSnapshot
        self.message = message
    }
}
