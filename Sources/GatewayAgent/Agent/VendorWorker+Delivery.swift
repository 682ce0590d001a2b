import Foundation
import GatewayProtocol
import LXD

// The delivery lane: the approved plan's apps, once per plan version, in a crash-safe transaction.
extension VendorWorker {
    /// The Chef node name this gateway's container has at this vendor: derived, never vendor-chosen.
    nonisolated var nodeName: String { "\(env.identity.id)-\(vendor.id)" }

    func deliveryPass() async throws {
        // A transaction left by a crash comes first: the container goes back to its pre-update snapshot.
        if let txn = try await store.deliveryTransaction(vendor.id) {
            do { try await recover(txn) } catch where error.isLXDOutage {
                waitForLXD(error, lane: .delivery)
                return
            }
        }
        guard let plan = try await approvedPlan(), !plan.apps.isEmpty, let state = try await store.vendorState(vendor.id),
              state.appliedVersion == plan.version, state.reconcileAttempts == 0,
              state.deliveredVersion != plan.version || state.redeliveryRequests > 0, StoredTime.isDue(state.nextDeliveryAt, at: now) else { return }
        do {
            // A snapshot and a converge write to the pool: never into the owner's reserve.
            try await env.disk?.ensurePool(0, for: "delivering v\(plan.version) to \(container)")
            // Requests of the vendor's that come while it runs stay for another delivery.
            try await deliver(plan, firstBoot: state.deliveredVersion == nil, redeliveries: state.redeliveryRequests)
        } catch where error.isLXDOutage {
            // LXD went away under the delivery: no verdict, nothing failed. Its transaction (if it got as far as
            // the snapshot) stays, so once LXD is back the container returns to the snapshot and the delivery runs again.
            try await store.journal(vendor: vendor.id, step: "deliver v\(plan.version)", status: "interrupted", detail: error.safeDescription)
            waitForLXD(error, lane: .delivery)
        } catch {
            env.metrics.delivery(vendor: vendor.id, .failed)
            let attempts = state.deliveryAttempts + 1
            let next = env.deliveryBackoff.next(afterAttempts: attempts, now: now)
            try await store.setDeliveryRetry(vendor.id, attempts: attempts, next: next)
            try await store.setVendorResult(vendor.id, appliedVersion: nil, container: nil, error: "delivery: \(error.safeDescription)")
            try await store.journal(vendor: vendor.id, step: "deliver v\(plan.version)", status: "failed", detail: error.safeDescription)
            if let e = error as? GatewayError, e.code == .diskSpace, lastReportedFailure != e.message {
                // Deferred before anything was touched: the vendor hears why (once per reason), the lane retries.
                lastReportedFailure = e.message
                enqueue(report(planVersion: plan.version, outcome: .failed, error: error.safeDescription))
            }
            logger.warning("delivery failed, will retry", metadata: ["iotgw.attempts": "\(attempts)", "iotgw.retryAt": "\(next)",
                                                                     "iotgw.error": "\(error.safeDescription)"])
            throw error
        }
    }

    /// Restores what a crash interrupted, then lets the delivery be tried again at once.
    func recover(_ txn: DeliveryTransaction) async throws {
        logger.notice("recovering an interrupted delivery", metadata: ["iotgw.planVersion": "\(txn.planVersion)",
                                                                         "iotgw.phase": "\(txn.phase.rawValue)", "lxd.snapshot": "\(txn.snapshot)"])
        do {
            try await env.delivery.recover(txn, container: container, lock: containerLock)
        } catch where error.isLXDOutage {
            throw error
        } catch {
            let attempts = (try await store.vendorState(vendor.id)?.deliveryAttempts ?? 0) + 1
            try await store.setDeliveryRetry(vendor.id, attempts: attempts, next: env.deliveryBackoff.next(afterAttempts: attempts, now: now))
            throw error
        }
        try await store.dropDeliveryTransaction(vendor.id)
        try await store.journal(vendor: vendor.id, step: "deliver v\(txn.planVersion)", status: "recovered",
                                detail: "restored \(txn.snapshot) after a crash in \(txn.phase.rawValue)")
        try await store.setDeliveryRetry(vendor.id, attempts: 0, next: nil)
        // The restore brought back the snapshot's config too: make the container match the plan again.
        kickReconcile()
    }

    /// The vendor's signed bootstrap bundle for `plan`, checked.
    func fetchBootstrap(_ plan: ProvisioningPlan) async throws -> VerifiedBootstrap {
        do {
            let raw = try await env.vendors.bootstrap(BootstrapRequest(gatewayID: env.identity.id, planVersion: plan.version), from: vendor)
            return try BundleValidator(vendor: vendor.id, vendorKey: try Keys.decodePublic(vendor.publicKey), gatewayID: env.identity.id)
                .validate(rawBody: raw, planVersion: plan.version, expectedNode: nodeName, now: now)
        } catch let e as VendorError where e.refusalCode == "planVersionMismatch" {
            // The vendor moved on: fetch the newer plan rather than converge an old one.
            requestSync()
            throw e
        } catch let e as ProtocolError {
            try await store.setRejection(vendor.id, "bootstrap bundle: \(e.safeDescription)", at: now)
            throw e
        }
    }

    func deliver(_ plan: ProvisioningPlan, firstBoot: Bool, redeliveries: Int = 0) async throws {
        try await store.journal(vendor: vendor.id, step: "deliver v\(plan.version)", status: "started")
        let bundleStarted = now
        let monotonic = ContinuousClock(), bundleStart = monotonic.now
        let verified = try await fetchBootstrap(plan)
        let bundleTook = monotonic.now - bundleStart
        let (profiles, notes) = try ProfileResolver.resolve(plan.apps, delivery: env.config.delivery)
        let started = now
        let snapshot = AppDelivery.snapshotName(at: started)
        let (store, clock, vendorID, version) = (store, env.now, vendor.id, plan.version)
        let job = DeliveryJob(vendor: vendor.id, container: container, planVersion: plan.version, bootstrap: verified, firstBoot: firstBoot,
                              profiles: profiles, snapshot: snapshot, waitForNetwork: plan.container.network == .nat, lock: containerLock)
        // Each phase is on disk before the delivery enters it: a crash is repaired from the last one.
        var report = try await env.delivery.deliver(job) { phase in
            try await store.saveDeliveryTransaction(DeliveryTransaction(vendor: vendorID, planVersion: version, snapshot: snapshot,
                                                                        phase: phase, startedAt: started, updatedAt: clock()))
            await CrashPoint.pause("delivery:\(phase.rawValue)")
        }
        if !notes.isEmpty { report.message += "; " + notes.joined(separator: "; ") }
        report.startedAt = bundleStarted
        let bundleSeconds = bundleTook / .seconds(1)
        report.phases = [DeliveryPhase(name: "bundle", seconds: bundleSeconds)] + (report.phases ?? [])
        let json = String(decoding: try WireJSON.encoder().encode(report), as: UTF8.self)
        try await store.finishDelivery(vendor.id, version: plan.version, reportJSON: json, redeliveries: redeliveries)
        try await store.setVendorResult(vendor.id, appliedVersion: nil, container: nil, error: nil)
        try await store.journal(vendor: vendor.id, step: "deliver v\(plan.version)", status: report.result.rawValue,
                                detail: Fields.displayText(report.message))
        if report.restoredSnapshot != nil { kickReconcile() }
        env.metrics.delivery(vendor: vendor.id, report.result == .applied ? .delivered : .rolledBack)
        logger.notice("apps delivered", metadata: ["iotgw.result": "\(report.result.rawValue)", "iotgw.failingControls": "\(report.failingControls)",
                                                   "iotgw.phases": "\(Self.phasesText(report.phases ?? []))"])
        enqueue(self.report(planVersion: plan.version, outcome: report.result == .applied ? .delivered : .rolledBack,
                            error: report.result == .applied ? nil : report.message, delivery: Self.summary(report)))
    }

    /// "bundle=0.012s snapshot=0.210s ..." for the log.
    nonisolated static func phasesText(_ phases: [DeliveryPhase]) -> String {
        phases.map { p in "\(p.name)=\(String(format: "%.3f", p.seconds))s" }.joined(separator: " ")
    }

    nonisolated static func summary(_ r: DeliveryReport) -> DeliverySummary {
        let text: (String) -> String = { Fields.displayText($0, max: 1024) }
        return DeliverySummary(result: r.result.rawValue, provisioner: r.provisioner, convergeSummary: r.converge.map { text($0.summary) },
                               controls: Dictionary((r.controls ?? [:]).prefix(ProvisioningReport.maxControls).map { (text($0.key), $0.value) },
                                                    uniquingKeysWith: { a, _ in a }),
                               failingControls: r.failingControls.prefix(ProvisioningReport.maxControls).map(text),
                               restoredSnapshot: r.restoredSnapshot, message: text(r.message))
    }
}
