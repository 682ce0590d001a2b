import Chef
import Foundation
import GatewayProtocol
import InSpec
import LXD

extension GatewayAgent {
    var validationPolicy: ValidationPolicy {
        let d = config.delivery
        return ValidationPolicy(mode: d.validationMode == "report_only" ? .reportOnly : .enforced, abortOnFailure: d.abortOnFailure,
                                allowList: d.allowList, denyList: d.denyList)
    }

    /// Delivers the plan's apps once per plan version, after the container matches the plan:
    /// bootstrap from the vendor, snapshot, converge, validate, keep or roll back, report.
    func deliverIfNeeded(vendor: GatewayConfig.VendorEntry, plan: ProvisioningPlan) async throws {
        guard !plan.apps.isEmpty else { return }
        let state = try await store.vendorState(vendor.id)
        guard state?.deliveredVersion != plan.version else { return }
        let container = plan.container.name
        try await store.journal(vendor: vendor.id, step: "deliver v\(plan.version)", status: "started")
        let bundle = try await vendors.bootstrap(BootstrapRequest(gatewayID: identity.id, planVersion: plan.version), from: vendor)
        if plan.container.network == .nat { _ = try? await lxd.waitForIPv4(container, timeout: .seconds(30)) }
        let validator = InSpecValidator(policy: validationPolicy)
        let report: DeliveryReport
        switch bundle.kind {
        case .chef:
            guard let server = bundle.chefServerURL, let node = bundle.nodeName, let key = bundle.clientKeyPEM else {
                throw DeliveryError("vendor \(vendor.id) sent a Chef bundle without server, node or key")
            }
            let files = BootstrapFiles(chefServerURL: server, nodeName: node, clientKeyPEM: key, runList: bundle.runList,
                                       environment: bundle.environment,
                                       trustedCerts: bundle.trustedCerts.enumerated().map { .init(fileName: "vendor-\($0.offset).crt", pem: $0.element) })
            var provisioner = ChefProvisioner(files: files, installCommand: config.delivery.chefInstallCommand)
            // Only the very first converge passes first-boot.json (it would replace the node's run list).
            provisioner.firstBoot = state?.deliveredVersion == nil
            report = try await deliver(container, plan: plan, provisioner: provisioner, validator: validator)
        case .ansible:
            let dir = try unpackPlaybook(bundle, vendor: vendor.id, version: plan.version)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            report = try await deliver(container, plan: plan,
                                       provisioner: AnsibleProvisioner(playbookDirectory: dir, extraVars: bundle.extraVars ?? [:]),
                                       validator: validator)
        case .none:
            try await store.setDelivery(vendor.id, version: plan.version, reportJSON: "{\"result\":\"none\"}")
            try await store.journal(vendor: vendor.id, step: "deliver v\(plan.version)", status: "done", detail: "vendor uses no provisioner")
            return
        }
        let json = String(decoding: try WireJSON.encoder().encode(report), as: UTF8.self)
        try await store.setDelivery(vendor.id, version: plan.version, reportJSON: json)
        try await store.journal(vendor: vendor.id, step: "deliver v\(plan.version)", status: report.result.rawValue, detail: report.message)
        if report.restoredSnapshot != nil {
            // The restore also brought back the snapshot's config (labels, devices): converge it again.
            submit(.reconcile(vendor: vendor.id))
        }
        logger.notice("apps delivered", metadata: ["iotgw.vendor": "\(vendor.id)", "iotgw.result": "\(report.result.rawValue)",
                                                   "iotgw.failingControls": "\(report.failingControls)"])
        await self.report(vendor, ProvisioningReport(gatewayID: identity.id, vendor: vendor.id, planVersion: plan.version,
                                                     outcome: report.result == .applied ? .delivered : .rolledBack, container: container,
                                                     error: report.result == .applied ? nil : report.message,
                                                     delivery: Self.summary(report)))
    }

    /// One transactional delivery with the gateway's snapshot and validation settings.
    func deliver(_ container: String, plan: ProvisioningPlan, provisioner: some Provisioner,
                 validator: InSpecValidator) async throws -> DeliveryReport {
        let profiles = plan.apps.compactMap(\.inspecProfile).map { (config.delivery.inspecDirectory as NSString).appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0) }
        var delivery = AppDelivery(lxd: lxd, logger: logger)
        delivery.keepSnapshots = config.delivery.keepSnapshots
        delivery.environment = config.delivery.environment
        return try await delivery.deliver(container, provisioner: provisioner, validator: validator, profiles: profiles, now: now())
    }

    /// Unpacks a bundle's playbook archive into the state directory (bounded; no absolute paths or `..`).
    func unpackPlaybook(_ bundle: BootstrapBundle, vendor: String, version: Int) throws -> String {
        guard let b64 = bundle.playbookArchive, let data = Data(base64Encoded: b64), data.count <= BootstrapBundle.maxPlaybookBytes else {
            throw DeliveryError("vendor \(vendor) sent an Ansible bundle without a valid playbook archive")
        }
        let dir = (config.stateDirectory as NSString).appendingPathComponent("playbooks/\(vendor)-v\(version)")
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let archive = dir + ".tar.gz"
        try data.write(to: URL(fileURLWithPath: archive))
        defer { try? FileManager.default.removeItem(atPath: archive) }
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/bin/tar")
        // GNU tar refuses members with absolute paths or "..", and --no-same-owner keeps files ours.
        tar.arguments = ["-xzf", archive, "-C", dir, "--no-same-owner", "--no-same-permissions"]
        tar.standardError = FileHandle.nullDevice
        try tar.run()
        tar.waitUntilExit()
        guard tar.terminationStatus == 0, FileManager.default.fileExists(atPath: dir + "/site.yml") else {
            throw DeliveryError("vendor \(vendor)'s playbook archive does not unpack to a directory with site.yml")
        }
        return dir
    }

    static func summary(_ r: DeliveryReport) -> DeliverySummary {
        DeliverySummary(result: r.result.rawValue, provisioner: r.provisioner, convergeSummary: r.converge?.summary,
                               controls: r.controls ?? [:], failingControls: r.failingControls, restoredSnapshot: r.restoredSnapshot,
                               message: r.message)
    }

    /// Asks each vendor with an approved plan for its current one, every `planSyncSeconds`:
    /// gateways are behind NAT, so app updates are pulled.
    func syncPlans() async throws {
        let t = now()
        for vendor in config.vendors {
            guard let state = try await store.vendorState(vendor.id), state.approvedPlanID != nil else { continue }
            if let last = state.lastSyncAt, t.timeIntervalSince(last) < config.planSyncSeconds { continue }
            try await store.setSynced(vendor.id, at: t)
            do {
                let body = try await vendors.currentPlan(PlanRequest(gatewayID: identity.id, currentPlanVersion: state.lastVersion), from: vendor)
                let validator = PlanValidator(vendor: vendor.id, vendorKey: try Keys.decodePublic(vendor.publicKey), gatewayID: identity.id)
                let (plan, payload) = try validator.validate(rawBody: body, lastVersion: state.lastVersion, now: t)
                guard plan.version > state.lastVersion else { continue }
                try ContainerPlanner.checkCaps(plan, caps: config.caps)
                logger.info("newer plan", metadata: ["iotgw.vendor": "\(vendor.id)", "iotgw.planVersion": "\(plan.version)"])
                let rec = try await store.recordPlan(vendor: vendor.id, version: plan.version, signedJSON: body,
                                                     payloadSHA256: Keys.sha256Hex(payload))
                try await decide(rec, plan: plan, vendor: vendor)
            } catch {
                logger.warning("plan sync failed", metadata: ["iotgw.vendor": "\(vendor.id)", "iotgw.error": "\(error)"])
            }
        }
    }
}
