import Foundation
import GatewayProtocol
import LXD

// The reconcile lane: the container matches the approved plan and the devices plugged in now.
extension VendorWorker {
    /// One physical device per (serial, USB IDs), with the nodes udev reported for it.
    nonisolated static func presentDevices(_ records: [DeviceRecord], number: (String) -> DeviceNumber?) -> [PresentDevice] {
        var byKey: [String: PresentDevice] = [:]
        for r in records {
            guard let serial = r.serial, let vid = r.vendorID, let pid = r.productID else { continue }
            let key = "\(serial)\u{0}\(vid):\(pid)"
            var p = byKey[key] ?? PresentDevice(serial: serial, vendorID: vid, productID: pid)
            if let devnode = r.devnode, let n = number(r.syspath) {
                let node = PresentDevice.Node(syspath: r.syspath, devnode: devnode, number: n)
                if r.subsystem == "tty" { p.tty = node }
                if r.subsystem == "usb" { p.usb = node }
            }
            byKey[key] = p
        }
        return byKey.values.sorted { ($0.serial, $0.vendorID) < ($1.serial, $1.vendorID) }
    }

    /// Where this vendor's node for an LXD device name lives.
    nonisolated func nodePath(_ device: String) -> String { env.registry.path(vendor: vendor.id, device: device) }

    func reconcilePass() async throws {
        let previous = try await store.vendorState(vendor.id)
        guard let plan = try await approvedPlan(of: previous) else { return }
        let executor = ContainerExecutor(host: env.host, registry: env.registry, store: store, logger: logger, creations: env.creations,
                                         metrics: env.metrics, images: env.images)
        if plan.isDecommission {
            // A rebuild under way is settled first: a candidate not switched in goes, a switch begun is finished.
            if try await store.rebuildTransaction(vendor.id) != nil,
               case .switched(let txn, let report) = try await rebuildIfNeeded(plan, executor: executor) {
                try await completeRebuild(txn, report: report)
            }
            return try await withdraw(plan, previous: previous)
        }
        let granted = Set(plan.devices.map(\.serial))
        let refresh = refreshDevices
        refreshDevices = false
        do {
            try await checkPool()
            if plan.container.network == .nat, env.config.lxd.hostFirewall { try await env.network.ensure() }
            let rebuild = try await rebuildIfNeeded(plan, executor: executor)
            let (steps, attached, present) = try await containerLock.withLock { [self] in
                let mine = try await grantedDevices(granted)
                let present = Self.presentDevices(mine, number: env.registry.number(syspath:))
                let observed = try await executor.observe(container, vendor: vendor.id)
                var steps = try ContainerPlanner.steps(plan: plan, present: present, observed: observed, config: env.config,
                                                       refresh: refresh, nodePath: nodePath)
                if case .pending = rebuild {
                    // The old container runs on (its rebuild failed and waits): it keeps following the devices, nothing more.
                    steps = steps.filter {
                        switch $0 {
                        case .ensureNode, .removeNode, .attach, .detach, .start: true
                        default: false
                        }
                    }
                }
                if let disk = env.disk, steps.contains(where: { if case .create = $0 { true } else { false } }) {
                    // The whole disk the vendor may fill must fit above the reserve.
                    try await disk.ensurePool(Int64(plan.container.limits.diskMiB) << 20,
                                              for: "creating \(container) with its \(plan.container.limits.diskMiB) MiB disk",
                                              recent: takePoolReading())
                }
                try await executor.run(steps, vendor: vendor.id, container: container)
                return (steps, ContainerPlanner.attachable(plan: plan, present: present, nodePath: nodePath), mine)
            }
            for d in present where d.serial.map(attached.contains) == true && d.state != .attached {
                try await store.setDeviceState(d.syspath, .attached)
            }
            switch rebuild {
            case .pending: return  // the failure stays recorded and reported; the plan is not applied yet
            case .switched(let txn, let report): try await completeRebuild(txn, report: report)
            case .none: break
            }
            // A no-op pass writes nothing: each write is an fsync (synchronous=FULL), and most passes change nothing.
            if !Self.recorded(previous, appliedVersion: plan.version, container: container) {
                try await store.setVendorResult(vendor.id, appliedVersion: plan.version, container: container, error: nil)
                try await store.setReconcileRetry(vendor.id, attempts: 0, next: nil)
            }
            lastReportedFailure = nil
            kickDelivery()
            // Tell the vendor only what changed: a no-op reconcile (a second udev node of the same device) is not news.
            let changed = steps.filter(\.changesContainer)
            let recovered = previous?.lastError != nil || previous?.appliedVersion != plan.version
            guard !changed.isEmpty || recovered else { return }
            let addresses = (try? await env.host.state(container).ipv4Addresses) ?? []
            logger.info("vendor reconciled", metadata: ["lxd.instance": "\(container)", "iotgw.devices": "\(attached)"])
            let onlyDetached = !changed.isEmpty && changed.allSatisfy { if case .detach = $0 { true } else { false } }
            enqueue(report(planVersion: plan.version, outcome: onlyDetached ? .deviceDetached : .applied, addresses: addresses,
                           attached: attached))
        } catch where error.isLXDOutage {
            // Not the vendor's failure nor the plan's: the pass runs again, from what LXD then shows, once LXD is back.
            if refresh { refreshDevices = true }
            waitForLXD(error, lane: .reconcile)
        } catch {
            if refresh { refreshDevices = true }
            let reason = error.safeDescription
            let attempts = (previous?.reconcileAttempts ?? 0) + 1
            try await store.setVendorResult(vendor.id, appliedVersion: nil, container: container, error: reason)
            try await store.setReconcileRetry(vendor.id, attempts: attempts, next: env.backoff.next(afterAttempts: attempts, now: now))
            for d in try await grantedDevices(granted) { try await store.setDeviceState(d.syspath, .attaching, error: reason) }
            if lastReportedFailure != reason {
                lastReportedFailure = reason
                enqueue(report(planVersion: plan.version, outcome: .failed, error: reason))
            }
            throw error
        }
    }

    /// A signed empty plan: the vendor withdrew from this gateway. Its devices are detached and their nodes
    /// removed, the container is stopped and labelled `user.iotgw.orphaned-at`; `OrphanSweeper` deletes it
    /// after the owner's grace period (or on `iot-gateway remove VENDOR`). A later plan granting something
    /// again is a widening: the owner is asked, as for any new grant.
    func withdraw(_ plan: ProvisioningPlan, previous: VendorStateRecord?) async throws {
        let retired: Bool = try await containerLock.withLock { [self] in
            let executor = ContainerExecutor(host: env.host, registry: env.registry, store: store, logger: logger, creations: env.creations,
                                             metrics: env.metrics)
            let observed = try await executor.observe(container, vendor: vendor.id)
            guard observed.exists, observed.labelledVendor == vendor.id else { return false }
            let steps = try ContainerPlanner.steps(plan: plan, present: [], observed: observed, config: env.config, nodePath: nodePath)
                .filter { if case .detach = $0 { true } else if case .removeNode = $0 { true } else { false } }
            try await executor.run(steps, vendor: vendor.id, container: container)
            guard observed.config[OrphanSweeper.orphanedAtKey] == nil else { return false }
            try await OrphanSweeper(host: env.host, gatewayID: env.identity.id, config: env.config, logger: logger, now: env.now).retire(container)
            return true
        }
        if !Self.recorded(previous, appliedVersion: plan.version, container: container) {
            try await store.setVendorResult(vendor.id, appliedVersion: plan.version, container: container, error: nil)
            try await store.setReconcileRetry(vendor.id, attempts: 0, next: nil)
        }
        guard retired else { return }
        for d in try await store.devices() where d.vendor == vendor.id && d.present {
            try await store.setDeviceState(d.syspath, .rejected, error: "vendor \(vendor.id) withdrew (plan v\(plan.version) grants nothing)")
        }
        logger.notice("vendor withdrew: container stopped, deleted after the grace period",
                      metadata: ["lxd.instance": "\(container)", "iotgw.planVersion": "\(plan.version)"])
        enqueue(report(planVersion: plan.version, outcome: .applied))
    }

    /// Whether the store already holds what a successful pass records: the version applied to this
    /// container, no error, and no retry counted or scheduled.
    nonisolated static func recorded(_ s: VendorStateRecord?, appliedVersion: Int, container: String) -> Bool {
        guard let s else { return false }
        return s.appliedVersion == appliedVersion && s.container == container && s.lastError == nil
            && s.reconcileAttempts == 0 && s.nextReconcileAt == nil
    }

    /// The vendor's plugged devices the approved plan grants. The approved plan is the owner's latest word: a
    /// device denied in an earlier plan and listed by the plan approved since is granted (even if the daemon died
    /// between recording that approval and updating the device's state).
    nonisolated func grantedDevices(_ granted: Set<String>) async throws -> [DeviceRecord] {
        try await store.devices().filter {
            $0.vendor == vendor.id && $0.present && $0.serial.map(granted.contains) == true
        }
    }

    /// The vendor's project is there (once per run), and the pool can cap its disk.
    func checkPool() async throws {
        guard !poolChecked else { return }
        try await env.projects?.ensure(container: container)
        try await checkPoolEnforcesLimits()
        poolChecked = true
    }

    /// Refuses to provision on a storage pool that cannot enforce the disk cap, unless the owner allows it.
    /// Read once per run.
    func checkPoolEnforcesLimits() async throws {
        let lxd = env.config.lxd
        guard !lxd.allowUnenforcedDiskLimits, !poolEnforcesLimits else { return }
        let pool = try await env.host.storagePool(lxd.storagePool)
        guard pool.enforcesDiskLimits else {
            throw GatewayError(.diskLimitUnenforceable, "storage pool \(pool.name) (\(pool.driver)) cannot enforce the disk cap; "
                               + "use btrfs, zfs or lvm, or set lxd.allowUnenforcedDiskLimits: true")
        }
        poolEnforcesLimits = true
    }

    /// While the vendor answers an announcement, the reads a first container's creation needs of LXD and
    /// that no plan decides: whether the pool caps disks, and its free space (``takePoolReading()``). Read-only
    /// (the vendor's project waits for an approved plan); a failure here is met again, and reported, by the pass.
    /// A vendor whose container the store records (the usual plug: another device of a provisioned vendor)
    /// needs no create, so its free space is not read.
    func readPoolAhead() async {
        async let capped: Void = checkPoolEnforcesLimits()
        if let disk = env.disk, (try? await store.vendorState(vendor.id))??.container == nil {
            poolReading = try? await disk.read()
        }
        _ = try? await capped
    }

    /// The reading ``readPoolAhead()`` took, once.
    func takePoolReading() -> DiskGuard.Reading? {
        defer { poolReading = nil }
        return poolReading
    }
}
