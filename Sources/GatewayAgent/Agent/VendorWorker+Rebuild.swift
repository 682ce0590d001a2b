import Foundation
import GatewayProtocol
import LXD

/// Where a rebuild stands after ``VendorWorker/rebuildIfNeeded(_:executor:)``.
enum RebuildOutcome {
    /// The container is on the plan's image (or absent): reconcile as usual.
    case none
    /// The container still runs the old image (a rebuild failed and waits for its retry): only its
    /// devices are kept up to date; the new plan is not recorded as applied.
    case pending
    /// The candidate is the vendor's container now (stopped, without devices): once the usual steps
    /// attach the devices and start it, ``VendorWorker/completeRebuild(_:report:)`` ends the rebuild. The
    /// report is the apps' delivery in the candidate (nil: none, or lost with a crash).
    case switched(RebuildTransaction, report: DeliveryReport?)
}

// The rebuild: LXD cannot change the image of an instance, so a plan with another image than the one the
// vendor's container was made from gets a new container. It is built beside the old one (`iotgw-<vendor>-next`)
// and gets the apps, delivered and validated as in any delivery, while the old one runs on with its devices.
// Only a candidate that passed moves in: the old one is stopped, its devices go to the new one, the names swap,
// the old one is deleted. A failure before that deletes the candidate and leaves the old one as it was. Each
// phase is in the store (`rebuilds`) before it starts: after a crash the candidate is thrown away if the switch
// had not begun, and the switch is finished if it had.
extension VendorWorker {
    nonisolated var candidate: String { ContainerPlanner.candidateName(vendor: vendor.id) }
    nonisolated var previousContainer: String { ContainerPlanner.previousName(vendor: vendor.id) }

    func rebuildIfNeeded(_ plan: ProvisioningPlan, executor: ContainerExecutor) async throws -> RebuildOutcome {
        var txn = try await store.rebuildTransaction(vendor.id)
        switch txn?.phase {
        case .switching?:
            // Past the point of no return: the old container may be stopped or renamed already. Finish.
            try await switchOver()
            return .switched(txn!, report: nil)
        case .creating?, .delivering?:
            // Interrupted (a crash, LXD away) before the switch: the old container is untouched; start again.
            logger.notice("discarding an unfinished rebuild", metadata: ["iotgw.phase": "\(txn!.phase.rawValue)"])
            try await discardCandidate()
            try await store.dropRebuildTransaction(vendor.id)
            txn = nil
        case .failed?, nil:
            break
        }
        let observed = try await executor.observe(container, vendor: vendor.id)
        let fingerprint = plan.container.image.fingerprint
        guard ContainerPlanner.needsRebuild(plan: plan, observed: observed) else {
            if txn != nil { try await store.dropRebuildTransaction(vendor.id) }
            return .none
        }
        // The same plan failed before: wait for its retry. A newer plan (the vendor's fix) is tried at once.
        let retrying = txn.flatMap { $0.planVersion == plan.version && $0.fingerprint == fingerprint ? $0 : nil }
        if let retrying, !StoredTime.isDue(retrying.nextAttemptAt, at: now) { return .pending }
        let attempts = retrying?.attempts ?? 0
        let started = now
        func enter(_ phase: RebuildTransaction.Phase) async throws {
            try await store.saveRebuildTransaction(RebuildTransaction(vendor: vendor.id, planVersion: plan.version, fingerprint: fingerprint,
                                                                      phase: phase, attempts: attempts, updatedAt: now))
            try await store.journal(vendor: vendor.id, step: "rebuild v\(plan.version) \(fingerprint.prefix(12))", status: phase.rawValue)
            await CrashPoint.pause("rebuild:\(phase.rawValue)")
        }
        logger.notice("rebuilding the container on a new image",
                      metadata: ["iotgw.planVersion": "\(plan.version)", "iotgw.from": "\(observed.config[ContainerPlanner.baseImageKey] ?? "")",
                                 "iotgw.to": "\(fingerprint)"])
        var delivered: DeliveryReport?
        do {
            try await enter(.creating)
            try await discardCandidate()
            // With lxd.projects each project holds one instance and is named like it: the candidate gets a
            // restricted project of its own, and moves into the vendor's at the switch (a rename does that).
            try await env.projects?.ensure(container: candidate)
            // The old container keeps its disk until the switch: the new one's must fit beside it, above the reserve.
            try await env.disk?.ensurePool(Int64(plan.container.limits.diskMiB) << 20,
                                           for: "building \(candidate) beside \(container) with its \(plan.container.limits.diskMiB) MiB disk")
            try await executor.run(ContainerPlanner.candidateSteps(plan: plan, config: env.config), vendor: vendor.id, container: candidate)
            try await enter(.delivering)
            if !plan.apps.isEmpty {
                let report = try await deliverToCandidate(plan)
                guard report.result == .applied else {
                    throw GatewayError(.rebuild, "the apps failed in the new container: \(report.message)")
                }
                delivered = report
            }
            try await enter(.switching)
        } catch where error.isLXDOutage {
            // No verdict: the transaction stays, and the next pass after LXD is back throws the candidate away and starts again.
            throw error
        } catch {
            try await failed(plan, attempts: attempts + 1, error: error)
            return .pending
        }
        try await switchOver()
        logger.notice("switched to the rebuilt container", metadata: ["iotgw.planVersion": "\(plan.version)",
                                                                      "iotgw.seconds": "\(Int(now.timeIntervalSince(started)))"])
        return .switched(try await store.rebuildTransaction(vendor.id)!, report: delivered)
    }

    /// A rebuild that failed before the switch: the candidate goes, the old container stays, the owner
    /// and the vendor hear why, and the same plan is tried again after the delivery backoff.
    func failed(_ plan: ProvisioningPlan, attempts: Int, error: any Error) async throws {
        let why = (error as? GatewayError).flatMap { $0.code == .rebuild ? $0.message : nil } ?? error.safeDescription
        let reason = "rebuild on image \(plan.container.image.fingerprint.prefix(12)): \(why)"
        do { try await discardCandidate() } catch {
            // Tried again before the next attempt builds one (and after a restart, from the transaction).
            logger.warning("candidate not deleted", metadata: ["lxd.instance": "\(candidate)", "iotgw.error": "\(error.safeDescription)"])
        }
        let next = env.deliveryBackoff.next(afterAttempts: attempts, now: now)
        try await store.saveRebuildTransaction(RebuildTransaction(vendor: vendor.id, planVersion: plan.version, fingerprint: plan.container.image.fingerprint,
                                                                  phase: .failed, attempts: attempts, nextAttemptAt: next, lastError: reason,
                                                                  updatedAt: now))
        try await store.setVendorResult(vendor.id, appliedVersion: nil, container: nil, error: reason)
        try await store.journal(vendor: vendor.id, step: "rebuild v\(plan.version)", status: "failed", detail: error.safeDescription)
        logger.warning("rebuild failed; the old container runs on", metadata: ["iotgw.attempts": "\(attempts)", "iotgw.retryAt": "\(next)",
                                                                                "iotgw.error": "\(error.safeDescription)"])
        if lastReportedFailure != reason {
            lastReportedFailure = reason
            enqueue(report(planVersion: plan.version, outcome: .failed, error: reason))
        }
    }

    /// The plan's apps into the candidate, as a delivery does them (bundle, converge, InSpec), but with no
    /// delivery transaction of the vendor's: a crash in the middle throws the whole candidate away.
    func deliverToCandidate(_ plan: ProvisioningPlan) async throws -> DeliveryReport {
        let verified = try await fetchBootstrap(plan)
        let (profiles, notes) = try ProfileResolver.resolve(plan.apps, delivery: env.config.delivery)
        let job = DeliveryJob(vendor: vendor.id, container: candidate, planVersion: plan.version, bootstrap: verified, firstBoot: true,
                              profiles: profiles, snapshot: AppDelivery.snapshotName(at: now), waitForNetwork: plan.container.network == .nat,
                              lock: AsyncMutex())
        var report = try await env.delivery.deliver(job) { phase in await CrashPoint.pause("rebuild-delivery:\(phase.rawValue)") }
        if !notes.isEmpty { report.message += "; " + notes.joined(separator: "; ") }
        try await store.journal(vendor: vendor.id, step: "rebuild v\(plan.version) deliver", status: report.result.rawValue,
                                detail: Fields.displayText(report.message))
        return report
    }

    /// Puts the candidate in the old container's place. Each step looks first, so it is safe to repeat
    /// after a crash anywhere in it: the old container is stopped, loses its devices (before the new one
    /// gets them) and becomes `-prev`; the candidate, stopped, becomes `iotgw-<vendor>` and loses its label.
    func switchOver() async throws {
        let host = env.host
        try await containerLock.withLock { [self] in
            if let old = try await managedInstance(container), !Self.isCandidate(old) {
                try await stop(container)
                for name in old.devices.keys.sorted() where name.hasPrefix(ContainerPlanner.devicePrefix) {
                    try await host.removeDevice(container, name: name)
                }
                // One left by an earlier rebuild that crashed before deleting it.
                if try await managedInstance(previousContainer) != nil { try await delete(previousContainer) }
                try await env.projects?.ensure(container: previousContainer)
                try await host.renameInstance(container, to: previousContainer)
                CrashPoint.reached("rebuild:old-renamed")
            }
            if try await managedInstance(candidate) != nil {
                try await stop(candidate)
                try await host.renameInstance(candidate, to: container)
            }
            try await env.projects?.remove(container: candidate)
            if let new = try await managedInstance(container), Self.isCandidate(new) {
                // An empty value unsets the key.
                try await host.patchInstance(container, config: [ContainerPlanner.candidateKey: ""], devices: [:], ifMatch: nil)
            }
        }
    }

    /// After the usual steps attached the devices to the new container and started it: the old one is
    /// deleted and the rebuild recorded as the plan applied (and its apps delivered) in one write.
    func completeRebuild(_ txn: RebuildTransaction, report: DeliveryReport?) async throws {
        try await containerLock.withLock { [self] in
            if try await managedInstance(previousContainer) != nil { try await delete(previousContainer) }
            try await env.projects?.remove(container: previousContainer)
        }
        // Without the report (a crash during the switch) the apps are delivered again in the new container.
        let json = try report.map { String(decoding: try WireJSON.encoder().encode($0), as: UTF8.self) }
        try await store.finishRebuild(vendor.id, version: txn.planVersion, container: container, reportJSON: json)
        try await store.journal(vendor: vendor.id, step: "rebuild v\(txn.planVersion) \(txn.fingerprint.prefix(12))", status: "done")
        lastReportedFailure = nil
        if let report {
            // The vendor hears of the delivery as of any other (the reconcile's own report says the container changed).
            env.metrics.delivery(vendor: vendor.id, .delivered)
            enqueue(self.report(planVersion: txn.planVersion, outcome: .delivered, delivery: Self.summary(report)))
        }
    }

    /// Whether the instance carries the candidate label (an unset label may read as empty).
    nonisolated static func isCandidate(_ i: Instance) -> Bool { !(i.config[ContainerPlanner.candidateKey] ?? "").isEmpty }

    /// Deletes the candidate, if there is one (and it is ours).
    func discardCandidate() async throws {
        guard try await managedInstance(candidate) != nil else { return try await env.projects?.remove(container: candidate) ?? () }
        try await delete(candidate)
        try await env.projects?.remove(container: candidate)
        logger.info("rebuild candidate deleted", metadata: ["lxd.instance": "\(candidate)"])
    }

    /// The instance, if it exists; one without this vendor's label is never touched.
    func managedInstance(_ name: String) async throws -> Instance? {
        let i: Instance
        do { i = try await env.host.instance(name).instance } catch let e as LXDError where e.code == .notFound { return nil }
        guard i.config[ContainerPlanner.vendorKey] == vendor.id, i.config[ContainerPlanner.gatewayKey] == env.identity.id else {
            throw GatewayError(.notManaged, "instance \(name) exists but is not managed for vendor \(vendor.id); refusing to touch it")
        }
        return i
    }

    func stop(_ name: String) async throws { try await env.host.stopGracefully(name) }

    func delete(_ name: String) async throws {
        try await stop(name)
        try await env.host.deleteInstance(name)
    }
}
