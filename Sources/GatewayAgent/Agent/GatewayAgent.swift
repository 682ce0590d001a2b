import Foundation
import GatewayProtocol
import Logging
import LXD
import ServiceLifecycle

/// The gateway's core: turns device events and owner decisions into provisioned containers.
///
/// All work goes through one queue consumed by `run()`, so state transitions never interleave;
/// every transition is committed to SQLite before the next step, so a restart resumes.
public final class GatewayAgent: Service, Sendable {
    public enum Work: Sendable {
        case added(PluggedDevice)
        case removed(syspath: String)
        /// After start-up enumeration: everything not in `present` was unplugged while we were down.
        case sweep(present: Set<String>)
        case decided(planID: Int64)
        case reconcile(vendor: String)
        case tick
    }

    public let config: GatewayConfig
    public let store: GatewayStore
    public let identity: GatewayIdentity
    let lxd: LXDClient
    let vendors: VendorClient
    let logger: Logger
    let now: @Sendable () -> Date
    let queue: AsyncStream<Work>
    let input: AsyncStream<Work>.Continuation

    public init(config: GatewayConfig, store: GatewayStore, identity: GatewayIdentity, lxd: LXDClient, vendors: VendorClient,
                logger: Logger, now: @escaping @Sendable () -> Date = { Date() }) {
        self.config = config
        self.store = store
        self.identity = identity
        self.lxd = lxd
        self.vendors = vendors
        self.logger = logger
        self.now = now
        (queue, input) = AsyncStream.makeStream(of: Work.self)
    }

    /// Queues work; never blocks.
    public func submit(_ work: Work) { input.yield(work) }

    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [input, config] in
                // Retries (vendor unreachable, LXD down) are driven by a periodic tick.
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(config.retrySeconds))
                    input.yield(.tick)
                }
            }
            for await work in queue.cancelOnGracefulShutdown() {
                await handle(work)
            }
            group.cancelAll()
        }
    }

    func handle(_ work: Work) async {
        do {
            switch work {
            case .added(let d): try await deviceAdded(d)
            case .removed(let s): try await deviceRemoved(s)
            case .sweep(let present): try await sweep(present)
            case .decided(let id): try await decided(id)
            case .reconcile(let v): try await reconcile(vendor: v)
            case .tick: try await tick()
            }
        } catch {
            logger.error("work failed", metadata: ["iotgw.work": "\(work)", "iotgw.error": "\(error)"])
        }
    }

    // MARK: - Devices

    func deviceAdded(_ d: PluggedDevice) async throws {
        let previous = try await store.device(d.syspath)
        let vendor = d.vendorID.flatMap { vid in d.productID.flatMap { config.vendor(forUSB: vid, productID: $0) } }
        var rec = DeviceRecord(syspath: d.syspath, subsystem: d.subsystem, devnode: d.devnode, vendorID: d.vendorID,
                               productID: d.productID, serial: d.serial, manufacturer: d.manufacturer, product: d.product,
                               busPath: d.busPath, vendor: vendor?.id, present: true, state: .unknown, lastError: nil,
                               attempts: 0, nextAttemptAt: nil, updatedAt: now())
        guard let vendor else {
            try await store.save(rec)
            logger.info("device ignored: no trusted vendor", metadata: ["udev.syspath": "\(d.syspath)", "usb.id": "\(d.vendorID ?? "?"):\(d.productID ?? "?")"])
            return
        }
        guard let serial = d.serial, !serial.isEmpty else {
            rec.state = .rejected
            rec.lastError = "device has no serial number; vendors identify devices by serial"
            try await store.save(rec)
            return
        }
        if let previous, previous.serial == serial, previous.state == .denied {
            rec.state = .denied
            rec.lastError = previous.lastError
            try await store.save(rec)
            return
        }
        // A USB serial adapter shows up twice (usb_device and its tty): one announcement per serial.
        if let twin = try await store.devices().first(where: { $0.syspath != d.syspath && $0.present && $0.serial == serial && $0.vendor == vendor.id }),
           [.announcing, .awaitingApproval].contains(twin.state) {
            rec.state = twin.state
            rec.nextAttemptAt = twin.nextAttemptAt
            try await store.save(rec)
            return
        }
        if let plan = try await approvedPlan(vendor.id), plan.devices.contains(where: { $0.serial == serial }) {
            // Replug of a device the owner already approved: straight back into its container.
            rec.state = .attaching
            try await store.save(rec)
            try await reconcile(vendor: vendor.id)
            return
        }
        rec.state = .announcing
        try await store.save(rec)
        try await announce(rec, vendor: vendor)
    }

    func deviceRemoved(_ syspath: String) async throws {
        guard var rec = try await store.device(syspath) else { return }
        rec.present = false
        if [.attached, .attaching].contains(rec.state) { rec.state = .detached }
        rec.updatedAt = now()
        try await store.save(rec)
        logger.info("device unplugged", metadata: ["udev.syspath": "\(syspath)", "iotgw.vendor": "\(rec.vendor ?? "-")"])
        // reconcile does nothing for a vendor without an approved plan.
        if let v = rec.vendor { try await reconcile(vendor: v) }
    }

    func sweep(_ present: Set<String>) async throws {
        let gone = try await store.markOnlyPresent(present)
        for d in gone { logger.info("device gone while stopped", metadata: ["udev.syspath": "\(d.syspath)"]) }
        for v in config.vendors { try await reconcile(vendor: v.id) }
    }

    // MARK: - Vendor exchange

    func announce(_ rec: DeviceRecord, vendor: GatewayConfig.VendorEntry) async throws {
        guard let serial = rec.serial, let vid = rec.vendorID, let pid = rec.productID else { return }
        let lastVersion = try await store.vendorState(vendor.id)?.lastVersion ?? 0
        let announcement = Announcement(gatewayID: identity.id,
                                        device: DeviceIdentity(vendorID: vid, productID: pid, serial: serial, manufacturer: rec.manufacturer,
                                                               product: rec.product, subsystem: rec.subsystem),
                                        currentPlanVersion: lastVersion)
        let plan: ProvisioningPlan
        let record: PlanRecord
        do {
            let body = try await vendors.announce(announcement, to: vendor)
            let validator = PlanValidator(vendor: vendor.id, vendorKey: try Keys.decodePublic(vendor.publicKey), gatewayID: identity.id)
            let (p, payload) = try validator.validate(rawBody: body, lastVersion: lastVersion, now: now())
            try ContainerPlanner.checkCaps(p, caps: config.caps)
            guard p.devices.contains(where: { $0.serial == serial }) else {
                throw PolicyViolation(message: "plan v\(p.version) from \(vendor.id) does not include device \(serial)")
            }
            plan = p
            record = try await store.recordPlan(vendor: vendor.id, version: p.version, signedJSON: body, payloadSHA256: Keys.sha256Hex(payload))
        } catch let e as VendorError where e.isRetryable {
            let attempts = rec.attempts + 1
            let delay = min(config.maxRetrySeconds, config.retrySeconds * pow(2, Double(min(attempts - 1, 10))))
            try await setSerialState(rec, .announcing, error: e.message, nextAttemptAt: now().addingTimeInterval(delay), attempts: attempts)
            logger.warning("vendor unreachable, will retry", metadata: ["iotgw.vendor": "\(vendor.id)", "iotgw.retryIn": "\(delay)"])
            return
        } catch {
            // Refused by the vendor, or a plan that fails validation or local policy: nothing changes.
            try await setSerialState(rec, .rejected, error: "\(error)")
            logger.warning("device rejected", metadata: ["iotgw.vendor": "\(vendor.id)", "udev.syspath": "\(rec.syspath)", "iotgw.error": "\(error)"])
            await report(vendor, ProvisioningReport(gatewayID: identity.id, vendor: vendor.id, planVersion: lastVersion, outcome: .failed,
                                                    error: "\(error)"))
            return
        }
        try await decide(record, plan: plan, vendor: vendor)
    }

    /// Applies the vendor's approval policy to a freshly recorded plan.
    func decide(_ record: PlanRecord, plan: ProvisioningPlan, vendor: GatewayConfig.VendorEntry) async throws {
        guard let id = record.id else { return }
        switch record.decision {
        case .approved: return try await reconcile(vendor: vendor.id)
        case .denied, .superseded: return try await markAwaiting(vendor.id, as: .denied, error: "plan v\(plan.version) was denied")
        case .pending: break
        }
        switch vendor.policy {
        case .deny:
            try await store.decide(planID: id, approve: false, by: "policy:deny")
            try await decided(id)
        case .auto:
            try await store.decide(planID: id, approve: true, by: "policy:auto")
            try await decided(id)
        case .ask:
            if let current = try await approvedPlan(vendor.id), plan.grant.isCovered(by: current.grant) {
                try await store.decide(planID: id, approve: true, by: "covered")
                try await decided(id)
            } else {
                try await markAwaiting(vendor.id, as: .awaitingApproval, error: nil)
                logger.notice("approval pending", metadata: ["iotgw.vendor": "\(vendor.id)", "iotgw.approval": "\(id)",
                                                             "iotgw.planVersion": "\(plan.version)"])
            }
        }
    }

    /// Sets the state of every present udev node of the same physical device (same vendor and serial).
    func setSerialState(_ rec: DeviceRecord, _ state: DeviceRecord.State, error: String?, nextAttemptAt: Date? = nil,
                        attempts: Int? = nil) async throws {
        for d in try await store.devices() where d.syspath == rec.syspath || (d.present && d.vendor == rec.vendor && d.serial == rec.serial) {
            try await store.setDeviceState(d.syspath, state, error: error, nextAttemptAt: nextAttemptAt, attempts: attempts)
        }
    }

    func markAwaiting(_ vendor: String, as state: DeviceRecord.State, error: String?) async throws {
        for d in try await store.devices() where d.vendor == vendor && d.present && [.announcing, .awaitingApproval].contains(d.state) {
            try await store.setDeviceState(d.syspath, state, error: error)
        }
    }

    /// After the owner (or the policy) decided on a plan.
    func decided(_ planID: Int64) async throws {
        guard let rec = try await store.plan(id: planID), let vendor = config.vendor(id: rec.vendor) else { return }
        switch rec.decision {
        case .approved:
            try await markAwaiting(vendor.id, as: .attaching, error: nil)
            try await reconcile(vendor: vendor.id)
        case .denied:
            try await markAwaiting(vendor.id, as: .denied, error: "denied by \(rec.decidedBy ?? "owner")")
            await report(vendor, ProvisioningReport(gatewayID: identity.id, vendor: vendor.id, planVersion: rec.version, outcome: .denied))
        default:
            return
        }
    }

    func report(_ vendor: GatewayConfig.VendorEntry, _ r: ProvisioningReport) async {
        do { try await vendors.report(r, to: vendor) } catch {
            logger.warning("report not delivered", metadata: ["iotgw.vendor": "\(vendor.id)", "iotgw.error": "\(error)"])
        }
    }

    /// The vendor's approved plan, decoded from the stored signed bytes.
    public func approvedPlan(_ vendor: String) async throws -> ProvisioningPlan? {
        guard let id = try await store.vendorState(vendor)?.approvedPlanID, let rec = try await store.plan(id: id) else { return nil }
        return try Self.decodePlan(rec)
    }

    static func decodePlan(_ rec: PlanRecord) throws -> ProvisioningPlan {
        let signed = try WireJSON.decoder().decode(SignedPlan.self, from: rec.signedJSON)
        guard let payload = Data(base64Encoded: signed.payload) else { throw StoreError("stored plan \(rec.id ?? 0) is corrupt") }
        return try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload)
    }

    // MARK: - Reconcile

    /// Makes LXD match the vendor's approved plan and the devices plugged in now.
    func reconcile(vendor vendorID: String) async throws {
        guard let vendor = config.vendor(id: vendorID), let plan = try await approvedPlan(vendorID) else { return }
        let executor = ContainerExecutor(lxd: lxd, store: store, logger: logger)
        let mine = try await store.devices().filter { $0.vendor == vendorID }
        let granted = Set(plan.devices.map(\.serial))
        let present = mine.filter { $0.present && $0.serial.map(granted.contains) == true && $0.state != .denied }
        let name = plan.container.name
        let previous = try await store.vendorState(vendorID)
        let steps: [ProvisionStep]
        do {
            let observed = try await executor.observe(name)
            steps = try ContainerPlanner.steps(plan: plan, present: Self.presentDevices(present), observed: observed, config: config)
            try await executor.run(steps, vendor: vendorID, container: name)
        } catch {
            try await store.setVendorResult(vendorID, appliedVersion: nil, container: name, error: "\(error)")
            for d in present { try await store.setDeviceState(d.syspath, .attaching, error: "\(error)") }
            await report(vendor, ProvisioningReport(gatewayID: identity.id, vendor: vendorID, planVersion: plan.version, outcome: .failed,
                                                    container: name, error: "\(error)"))
            throw error
        }
        let attached = ContainerPlanner.attachable(plan: plan, present: Self.presentDevices(present))
        for d in present where d.state != .attached && d.serial.map(attached.contains) == true {
            try await store.setDeviceState(d.syspath, .attached)
        }
        try await store.setVendorResult(vendorID, appliedVersion: plan.version, container: name, error: nil)
        do {
            try await deliverIfNeeded(vendor: vendor, plan: plan)
        } catch {
            // Retried at the next tick (the vendor state carries the error).
            try await store.setVendorResult(vendorID, appliedVersion: nil, container: nil, error: "delivery: \(error)")
            logger.warning("delivery failed", metadata: ["iotgw.vendor": "\(vendorID)", "iotgw.error": "\(error)"])
        }
        // Tell the vendor only what changed: a no-op reconcile (a second udev node of the same device) is not news.
        let recovered = previous?.lastError != nil || previous?.appliedVersion != plan.version
        guard !steps.isEmpty || recovered else { return }
        let addresses = (try? await lxd.state(name).ipv4Addresses) ?? []
        logger.info("vendor reconciled", metadata: ["iotgw.vendor": "\(vendorID)", "lxd.instance": "\(name)", "iotgw.devices": "\(attached)"])
        let onlyDetached = !steps.isEmpty && steps.allSatisfy { if case .detach = $0 { true } else { false } }
        await report(vendor, ProvisioningReport(gatewayID: identity.id, vendor: vendorID, planVersion: plan.version,
                                                outcome: onlyDetached ? .deviceDetached : .applied,
                                                container: name, addresses: addresses, attachedDevices: attached))
    }

    /// One entry per serial; the tty node comes from the record in the `tty` subsystem, if plugged.
    static func presentDevices(_ records: [DeviceRecord]) -> [PresentDevice] {
        var bySerial: [String: PresentDevice] = [:]
        for r in records {
            guard let serial = r.serial else { continue }
            var p = bySerial[serial] ?? PresentDevice(serial: serial, ttyNode: nil)
            if r.subsystem == "tty", let node = r.devnode { p.ttyNode = node }
            bySerial[serial] = p
        }
        return bySerial.values.sorted { $0.serial < $1.serial }
    }

    func tick() async throws {
        try await syncPlans()
        let t = now()
        var retried = Set<String>()
        for d in try await store.devices() where d.present && d.state == .announcing && (d.nextAttemptAt ?? .distantPast) <= t {
            guard let v = d.vendor.flatMap(config.vendor(id:)), retried.insert(d.serial ?? d.syspath).inserted else { continue }
            try await announce(d, vendor: v)
        }
        for s in try await store.vendorStates() where s.lastError != nil && s.approvedPlanID != nil {
            try? await reconcile(vendor: s.vendor)
        }
    }
}
