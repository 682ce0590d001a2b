import Foundation
import GatewayProtocol
import GRDB
import Synchronization

/// The gateway's durable state in SQLite (WAL, synchronous=FULL so a state transition that
/// returned is on disk, even if the power goes next; journal rows excepted, see ``journal(vendor:step:status:detail:)``).
/// Migrations are registered by name and never edited once shipped.
///
/// The daemon is the store's only writer (the owner's CLI goes through its control socket), so the
/// reads its idle tick makes every `retrySeconds` for every vendor (vendor state, devices, rebuild, delivery) are
/// answered from memory until the next write: see ``ReadCache``.
public struct GatewayStore: Sendable {
    public let db: DatabasePool
    let cache = ReadCache()

    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(5)
        db = try DatabasePool(path: path, configuration: config)
        try Self.makeDurable(db)
        try Self.migrator.migrate(db)
    }

    /// Sets the pool's writer to sync the WAL at every commit. Not in `prepareDatabase`: GRDB turns WAL on
    /// after it and sets `synchronous = NORMAL` with it, which syncs only at checkpoints (a commit that
    /// returned survives the daemon's crash, not the machine's). The writer is one connection for the
    /// pool's life, so this holds for every write.
    static func makeDurable(_ db: DatabasePool) throws {
        try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
    }

    /// The writer's `PRAGMA synchronous` (2: FULL).
    func writerSynchronous() async throws -> Int {
        try await db.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA synchronous") ?? -1 }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "devices") { t in
                t.primaryKey("syspath", .text)
                t.column("subsystem", .text).notNull()
                t.column("devnode", .text)
                t.column("vendorID", .text)
                t.column("productID", .text)
                t.column("serial", .text)
                t.column("manufacturer", .text)
                t.column("product", .text)
                t.column("busPath", .text)
                t.column("vendor", .text).indexed()
                t.column("present", .boolean).notNull()
                t.column("state", .text).notNull()
                t.column("lastError", .text)
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("nextAttemptAt", .datetime)
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "plans") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("vendor", .text).notNull().indexed()
                t.column("version", .integer).notNull()
                t.column("signedJSON", .blob).notNull()
                t.column("payloadSHA256", .text).notNull()
                t.column("decision", .text).notNull()
                t.column("decidedBy", .text)
                t.column("receivedAt", .datetime).notNull()
                t.column("decidedAt", .datetime)
                t.uniqueKey(["vendor", "payloadSHA256"])
            }
            try db.create(table: "vendor_state") { t in
                t.primaryKey("vendor", .text)
                t.column("lastVersion", .integer).notNull()
                t.column("approvedPlanID", .integer).references("plans")
                t.column("appliedVersion", .integer)
                t.column("container", .text)
                t.column("lastError", .text)
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "journal") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("at", .datetime).notNull()
                t.column("vendor", .text).notNull().indexed()
                t.column("step", .text).notNull()
                t.column("status", .text).notNull()
                t.column("detail", .text)
            }
        }
        m.registerMigration("v2-delivery") { db in
            try db.alter(table: "vendor_state") { t in
                t.add(column: "deliveredVersion", .integer)
                t.add(column: "lastDelivery", .text)
                t.add(column: "lastSyncAt", .datetime)
            }
        }
        m.registerMigration("v3-isolation") { db in
            try db.alter(table: "vendor_state") { t in
                // The last plan or answer refused from this vendor, for `iot-gateway vendors`.
                t.add(column: "rejection", .text)
                t.add(column: "rejectedAt", .datetime)
                t.add(column: "reconcileAttempts", .integer).notNull().defaults(to: 0)
                t.add(column: "nextReconcileAt", .datetime)
                t.add(column: "deliveryAttempts", .integer).notNull().defaults(to: 0)
                t.add(column: "nextDeliveryAt", .datetime)
            }
            // One row per vendor while a delivery is under way: written before the container changes,
            // read back after a crash to restore the snapshot.
            try db.create(table: "deliveries") { t in
                t.primaryKey("vendor", .text)
                t.column("planVersion", .integer).notNull()
                t.column("snapshot", .text).notNull()
                t.column("phase", .text).notNull()
                t.column("startedAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
            }
        }
        m.registerMigration("v4-fleet") { db in
            // Ids of fleet commands accepted, kept until they expire: a replayed command is refused.
            try db.create(table: "fleet_commands") { t in
                t.primaryKey("id", .text)
                t.column("vendor", .text).notNull()
                t.column("expiresAt", .datetime).notNull().indexed()
            }
        }
        m.registerMigration("v5-images") { db in
            // Images the gateway downloaded itself (the only ones it ever prunes), with each vendor that
            // proved it has the image by serving it: no vendor uses another's image by naming its fingerprint.
            try db.create(table: "downloaded_images") { t in
                t.column("fingerprint", .text).notNull()
                t.column("vendor", .text).notNull()
                t.column("importedAt", .datetime).notNull()
                t.primaryKey(["fingerprint", "vendor"])
            }
            try db.create(index: "journal_at", on: "journal", columns: ["at"])
        }
        m.registerMigration("v6-rebuilds") { db in
            // One row per vendor whose container is being rebuilt on a new image (or waits to retry one).
            try db.create(table: "rebuilds") { t in
                t.primaryKey("vendor", .text)
                t.column("planVersion", .integer).notNull()
                t.column("fingerprint", .text).notNull()
                t.column("phase", .text).notNull()
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("nextAttemptAt", .datetime)
                t.column("lastError", .text)
                t.column("updatedAt", .datetime).notNull()
            }
        }
        m.registerMigration("v7-redeliver") { db in
            // A vendor's `redeliver` commands, each answered "scheduled": kept until a delivery that began after
            // them ends with a verdict.
            try db.alter(table: "vendor_state") { t in
                t.add(column: "redeliveryRequests", .integer).notNull().defaults(to: 0)
            }
        }
        return m
    }

    /// Every write of the store goes through here: whatever it changed, reads cached before it are read again.
    func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        defer { cache.invalidate() }
        return try await db.write(updates)
    }

    // MARK: - Devices

    public func device(_ syspath: String) async throws -> DeviceRecord? {
        try await db.read { try DeviceRecord.fetchOne($0, key: syspath) }
    }

    public func devices() async throws -> [DeviceRecord] {
        try await cache.read("devices", from: db) { try DeviceRecord.order(Column("syspath")).fetchAll($0) }
    }

    public func save(_ device: DeviceRecord) async throws {
        try await write { try device.save($0) }
    }

    /// Changes a device's state (and error) in one transaction.
    /// - Parameter from: when given, the device changes only if it is in one of these states when the write
    ///   runs (a state read earlier may have changed since: another decision came in between).
    /// - Returns: the device as written; nil when it is unknown or was not in a state of `from`.
    @discardableResult
    public func setDeviceState(_ syspath: String, _ state: DeviceRecord.State, error: String? = nil,
                               nextAttemptAt: Date? = nil, attempts: Int? = nil, from: Set<DeviceRecord.State>? = nil) async throws -> DeviceRecord? {
        try await write { db in
            try Self.setDeviceState(db, syspath, state, error: error, nextAttemptAt: nextAttemptAt, attempts: attempts, from: from)
        }
    }

    /// As ``setDeviceState(_:_:error:nextAttemptAt:attempts:from:)`` for several devices, in one transaction (one
    /// sync: a device's usb and tty nodes change together). Returns the devices written.
    @discardableResult
    public func setDeviceStates(_ syspaths: [String], _ state: DeviceRecord.State, error: String? = nil,
                                from: Set<DeviceRecord.State>? = nil) async throws -> [DeviceRecord] {
        guard !syspaths.isEmpty else { return [] }
        return try await write { db in
            try syspaths.compactMap { try Self.setDeviceState(db, $0, state, error: error, nextAttemptAt: nil, attempts: nil, from: from) }
        }
    }

    static func setDeviceState(_ db: Database, _ syspath: String, _ state: DeviceRecord.State, error: String?, nextAttemptAt: Date?,
                               attempts: Int?, from: Set<DeviceRecord.State>?) throws -> DeviceRecord? {
        guard var d = try DeviceRecord.fetchOne(db, key: syspath), from?.contains(d.state) ?? true else { return nil }
        d.state = state
        d.lastError = error
        d.nextAttemptAt = nextAttemptAt
        if let attempts { d.attempts = attempts }
        d.updatedAt = Date()
        try d.update(db)
        return d
    }

    /// Marks every device absent except `present` (after enumerating at start-up).
    public func markOnlyPresent(_ present: Set<String>) async throws -> [DeviceRecord] {
        try await write { db in
            var gone: [DeviceRecord] = []
            for var d in try DeviceRecord.filter(Column("present") == true).fetchAll(db) where !present.contains(d.syspath) {
                d.present = false
                if d.state == .attached || d.state == .attaching { d.state = .detached }
                d.updatedAt = Date()
                try d.update(db)
                gone.append(d)
            }
            return gone
        }
    }

    // MARK: - Plans and approvals

    public func plan(id: Int64) async throws -> PlanRecord? {
        try await db.read { try PlanRecord.fetchOne($0, key: id) }
    }

    public func plans(decision: PlanRecord.Decision? = nil) async throws -> [PlanRecord] {
        try await db.read { db in
            var q = PlanRecord.order(Column("id"))
            if let decision { q = q.filter(Column("decision") == decision.rawValue) }
            return try q.fetchAll(db)
        }
    }

    public func vendorState(_ vendor: String) async throws -> VendorStateRecord? {
        try await cache.read("vendor:" + vendor, from: db) { try VendorStateRecord.fetchOne($0, key: vendor) }
    }

    public func vendorStates() async throws -> [VendorStateRecord] {
        try await db.read { try VendorStateRecord.order(Column("vendor")).fetchAll($0) }
    }

    /// The plan held from a vendor: its newest accepted version and that plan's payload digest.
    public func heldPlan(_ vendor: String) async throws -> PlanHeld {
        try await db.read { db in
            guard let state = try VendorStateRecord.fetchOne(db, key: vendor) else { return .none }
            let sha = try String.fetchOne(db, sql: "SELECT payloadSHA256 FROM plans WHERE vendor = ? AND version = ? ORDER BY id DESC LIMIT 1",
                                          arguments: [vendor, state.lastVersion])
            return PlanHeld(version: state.lastVersion, payloadSHA256: sha)
        }
    }

    /// How many of a vendor's newest plans are kept besides its approved one (what the owner sees of its history).
    public static let keptPlans = 16

    /// Records a validated plan. Idempotent for the same bytes. Older pending plans of the vendor are
    /// superseded; `lastVersion` moves forward. Returns the stored record.
    /// - Parameter syncedAt: when the plan came as the vendor's answer to an announcement: that answer is the
    ///   vendor's current plan, so it counts as a plan sync (the next poll waits its interval from then).
    public func recordPlan(vendor: String, version: Int, signedJSON: Data, payloadSHA256: String,
                           syncedAt: Date? = nil) async throws -> PlanRecord {
        let record = try await write { db in
            if let existing = try PlanRecord.filter(Column("vendor") == vendor && Column("payloadSHA256") == payloadSHA256).fetchOne(db) {
                return existing
            }
            var state = try VendorStateRecord.fetchOne(db, key: vendor)
                ?? VendorStateRecord(vendor: vendor, lastVersion: 0, approvedPlanID: nil, appliedVersion: nil, container: nil,
                                     lastError: nil, updatedAt: Date(), deliveredVersion: nil, lastDelivery: nil, lastSyncAt: nil)
            guard version > state.lastVersion else {
                // Same bytes returned above; a repeated version with other bytes, or an older one, never lands.
                throw GatewayError(.corruptState, "plan version \(version) from \(vendor) does not follow \(state.lastVersion)")
            }
            try db.execute(sql: "UPDATE plans SET decision = 'superseded' WHERE vendor = ? AND decision = 'pending'", arguments: [vendor])
            var rec = PlanRecord(id: nil, vendor: vendor, version: version, signedJSON: signedJSON, payloadSHA256: payloadSHA256,
                                 decision: .pending, decidedBy: nil, receivedAt: Date(), decidedAt: nil)
            try rec.insert(db)
            state.lastVersion = version
            state.updatedAt = Date()
            if let syncedAt { state.lastSyncAt = syncedAt }
            try state.save(db)
            // A vendor signs as many versions as it likes (a broker can push one a second), each up to the
            // payload limit: only its approved plan and its newest `keptPlans` stay, so the owner's disk
            // does not fill with them.
            try db.execute(sql: """
                DELETE FROM plans WHERE vendor = ? AND id IS NOT ?
                AND id NOT IN (SELECT id FROM plans WHERE vendor = ? ORDER BY id DESC LIMIT ?)
                """, arguments: [vendor, state.approvedPlanID, vendor, Self.keptPlans])
            return rec
        }
        CrashPoint.reached("plan-recorded")
        return record
    }

    /// Decides a pending plan. Approving makes it the vendor's approved plan. Throws
    /// ``GatewayError/Code/notFound`` for an unknown id, ``GatewayError/Code/notPending`` if it was
    /// decided or superseded (a decision is made once) and ``GatewayError/Code/digestMismatch`` if
    /// `digest` (the payload digest of what the owner was shown) is not the plan's.
    @discardableResult
    public func decide(planID: Int64, approve: Bool, by: String, digest: String? = nil) async throws -> PlanRecord {
        let decided = try await write { db in
            guard var p = try PlanRecord.fetchOne(db, key: planID) else { throw GatewayError(.notFound, "no approval \(planID)") }
            guard p.decision == .pending else { throw GatewayError(.notPending, "approval \(planID) is already \(p.decision.rawValue)") }
            if let digest, digest != p.payloadSHA256 {
                throw GatewayError(.digestMismatch, "approval \(planID) holds another plan than the one shown (digest differs)")
            }
            p.decision = approve ? .approved : .denied
            p.decidedBy = by
            p.decidedAt = Date()
            try p.update(db)
            if approve, var state = try VendorStateRecord.fetchOne(db, key: p.vendor) {
                state.approvedPlanID = planID
                state.updatedAt = Date()
                try state.update(db)
            }
            return p
        }
        CrashPoint.reached("approval-decided")
        return decided
    }

    public func setVendorResult(_ vendor: String, appliedVersion: Int?, container: String?, error: String?) async throws {
        try await write { db in
            guard var s = try VendorStateRecord.fetchOne(db, key: vendor) else { return }
            if let appliedVersion { s.appliedVersion = appliedVersion }
            if let container { s.container = container }
            s.lastError = error
            s.updatedAt = Date()
            try s.update(db)
        }
        if appliedVersion != nil { CrashPoint.reached("result-recorded") }
    }

    public func setDelivery(_ vendor: String, version: Int, reportJSON: String) async throws {
        try await write { db in
            guard var s = try VendorStateRecord.fetchOne(db, key: vendor) else { return }
            s.deliveredVersion = version
            s.lastDelivery = reportJSON
            s.updatedAt = Date()
            try s.update(db)
        }
    }

    /// Records why the vendor's last plan or answer was refused (nil clears it).
    public func setRejection(_ vendor: String, _ message: String?, at: Date) async throws {
        try await write { db in
            try Self.ensureVendor(db, vendor)
            // Only when it changes: clearing a rejection that is not there writes nothing (no fsync on every accepted plan).
            try db.execute(sql: "UPDATE vendor_state SET rejection = ?, rejectedAt = ? WHERE vendor = ? AND (rejection IS NOT ? OR rejectedAt IS NOT ?)",
                           arguments: [message, message == nil ? nil : at, vendor, message, message == nil ? nil : at])
        }
    }

    /// Counts a failed reconcile and schedules the next try; `nil` resets after a success.
    public func setReconcileRetry(_ vendor: String, attempts: Int, next: Date?) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE vendor_state SET reconcileAttempts = ?, nextReconcileAt = ? WHERE vendor = ?",
                           arguments: [attempts, next, vendor])
        }
    }

    /// Records the vendor's `redeliver` command: the current plan's apps go through delivery again, now
    /// (any scheduled retry is brought forward), and again after a failure or a restart until a delivery that
    /// began after the command ends with a verdict (see ``finishDelivery(_:version:reportJSON:redeliveries:)``).
    public func requestRedelivery(_ vendor: String) async throws {
        try await write { db in
            try db.execute(sql: """
                UPDATE vendor_state SET redeliveryRequests = redeliveryRequests + 1, deliveryAttempts = 0, nextDeliveryAt = NULL
                WHERE vendor = ?
                """, arguments: [vendor])
        }
    }

    /// Counts a failed delivery attempt and schedules the next one.
    public func setDeliveryRetry(_ vendor: String, attempts: Int, next: Date?) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE vendor_state SET deliveryAttempts = ?, nextDeliveryAt = ? WHERE vendor = ?",
                           arguments: [attempts, next, vendor])
        }
    }

    static func ensureVendor(_ db: Database, _ vendor: String) throws {
        try db.execute(sql: """
            INSERT OR IGNORE INTO vendor_state (vendor, lastVersion, updatedAt, reconcileAttempts, deliveryAttempts)
            VALUES (?, 0, ?, 0, 0)
            """, arguments: [vendor, Date()])
    }

    // MARK: - Delivery transactions

    public func deliveryTransaction(_ vendor: String) async throws -> DeliveryTransaction? {
        try await cache.read("delivery:" + vendor, from: db) { try DeliveryTransaction.fetchOne($0, key: vendor) }
    }

    /// Writes (or moves on) the vendor's delivery transaction; durable before the call returns.
    public func saveDeliveryTransaction(_ txn: DeliveryTransaction) async throws {
        try await write { db in try txn.save(db) }
        CrashPoint.reached("delivery:\(txn.phase.rawValue)")
    }

    /// Ends a delivery: records its report as the vendor's last delivery and drops the transaction,
    /// in one transaction.
    /// - Parameter redeliveries: the vendor's redelivery requests the delivery answers (those recorded when
    ///   it began); one that came in meanwhile stays, for a delivery of its own.
    public func finishDelivery(_ vendor: String, version: Int, reportJSON: String, redeliveries: Int = 0) async throws {
        try await write { db in
            try db.execute(sql: """
                UPDATE vendor_state SET deliveredVersion = ?, lastDelivery = ?, deliveryAttempts = 0, nextDeliveryAt = NULL,
                    redeliveryRequests = max(0, redeliveryRequests - ?), updatedAt = ?
                WHERE vendor = ?
                """, arguments: [version, reportJSON, redeliveries, Date(), vendor])
            _ = try DeliveryTransaction.deleteOne(db, key: vendor)
        }
        CrashPoint.reached("delivery-finished")
    }

    // MARK: - Rebuild transactions

    public func rebuildTransaction(_ vendor: String) async throws -> RebuildTransaction? {
        try await cache.read("rebuild:" + vendor, from: db) { try RebuildTransaction.fetchOne($0, key: vendor) }
    }

    /// Writes (or moves on) the vendor's rebuild; durable before the call returns.
    public func saveRebuildTransaction(_ txn: RebuildTransaction) async throws {
        try await write { db in try txn.save(db) }
        CrashPoint.reached("rebuild:\(txn.phase.rawValue)")
    }

    /// Ends a switched rebuild in one transaction: the plan is applied, its apps delivered (in the new
    /// container, before the switch), and the rebuild row is gone.
    public func finishRebuild(_ vendor: String, version: Int, container: String, reportJSON: String?) async throws {
        try await write { db in
            try db.execute(sql: """
                UPDATE vendor_state SET appliedVersion = ?, container = ?, lastError = NULL, reconcileAttempts = 0, nextReconcileAt = NULL,
                  deliveryAttempts = 0, nextDeliveryAt = NULL, updatedAt = ? WHERE vendor = ?
                """, arguments: [version, container, Date(), vendor])
            if let reportJSON {
                try db.execute(sql: "UPDATE vendor_state SET deliveredVersion = ?, lastDelivery = ? WHERE vendor = ?",
                               arguments: [version, reportJSON, vendor])
            }
            _ = try RebuildTransaction.deleteOne(db, key: vendor)
        }
        CrashPoint.reached("rebuild-finished")
    }

    public func dropRebuildTransaction(_ vendor: String) async throws {
        _ = try await write { db in try RebuildTransaction.deleteOne(db, key: vendor) }
    }

    public func dropDeliveryTransaction(_ vendor: String) async throws {
        _ = try await write { db in try DeliveryTransaction.deleteOne(db, key: vendor) }
    }

    public func setSynced(_ vendor: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE vendor_state SET lastSyncAt = ? WHERE vendor = ?", arguments: [at, vendor])
        }
    }

    // MARK: - Journal

    /// A journal row is committed without a sync of its own (`synchronous = NORMAL` for that transaction):
    /// a provision writes two per step, and each sync is the disk's time on the way to the vendor's container.
    /// The row still survives the daemon's crash, and the next durable commit syncs it too (the WAL is written
    /// in order); a crash of the machine itself can lose the last rows, which resumption does not need: it
    /// re-plans from what LXD shows, and every step is idempotent.
    public func journal(vendor: String, step: String, status: String, detail: String? = nil) async throws {
        defer { cache.invalidate() }
        try await db.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            defer { try? db.execute(sql: "PRAGMA synchronous = FULL") }
            try db.inTransaction {
                var j = JournalRecord(id: nil, at: Date(), vendor: vendor, step: step, status: status, detail: detail)
                try j.insert(db)
                return .commit
            }
        }
    }

    /// Drops journal rows older than `before` (finished work: the journal only serves resumption and the
    /// owner's recent history). - Returns: rows deleted.
    @discardableResult
    public func pruneJournal(before: Date) async throws -> Int {
        try await write { db in
            try db.execute(sql: "DELETE FROM journal WHERE at < ?", arguments: [before])
            return db.changesCount
        }
    }

    // MARK: - Downloaded images

    public func recordDownloadedImage(_ fingerprint: String, vendor: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO downloaded_images (fingerprint, vendor, importedAt) VALUES (?, ?, ?)",
                           arguments: [fingerprint, vendor, at])
        }
    }

    /// Fingerprint → when a vendor last served it to the gateway.
    public func downloadedImages() async throws -> [String: Date] {
        try await db.read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT fingerprint, MAX(importedAt) AS at FROM downloaded_images GROUP BY fingerprint")
                .map { ($0["fingerprint"] as String, $0["at"] as Date) })
        }
    }

    /// The vendors that served the gateway this image (empty: the gateway never downloaded it; the owner's).
    public func imageVendors(_ fingerprint: String) async throws -> Set<String> {
        try await db.read { db in
            Set(try String.fetchAll(db, sql: "SELECT vendor FROM downloaded_images WHERE fingerprint = ?", arguments: [fingerprint]))
        }
    }

    public func forgetDownloadedImage(_ fingerprint: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM downloaded_images WHERE fingerprint = ?", arguments: [fingerprint]) }
    }

    public func journal(vendor: String, limit: Int = 50) async throws -> [JournalRecord] {
        try await db.read { try JournalRecord.filter(Column("vendor") == vendor).order(Column("id").desc).limit(limit).fetchAll($0) }
    }

    // MARK: - Fleet

    /// Claims a command id for good (until it expires): false when it was seen before, a replay.
    /// Expired ids are dropped first; a command past its expiry is refused before it gets here.
    public func claimCommand(id: String, vendor: String, expiresAt: Date, now: Date) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM fleet_commands WHERE expiresAt <= ?", arguments: [now])
            try db.execute(sql: "INSERT OR IGNORE INTO fleet_commands (id, vendor, expiresAt) VALUES (?, ?, ?)",
                           arguments: [id, vendor, expiresAt])
            return db.changesCount == 1
        }
    }

    /// A vendor's plan versions as far as each got: received, pending the owner, approved.
    public func planVersions(_ vendor: String) async throws -> (received: Int?, pending: Int?, approved: Int?) {
        try await db.read { db in
            let state = try VendorStateRecord.fetchOne(db, key: vendor)
            let pending = try Int.fetchOne(db, sql: "SELECT MAX(version) FROM plans WHERE vendor = ? AND decision = 'pending'", arguments: [vendor])
            let approved = try state?.approvedPlanID.flatMap { try Int.fetchOne(db, sql: "SELECT version FROM plans WHERE id = ?", arguments: [$0]) }
            return (state.map(\.lastVersion).flatMap { $0 > 0 ? $0 : nil }, pending, approved)
        }
    }
}

/// Answers of the store's frequent reads, each kept with the count of writes it was read after. A
/// write counts once it returned (or threw), so a cached answer is one no finished write changed since:
/// a read racing a write is kept under the count from before it began and is read again next time.
final class ReadCache: Sendable {
    private let writes = Atomic<UInt64>(0)
    private let answers = Mutex<[String: (writes: UInt64, value: any Sendable)]>([:])
    /// Keys are a few per configured vendor; more than this (an owner's queries about vendors not
    /// configured, say) empties the cache rather than growing it.
    static let limit = 256

    func invalidate() { writes.add(1, ordering: .releasing) }

    func read<T: Sendable>(_ key: String, from db: DatabasePool, _ fetch: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let before = writes.load(ordering: .acquiring)
        if let hit = answers.withLock({ $0[key] }), hit.writes == before, let value = hit.value as? T { return value }
        let value = try await db.read(fetch)
        answers.withLock { answers in
            if let kept = answers[key], kept.writes > before { return }
            if answers.count >= Self.limit, answers[key] == nil { answers.removeAll() }
            answers[key] = (before, value)
        }
        return value
    }
}
