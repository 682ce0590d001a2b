import Chef
import Foundation
import GatewayProtocol
import InSpec
import Logging
import LXD

/// One delivery of a vendor's apps into its container, from a verified bootstrap bundle.
public struct DeliveryJob: Sendable {
    public var vendor: String
    public var container: String
    public var planVersion: Int
    public var bootstrap: VerifiedBootstrap
    /// Only the very first converge passes chef-client's `-j first-boot.json`.
    public var firstBoot: Bool
    /// Local InSpec profile directories, already resolved inside the owner's `inspecDirectory`.
    public var profiles: [String]
    public var snapshot: String
    public var waitForNetwork: Bool
    /// The vendor's container lock (reconcile holds it too).
    public var lock: AsyncMutex
}

/// Runs deliveries, so the vendor worker's state machine can be tested without LXD.
public protocol DeliveryDriver: Sendable {
    /// Snapshot, bootstrap, converge, validate, keep or restore; `journal` is told each phase first.
    func deliver(_ job: DeliveryJob, journal: @escaping DeliveryJournal) async throws -> DeliveryReport
    /// Repairs a delivery a crash interrupted, from its recorded phase.
    func recover(_ txn: DeliveryTransaction, container: String, lock: AsyncMutex) async throws
}

/// The real driver: LXD's file and exec APIs, chef-client or ansible-playbook, InSpec.
public struct LXDDeliveryDriver: DeliveryDriver {
    let lxd: LXDClient
    let delivery: GatewayConfig.Delivery
    let logger: Logger

    public init(lxd: LXDClient, delivery: GatewayConfig.Delivery, logger: Logger) {
        self.lxd = lxd
        self.delivery = delivery
        self.logger = logger
    }

    var validationPolicy: ValidationPolicy {
        ValidationPolicy(mode: delivery.validationMode == "report_only" ? .reportOnly : .enforced, abortOnFailure: delivery.abortOnFailure,
                         allowList: delivery.allowList, denyList: delivery.denyList)
    }

    var appDelivery: AppDelivery {
        var d = AppDelivery(lxd: lxd, logger: logger)
        d.keepSnapshots = delivery.keepSnapshots
        d.environment = delivery.environment
        return d
    }

    public func deliver(_ job: DeliveryJob, journal: @escaping DeliveryJournal) async throws -> DeliveryReport {
        if job.waitForNetwork { _ = try? await lxd.waitForIPv4(job.container, timeout: .seconds(30)) }
        let validator = InSpecValidator(policy: validationPolicy)
        let bundle = job.bootstrap.bundle
        switch bundle.kind {
        case .chef:
            // BundleValidator checked these are present and well-formed.
            guard let server = bundle.chefServerURL, let node = bundle.nodeName, let key = bundle.clientKeyPEM else {
                throw GatewayError(.delivery, "the Chef bundle lacks server, node or key")
            }
            let files = BootstrapFiles(chefServerURL: server, nodeName: node, clientKeyPEM: key, runList: bundle.runList,
                                       environment: bundle.environment,
                                       trustedCerts: bundle.trustedCerts.enumerated().map { .init(fileName: "vendor-\($0.offset).crt", pem: $0.element) })
            var provisioner = ChefProvisioner(files: files, installCommand: delivery.chefInstallCommand)
            provisioner.firstBoot = job.firstBoot
            return try await appDelivery.deliver(job.container, provisioner: provisioner, hardening: try hardening("chef", job.profiles),
                                                 validator: validator, profiles: job.profiles, snapshot: job.snapshot, lock: job.lock,
                                                 journal: journal)
        case .ansible:
            guard let archive = job.bootstrap.playbookArchive else { throw GatewayError(.delivery, "the Ansible bundle has no playbook") }
            return try await appDelivery.deliver(job.container, provisioner: AnsibleProvisioner(source: .archive(archive),
                                                                                                 extraVars: bundle.extraVars ?? [:]),
                                                 hardening: try hardening("ansible", job.profiles),
                                                 validator: validator, profiles: job.profiles, snapshot: job.snapshot, lock: job.lock,
                                                 journal: journal)
        case .none:
            return DeliveryReport(result: .applied, provisioner: "none", converge: nil, validation: [:], failingControls: [], controls: nil,
                                  snapshot: nil, restoredSnapshot: nil, message: "vendor uses no provisioner")
        }
    }

    /// The owner's hardening for `tool`; its profile is the one ProfileResolver put among the job's.
    func hardening(_ tool: String, _ profiles: [String]) throws -> HardeningRun? {
        let name = delivery.hardening.profile
        return try delivery.hardeningRun(for: tool, profile: profiles.first { name != nil && ($0 as NSString).lastPathComponent == name })
    }

    public func recover(_ txn: DeliveryTransaction, container: String, lock: AsyncMutex) async throws {
        try await appDelivery.recover(container, snapshot: txn.snapshot, phase: txn.phase, lock: lock)
    }
}

/// Finds the InSpec profiles for a plan's apps, only ever inside the owner's `inspecDirectory`.
public enum ProfileResolver {
    /// - Returns: the profile directories (real paths) and a note for each app whose profile is not
    ///   installed on this gateway.
    /// - Throws: ``GatewayError/Code/delivery`` for a name that resolves outside the directory (a
    ///   symlink out of it, say): such a plan is refused, never half-validated.
    public static func resolve(_ apps: [AppSpec], delivery: GatewayConfig.Delivery) throws -> (profiles: [String], notes: [String]) {
        guard let root = realPath(delivery.inspecDirectory) else {
            return ([], apps.compactMap { $0.inspecProfile == nil ? nil : "InSpec directory \(delivery.inspecDirectory) is missing" })
        }
        var profiles: [String] = [], notes: [String] = []
        for app in apps {
            guard let name = delivery.profiles[app.name] ?? app.inspecProfile else { continue }
            // Validated by PlanValidator and GatewayConfig already; checked again because this is the last line.
            guard Fields.name.isValid(name) else { throw GatewayError(.delivery, "InSpec profile \(Fields.quote(name)) is not a valid name") }
            let candidate = root + "/" + name
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: candidate, isDirectory: &isDir), isDir.boolValue else {
                notes.append("InSpec profile \(name) of app \(app.name) is not installed on this gateway: not validated")
                continue
            }
            guard let real = realPath(candidate), real.hasPrefix(root + "/"), !real.dropFirst(root.count + 1).contains("/") else {
                throw GatewayError(.delivery, "InSpec profile \(name) resolves outside \(delivery.inspecDirectory); refusing to push it")
            }
            if !profiles.contains(real) { profiles.append(real) }
        }
        // The owner's hardening is proven after every delivery that converges something, whatever the plan names.
        if delivery.hardening.enabled, let name = delivery.hardening.profile, !apps.isEmpty {
            guard Fields.name.isValid(name) else { throw GatewayError(.delivery, "hardening profile \(Fields.quote(name)) is not a valid name") }
            let candidate = root + "/" + name
            guard let real = realPath(candidate), real.hasPrefix(root + "/"), !real.dropFirst(root.count + 1).contains("/") else {
                throw GatewayError(.delivery, "delivery.hardening.profile \(name) is not a profile in \(delivery.inspecDirectory)")
            }
            if !profiles.contains(real) { profiles.append(real) }
        }
        return (profiles, notes)
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}
