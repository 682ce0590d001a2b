import Foundation
import GatewayProtocol

// The exchange lane: everything that waits on the vendor's daemon.
extension VendorWorker {
    func exchangePass() async throws {
        // Until this pass ends well, the next tick looks again.
        exchangeNextLook = nil
        // A pushed plan needs no vendor round trip: it never waits behind an unreachable daemon.
        try await takePushedPlan()
        for r in takeOutbox() { await send(r) }
        let t = now
        var asked = Set<String>()
        var announced = false
        var nextAnnouncement: Date?
        for d in try await store.devices() where d.vendor == vendor.id && d.present && d.state == .announcing {
            guard StoredTime.isDue(d.nextAttemptAt, at: t) else {
                nextAnnouncement = [nextAnnouncement, d.nextAttemptAt].compactMap { $0 }.min()
                continue
            }
            // One announcement per physical device (its usb and tty nodes share the serial).
            guard let serial = d.serial, asked.insert(serial).inserted else { continue }
            announced = true
            try await announce(d)
        }
        let nextSync = try await syncIfDue()
        // When the tick must look again (``exchangeLookDue(at:)``): the next announcement retry or plan sync.
        // After announcing, at once (an announcement that failed scheduled its retry); with no approved plan
        // yet, at every tick (as before: nothing here knows when one comes).
        if !announced, let nextSync {
            exchangeNextLook = [nextAnnouncement, nextSync].compactMap { $0 }.min()
        }
    }

    func send(_ r: ProvisioningReport) async {
        do { try await env.vendors.report(r, to: vendor) } catch {
            logger.warning("report not delivered", metadata: ["iotgw.outcome": "\(r.outcome.rawValue)", "iotgw.error": "\(error.safeDescription)"])
        }
    }

    var validator: PlanValidator {
        get throws { PlanValidator(vendor: vendor.id, vendorKey: try Keys.decodePublic(vendor.publicKey), gatewayID: env.identity.id) }
    }

    /// Everything the gateway checks of a signed plan before it is recorded, shown or acted on:
    /// signature and fields (`PlanValidator`), versions, the owner's caps, and every device grant
    /// against what this gateway itself saw and the owner's match rules.
    func admit(_ body: Data, held: PlanHeld) async throws -> (plan: ProvisioningPlan, payload: Data) {
        let (plan, payload) = try validator.validate(rawBody: body, held: held, now: now)
        try GrantCheck.checkCaps(plan, caps: env.config.caps)
        try GrantCheck.checkImage(plan, vendor: vendor)
        try GrantCheck.check(plan, vendor: vendor.id, config: env.config, seen: try await store.devices())
        return (plan, payload)
    }

    /// Asks the vendor about a plugged device and records its plan, or refuses it with the reason.
    func announce(_ rec: DeviceRecord) async throws {
        guard let serial = rec.serial, let vid = rec.vendorID, let pid = rec.productID else { return }
        let held = try await store.heldPlan(vendor.id)
        let identity = DeviceIdentity(vendorID: vid, productID: pid, serial: serial,
                                      manufacturer: rec.manufacturer.flatMap { Fields.isShowable($0, max: 128) ? $0 : nil },
                                      product: rec.product.flatMap { Fields.isShowable($0, max: 128) ? $0 : nil }, subsystem: rec.subsystem)
        let announcement = Announcement(gatewayID: env.identity.id, device: identity, currentPlanVersion: held.version)
        let plan: ProvisioningPlan
        let record: PlanRecord
        do {
            let clock = ContinuousClock(), asked = clock.now
            // What a first container needs read from LXD (the pool's driver and free space) is read while the vendor
            // answers. Never waited for: a read LXD has not answered by the end of this block is cancelled (a hung LXD
            // must not hold the vendor's answer), and the reconcile pass reads afresh.
            async let _ = readPoolAhead()
            let body = try await env.vendors.announce(announcement, to: vendor)
            logger.info("vendor answered", metadata: ["iotgw.serial": "\(serial)",
                                                      "iotgw.ms": "\(ContainerExecutor.milliseconds(asked.duration(to: clock.now)))"])
            let (p, payload) = try await admit(body, held: held)
            guard p.devices.contains(where: { $0.serial == serial }) else {
                throw GatewayError(.deviceNotGranted, "plan v\(p.version) from \(vendor.id) does not include device \(serial)")
            }
            plan = p
            record = try await store.recordPlan(vendor: vendor.id, version: p.version, signedJSON: body, payloadSHA256: Keys.sha256Hex(payload),
                                                syncedAt: now)
            // The same plan answered again (the device's second node announced in a later pass) is not a new one.
            if p.version > held.version { env.metrics.planAccepted(vendor: vendor.id) }
        } catch let e as VendorError where e.isRetryable {
            let attempts = rec.attempts + 1
            let delay = env.backoff.delay(afterAttempts: attempts)
            try await setSerialState(rec, .announcing, error: e.message, nextAttemptAt: now.addingTimeInterval(delay), attempts: attempts)
            logger.warning("vendor unreachable, will retry", metadata: ["iotgw.retryIn": "\(delay)"])
            return
        } catch {
            // Refused by the vendor, or a plan that fails validation or local policy: nothing changes.
            env.metrics.planRefused(vendor: vendor.id, because: error)
            let reason = error.safeDescription
            try await store.setRejection(vendor.id, reason, at: now)
            try await setSerialState(rec, .rejected, error: reason)
            logger.warning("device rejected", metadata: ["udev.syspath": "\(rec.syspath)", "iotgw.error": "\(reason)"])
            await send(report(planVersion: held.version, outcome: .failed, error: reason, aboutContainer: false))
            return
        }
        try await store.setRejection(vendor.id, nil, at: now)
        try await decide(record, plan: plan)
    }

    /// Asks the vendor for its current plan every `planSyncSeconds` (sooner when asked): gateways are
    /// behind NAT, so updates are pulled. While the vendor's broker pushes plans, polling is only the
    /// fallback, at the fleet channel's longer `pollSeconds`.
    /// - Returns: when the next sync is due (nil: no approved plan yet, so none is).
    func syncIfDue() async throws -> Date? {
        guard let state = try await store.vendorState(vendor.id), state.approvedPlanID != nil else { return nil }
        let t = now
        let interval = fleetConnected ? (vendor.fleet?.pollSeconds ?? env.config.planSyncSeconds) : env.config.planSyncSeconds
        if !syncRequested, let last = state.lastSyncAt, t.timeIntervalSince(last) < interval {
            return last.addingTimeInterval(interval)
        }
        syncRequested = false
        try await store.setSynced(vendor.id, at: t)
        let next = t.addingTimeInterval(interval)
        let held = try await store.heldPlan(vendor.id)
        let body: Data
        do {
            body = try await env.vendors.currentPlan(PlanRequest(gatewayID: env.identity.id, currentPlanVersion: held.version), from: vendor)
        } catch let e as VendorError where e.isRetryable {
            logger.warning("plan sync failed", metadata: ["iotgw.error": "\(e.message)"])
            return next
        } catch {
            env.metrics.planRefused(vendor: vendor.id, because: error)
            let reason = error.safeDescription
            try await store.setRejection(vendor.id, reason, at: t)
            logger.warning("plan refused", metadata: ["iotgw.error": "\(reason)"])
            return next
        }
        try await consider(body, held: held, via: "poll")
        return next
    }

    /// A plan the vendor's broker pushed (retained, so it comes again on every reconnect). The exchange
    /// lane checks it exactly like a polled one, in turn with polls, so the same plan never lands twice.
    public func planPushed(_ body: Data) {
        pushedPlan = body
        kickExchange()
    }

    /// Takes the newest pushed plan, if any, at most one per ``VendorWorker/pushInterval``. Ignored until
    /// the vendor has an approved plan here (a first plan comes only as the answer to a device announcement).
    func takePushedPlan() async throws {
        guard let body = pushedPlan else { return }
        let t = ContinuousClock.now
        if let last = pushTakenAt, last.duration(to: t) < Self.pushInterval { return }
        pushTakenAt = t
        pushedPlan = nil
        guard try await store.vendorState(vendor.id)?.approvedPlanID != nil else { return }
        try await consider(body, held: try await store.heldPlan(vendor.id), via: "push")
    }

    /// Admits a newer plan from a poll or a push and puts it to the owner's policy; refuses anything else.
    func consider(_ body: Data, held: PlanHeld, via source: String) async throws {
        let t = now
        do {
            let (plan, payload) = try await admit(body, held: held)
            guard plan.version > held.version else { return }
            logger.info("newer plan", metadata: ["iotgw.planVersion": "\(plan.version)", "iotgw.via": "\(source)"])
            let rec = try await store.recordPlan(vendor: vendor.id, version: plan.version, signedJSON: body,
                                                 payloadSHA256: Keys.sha256Hex(payload))
            env.metrics.planAccepted(vendor: vendor.id)
            try await store.setRejection(vendor.id, nil, at: t)
            try await decide(rec, plan: plan)
        } catch {
            env.metrics.planRefused(vendor: vendor.id, because: error)
            let reason = error.safeDescription
            try await store.setRejection(vendor.id, reason, at: t)
            logger.warning("plan refused", metadata: ["iotgw.error": "\(reason)", "iotgw.via": "\(source)"])
        }
    }

    /// The exchange lane syncs the plan on its next pass (a bootstrap said the plan moved on).
    func requestSync() {
        syncRequested = true
        kickExchange()
    }

    /// Applies the owner's policy to a freshly recorded plan.
    func decide(_ record: PlanRecord, plan: ProvisioningPlan) async throws {
        guard let id = record.id else { return }
        switch record.decision {
        case .approved: return kickReconcile()
        case .denied, .superseded: return try await markAwaiting(as: .denied, error: "plan v\(plan.version) was denied")
        case .pending: break
        }
        switch ApprovalPolicy.decide(plan.grant, approved: try await approvedPlan()?.grant, vendor: vendor) {
        case .approve(let by):
            try await store.decide(planID: id, approve: true, by: by)
            try await decided(planID: id)
        case .deny(let by):
            try await store.decide(planID: id, approve: false, by: by)
            try await decided(planID: id)
        case .ask(let changes):
            try await markAwaiting(as: .awaitingApproval, error: nil)
            logger.notice("approval pending", metadata: ["iotgw.approval": "\(id)", "iotgw.planVersion": "\(plan.version)",
                                                         "iotgw.changes": "\(changes?.count ?? -1)"])
        }
    }

    /// Sets the state of every present udev node of the same physical device (same vendor and serial).
    func setSerialState(_ rec: DeviceRecord, _ state: DeviceRecord.State, error: String?, nextAttemptAt: Date? = nil,
                        attempts: Int? = nil) async throws {
        for d in try await store.devices() where d.syspath == rec.syspath || (d.present && d.vendor == rec.vendor && d.serial == rec.serial) {
            try await store.setDeviceState(d.syspath, state, error: error, nextAttemptAt: nextAttemptAt, attempts: attempts)
        }
    }
}
