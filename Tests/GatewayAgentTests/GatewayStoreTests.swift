import Foundation
import GatewayProtocol
import Testing
@testable import GatewayAgent

@Suite struct GatewayStoreTests {
    func store() throws -> GatewayStore {
        try GatewayStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UUID().uuidString).sqlite").path)
    }

    /// GRDB turns the pool's writer to `synchronous = NORMAL` when it sets WAL up: a setting made in
    /// `prepareDatabase` is overridden, and commits were synced only at checkpoints.
    @Test func everyCommitButAJournalRowIsSynced() async throws {
        let s = try store()
        #expect(try await s.writerSynchronous() == 2, "FULL on the writer")
        try await s.journal(vendor: "acme", step: "create iotgw-acme", status: "started")
        #expect(try await s.writerSynchronous() == 2, "back to FULL after a journal row")
        _ = try await s.recordPlan(vendor: "acme", version: 1, signedJSON: Data("{}".utf8), payloadSHA256: "h1")
        #expect(try await s.journal(vendor: "acme").count == 1)
    }

    @Test func approvalsSurviveReopenAndAreDecidedOnce() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UUID().uuidString).sqlite").path
        var s: GatewayStore? = try GatewayStore(path: path)
        let rec = try await s!.recordPlan(vendor: "acme", version: 1, signedJSON: Data("{}".utf8), payloadSHA256: "h1")
        s = nil  // "crash": reopen from disk
        let reopened = try GatewayStore(path: path)
        let pending = try await reopened.plans(decision: .pending)
        #expect(pending.map(\.id) == [rec.id])
        try await reopened.decide(planID: rec.id!, approve: true, by: "owner")
        #expect(try await reopened.vendorState("acme")?.approvedPlanID == rec.id)
        await #expect { try await reopened.decide(planID: rec.id!, approve: false, by: "owner") } throws: {
            ($0 as? GatewayError)?.code == .notPending
        }
        await #expect { try await reopened.decide(planID: 999, approve: true, by: "owner") } throws: { ($0 as? GatewayError)?.code == .notFound }
    }

    /// A vendor with a valid key signing plan after plan: the store keeps its approved plan and its newest
    /// 16, whatever it sends, and another vendor's plans are not touched.
    @Test func aVendorSendingPlanAfterPlanDoesNotFillTheOwnersDisk() async throws {
        let s = try store()
        let other = try await s.recordPlan(vendor: "other", version: 1, signedJSON: Data("{}".utf8), payloadSHA256: "o1")
        let approved = try await s.recordPlan(vendor: "acme", version: 1, signedJSON: Data("{}".utf8), payloadSHA256: "a1")
        try await s.decide(planID: approved.id!, approve: true, by: "owner")
        for v in 2...200 {
            _ = try await s.recordPlan(vendor: "acme", version: v, signedJSON: Data(repeating: 0x20, count: 4096), payloadSHA256: "a\(v)")
        }
        let kept = try await s.plans().filter { $0.vendor == "acme" }
        #expect(kept.count == GatewayStore.keptPlans + 1)
        #expect(kept.map(\.version) == [1] + Array(185...200), "the approved plan and the newest 16")
        #expect(try await s.vendorState("acme")?.approvedPlanID == approved.id)
        #expect(try await s.plan(id: approved.id!)?.decision == .approved)
        #expect(try await s.plans(decision: .pending).filter { $0.vendor == "acme" }.map(\.version) == [200])
        #expect(try await s.heldPlan("acme") == PlanHeld(version: 200, payloadSHA256: "a200"))
        #expect(try await s.plans().filter { $0.vendor == "other" }.map(\.id) == [other.id])
        // The newest still answers idempotently; a pruned one's bytes are an old version, refused.
        #expect(try await s.recordPlan(vendor: "acme", version: 200, signedJSON: Data(), payloadSHA256: "a200").version == 200)
        await #expect(throws: GatewayError.self) { try await s.recordPlan(vendor: "acme", version: 3, signedJSON: Data(), payloadSHA256: "a3") }
    }

    /// The idle tick's reads come from memory until a write: every kind of write is seen by the next read,
    /// a write that throws too, and an unchanged store answers without SQLite.
    @Test func cachedReadsSeeEveryWriteThatReturned() async throws {
        let s = try store()
        #expect(try await s.devices().isEmpty)
        #expect(try await s.vendorState("acme") == nil)
        #expect(try await s.rebuildTransaction("acme") == nil)
        #expect(try await s.deliveryTransaction("acme") == nil)
        try await s.saveDeliveryTransaction(DeliveryTransaction(vendor: "acme", planVersion: 1, snapshot: "iotgw-1", phase: .converging,
                                                                startedAt: Date(), updatedAt: Date()))
        #expect(try await s.deliveryTransaction("acme")?.phase == .converging)
        try await s.dropDeliveryTransaction("acme")
        #expect(try await s.deliveryTransaction("acme") == nil)
        try await s.save(DeviceRecord(syspath: "/sys/x", subsystem: "tty", devnode: "/dev/ttyUSB0", vendorID: "0403", productID: "6001",
                                      serial: "SN1", manufacturer: nil, product: nil, busPath: nil, vendor: "acme", present: true,
                                      state: .announcing, lastError: nil, attempts: 0, nextAttemptAt: nil, updatedAt: Date()))
        #expect(try await s.devices().map(\.state) == [.announcing])
        try await s.setDeviceState("/sys/x", .awaitingApproval)
        #expect(try await s.devices().map(\.state) == [.awaitingApproval])
        let rec = try await s.recordPlan(vendor: "acme", version: 1, signedJSON: Data("{}".utf8), payloadSHA256: "h1")
        #expect(try await s.vendorState("acme")?.lastVersion == 1)
        #expect(try await s.vendorState("acme")?.approvedPlanID == nil)
        try await s.decide(planID: rec.id!, approve: true, by: "owner")
        #expect(try await s.vendorState("acme")?.approvedPlanID == rec.id)
        try await s.setReconcileRetry("acme", attempts: 3, next: nil)
        #expect(try await s.vendorState("acme")?.reconcileAttempts == 3)
        // A write that throws may have changed nothing, or something: what follows reads again either way.
        await #expect(throws: GatewayError.self) { try await s.decide(planID: rec.id!, approve: false, by: "owner") }
        #expect(try await s.vendorState("acme")?.approvedPlanID == rec.id)
        // Unchanged: answered from memory even with the table gone underneath (nothing else writes the store).
        try await s.db.writeWithoutTransaction { try $0.execute(sql: "DELETE FROM vendor_state") }
        #expect(try await s.vendorState("acme")?.approvedPlanID == rec.id)
        try await s.setSynced("acme", at: Date())
        #expect(try await s.vendorState("acme") == nil, "read again after the store's own write")
    }

    /// The owner's denial lands while a lane marks the same device awaiting from a state it read before:
    /// the write that names the states it expects changes nothing once the device left them.
    @Test func aStateChangeFromExpectedStatesLeavesADeviceThatMovedOnAlone() async throws {
        let s = try store()
        try await s.save(DeviceRecord(syspath: "/sys/x", subsystem: "tty", devnode: "/dev/ttyUSB0", vendorID: "0403", productID: "6001",
                                      serial: "SN1", manufacturer: nil, product: nil, busPath: nil, vendor: "acme", present: true,
                                      state: .announcing, lastError: nil, attempts: 0, nextAttemptAt: nil, updatedAt: Date()))
        let waiting: Set<DeviceRecord.State> = [.announcing, .awaitingApproval]
        #expect(try await s.setDeviceState("/sys/x", .denied, error: "denied by owner", from: waiting)?.state == .denied)
        #expect(try await s.setDeviceState("/sys/x", .awaitingApproval, from: waiting) == nil, "the denial stays")
        #expect(try await s.device("/sys/x")?.state == .denied)
    }

    /// A retry time written as "now" reads back rounded to the millisecond, up to 0.5 ms later than it
    /// was written. It is due at that same "now", whatever the clock's sub-millisecond fraction.
    @Test(arguments: [0.0001, 0.0004, 0.0005, 0.0006, 0.0009])
    func aRetryTimeStoredAsNowIsDueAtThatNow(fraction: Double) async throws {
        let s = try store()
        let now = Date(timeIntervalSince1970: 1_796_000_000 + fraction)
        try await s.save(DeviceRecord(syspath: "/sys/x", subsystem: "tty", devnode: "/dev/ttyUSB0", vendorID: "0403", productID: "6001",
                                      serial: "SN1", manufacturer: nil, product: nil, busPath: nil, vendor: "acme", present: true,
                                      state: .announcing, lastError: nil, attempts: 1, nextAttemptAt: now, updatedAt: now))
        let stored = try #require(try await s.device("/sys/x")?.nextAttemptAt)
        #expect(abs(stored.timeIntervalSince(now)) <= 0.0005 + 1e-6, "the store keeps milliseconds")
        #expect(StoredTime.isDue(stored, at: now))
        #expect(StoredTime.isDue(nil, at: now))
        #expect(!StoredTime.isDue(now.addingTimeInterval(0.002), at: now), "a time 2 ms ahead still waits")
    }

    @Test func approvingNeedsTheDigestOfWhatWasShown() async throws {
        let s = try store()
        let rec = try await s.recordPlan(vendor: "acme", version: 1, signedJSON: Data("{}".utf8), payloadSHA256: "h1")
        await #expect { try await s.decide(planID: rec.id!, approve: true, by: "owner", digest: "h2") } throws: {
            ($0 as? GatewayError)?.code == .digestMismatch
        }
        #expect(try await s.plan(id: rec.id!)?.decision == .pending)
        try await s.decide(planID: rec.id!, approve: true, by: "owner", digest: "h1")
        #expect(try await s.plan(id: rec.id!)?.decision == .approved)
    }

    @Test func versionsNeverGoBackAndNewerPlansSupersedePending() async throws {
        let s = try store()
        let v1 = try await s.recordPlan(vendor: "acme", version: 1, signedJSON: Data("1".utf8), payloadSHA256: "h1")
        #expect(try await s.recordPlan(vendor: "acme", version: 1, signedJSON: Data("1".utf8), payloadSHA256: "h1").id == v1.id)
        let v2 = try await s.recordPlan(vendor: "acme", version: 2, signedJSON: Data("2".utf8), payloadSHA256: "h2")
        #expect(try await s.plan(id: v1.id!)?.decision == .superseded)
        #expect(try await s.plans(decision: .pending).map(\.id) == [v2.id])
        await #expect(throws: GatewayError.self) {
            try await s.recordPlan(vendor: "acme", version: 1, signedJSON: Data("x".utf8), payloadSHA256: "h3")
        }
        // The same version with other bytes never lands either.
        await #expect(throws: GatewayError.self) {
            try await s.recordPlan(vendor: "acme", version: 2, signedJSON: Data("y".utf8), payloadSHA256: "h4")
        }
        #expect(try await s.heldPlan("acme") == PlanHeld(version: 2, payloadSHA256: "h2"))
        #expect(try await s.vendorState("acme")?.lastVersion == 2)
    }
}

@Suite struct ControlDateTests {
    /// The control socket's `Date` header, formatted without calendar or ICU code, is RFC 9110's IMF-fixdate of now.
    @Test func theControlSocketsDateIsAnIMFFixdateOfNow() throws {
        let text = HTTPDate.now()
        #expect(text.wholeMatch(of: /[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT/) != nil, "\(text)")
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let parsed = try #require(f.date(from: text))
        #expect(abs(parsed.timeIntervalSinceNow) < 5)
    }
}
