import Chef
import Foundation
import GatewayProtocol
import Logging

/// Delivers the vendor's apps through its Chef server, the way `knife bootstrap` does without a
/// validator key: the daemon's admin creates a client for the gateway's container, the node is saved
/// signed as that new client (so the client owns it and may update it later), and the container gets
/// the client's key in its bootstrap bundle. App updates are delivered by changing the node's run list.
///
/// The node and its client are named `<gatewayID>-<vendor>` (``nodeName(gatewayID:vendor:)``). The
/// node's run list is always the run list of the gateway's current plan (``AppCatalog/runList(of:)``).
///
/// Operations on one gateway are serialized within the process (two concurrent bootstraps must not both
/// register a client, the second one would replace the first one's key).
public struct ChefProvisioner: Provisioner {
    public let vendor: String
    public let settings: VendorConfiguration.ChefSettings
    /// Signs as `settings.adminName`; `signing(as:)` copies sign as a node's client.
    let admin: ChefClient
    let store: any VendorStore
    let now: @Sendable () -> Date
    let locks = KeyedLock()

    /// - Parameters:
    ///   - admin: a client of `settings.serverURL` signing as the admin.
    ///   - now: the clock registrations are dated with.
    public init(vendor: String, settings: VendorConfiguration.ChefSettings, admin: ChefClient, store: any VendorStore,
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.vendor = vendor
        self.settings = settings
        self.admin = admin
        self.store = store
        self.now = now
    }

    /// The provisioner the configuration asks for, reading the admin key file; nil without a `chef` section.
    /// - Throws: ``ConfigurationError`` naming `chef.adminKey` when the key cannot be read or is not an RSA key.
    public static func configured(by configuration: VendorConfiguration, store: any VendorStore, logger: Logger,
                                  now: @escaping @Sendable () -> Date = { Date() }) throws -> ChefProvisioner? {
        guard let settings = configuration.chef else { return nil }
        var admin = try settings.adminClient(logger: logger)
        // Well below a gateway's request timeout; a bootstrap makes at most four calls.
        admin.requestTimeout = .seconds(10)
        return ChefProvisioner(vendor: configuration.vendor, settings: settings, admin: admin, store: store, now: now)
    }

    /// The Chef node (and client) name of a gateway's container: `<gatewayID>-<vendor>`.
    public static func nodeName(gatewayID: String, vendor: String) -> String { "\(gatewayID)-\(vendor)" }

    var environment: String { settings.environment ?? "_default" }

    // MARK: Provisioner

    /// Sets the run list (and environment) of the gateway's node if the gateway is registered and the node
    /// differs; a node deleted on the server is saved again as its client. Throws the ``ChefError`` when
    /// the server cannot be reached or no longer accepts the client's key (the next bootstrap registers
    /// the client again).
    public func planIssued(_ plan: ProvisioningPlan, isNewVersion: Bool, logger: Logger) async throws -> ProvisionerChange? {
        guard try await store.chefRegistration(gatewayID: plan.gatewayID) != nil else { return nil }
        let runList = AppCatalog.runList(of: plan.apps)
        return try await locks.withLock(plan.gatewayID) {
            // Read again under the lock: a bootstrap may have registered the client again meanwhile.
            guard let registration = try await store.chefRegistration(gatewayID: plan.gatewayID) else { return nil }
            switch try await follow(registration, runList: runList, logger: logger) {
            case .unchanged: return nil
            case .changed(let change): return change
            case .clientRejected(let error): throw error
            }
        }
    }

    public func nodeRegistered(_ report: ProvisioningReport, logger: Logger) async throws {}

    /// Registers the gateway's client and node on first call; later calls make sure the node follows
    /// `plan` and answer the stored key (registering again only if the server no longer accepts it).
    public func bootstrap(_ plan: ProvisioningPlan, logger: Logger) async throws -> BootstrapContents {
        let runList = AppCatalog.runList(of: plan.apps)
        let gatewayID = plan.gatewayID
        let registration: ChefRegistration
        do {
            registration = try await locks.withLock(gatewayID) {
                if let existing = try await store.chefRegistration(gatewayID: gatewayID) {
                    switch try await follow(existing, runList: runList, logger: logger) {
                    case .unchanged, .changed:
                        return existing
                    case .clientRejected(let error):
                        logger.warning("chef client key rejected, registering again", metadata: [
                            "chef.node": "\(existing.nodeName)", "chef.error": "\(error)",
                        ])
                    }
                }
                return try await register(gatewayID: gatewayID, runList: runList, logger: logger)
            }
        } catch let error as ChefError {
            throw Self.apiError(error, logger: logger)
        }
        return BootstrapContents(bundle: BootstrapBundle(.chef, for: plan, chefServerURL: settings.containerChefServerURL,
                                                         nodeName: registration.nodeName, clientKeyPEM: registration.clientKeyPEM,
                                                         environment: settings.environment))
    }

    // MARK: Steps

    /// knife's validatorless registration: create the client (or give it a new key if it exists), save
    /// the node signed as the client, then remember the key. A crash before the last step is repaired
    /// by the next bootstrap (the client exists: new key; the node is saved again).
    private func register(gatewayID: String, runList: [String], logger: Logger) async throws -> ChefRegistration {
        let name = Self.nodeName(gatewayID: gatewayID, vendor: vendor)
        let client = try await admin.registerClient(named: name)
        let asClient = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: client.privateKeyPEM))
        try await asClient.saveNode(newNode(name, gatewayID: gatewayID, runList: runList))
        let registration = ChefRegistration(gatewayID: gatewayID, nodeName: name, clientKeyPEM: client.privateKeyPEM, registeredAt: now())
        try await store.saveChefRegistration(registration)
        logger.info("chef node registered", metadata: ["chef.node": "\(name)", "chef.runList": "\(runList.joined(separator: ","))"])
        return registration
    }

    private enum Followed {
        case unchanged
        case changed(ProvisionerChange)
        /// The server does not accept the stored key (client deleted or its key replaced).
        case clientRejected(ChefError)
    }

    /// Makes the registered node's run list and environment the wanted ones (read-modify-write, signed as
    /// the node's own client, which also proves the stored key still works).
    private func follow(_ registration: ChefRegistration, runList: [String], logger: Logger) async throws -> Followed {
        let name = registration.nodeName
        let asClient: ChefClient
        do { asClient = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: registration.clientKeyPEM)) } catch let error
            as ChefError
        {
            return .clientRejected(error)
        }
        let environment = environment
        do {
            let node = try await asClient.node(named: name)
            guard node.runList != runList || node.chefEnvironment != environment else { return .unchanged }
            try await asClient.updateNode(named: name) { node in
                node.runList = runList
                node.chefEnvironment = environment
            }
            logger.info("chef node run list set", metadata: ["chef.node": "\(name)", "chef.runList": "\(runList.joined(separator: ","))"])
        } catch let error as ChefError where error.code == .notFound {
            logger.warning("chef node missing, saving it again", metadata: ["chef.node": "\(name)"])
            try await asClient.saveNode(newNode(name, gatewayID: registration.gatewayID, runList: runList))
        } catch let error as ChefError where error.code == .unauthorized {
            return .clientRejected(error)
        }
        return .changed(ProvisionerChange(node: name, runList: runList))
    }

    private func newNode(_ name: String, gatewayID: String, runList: [String]) -> ChefNode {
        ChefNode(name: name, runList: runList, environment: environment,
                 normal: ["iotgw": ["gateway": .string(gatewayID), "vendor": .string(vendor)]])
    }

    /// 503 `chefUnavailable` when the server is down, slow or failing (the gateway retries); anything
    /// else (the admin key refused, say) is the vendor's to fix: logged, answered as a 500.
    static func apiError(_ error: ChefError, logger: Logger) -> APIError {
        if error.code == .unreachable || error.code == .timeout || (error.code == .server && error.status >= 500) {
            logger.warning("chef server unavailable", metadata: ["chef.error": "\(error)"])
            return APIError(.chefUnavailable, status: .serviceUnavailable, "the vendor's Chef server is unavailable; try again later")
        }
        logger.error("chef request failed", metadata: ["chef.error.code": "\(error.code)", "chef.error": "\(error)"])
        return .internalError
    }
}
