import Foundation
import GRDB

/// ``VendorStore`` on a SQLite file in WAL mode (GRDB `DatabasePool`): many concurrent readers, one writer.
public struct SQLiteVendorStore: VendorStore {
    let pool: DatabasePool

    /// Opens the database at `path` and applies pending migrations.
    /// - Parameter create: create the file (and its folder) when missing; otherwise a missing file throws
    ///   ``StoreError/Code/missingDatabase`` so a typo in a path does not start an empty registry.
    public init(path: String, create: Bool) throws {
        let url = URL(fileURLWithPath: path)
        if !FileManager.default.fileExists(atPath: path) {
            guard create else {
                throw StoreError(.missingDatabase, "database \(path) does not exist; run `iot-daemon init` first")
            }
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.foreignKeysEnabled = true
        pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
    }

    /// Migrations, registered by name. Never edit one that has shipped; add a new one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-devices") { db in
            try db.create(table: RegisteredDevice.databaseTableName) { t in
                t.primaryKey("serial", .text)
                t.column("vendorID", .text).notNull()
                t.column("productID", .text).notNull()
                t.column("model", .text).notNull()
                t.column("registeredAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v1-gateways") { db in
            try db.create(table: EnrolledGateway.databaseTableName) { t in
                t.primaryKey("id", .text)
                t.column("publicKey", .text).notNull()
                t.column("enrolledAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v1-gateway-devices") { db in
            try db.create(table: GatewayDevice.databaseTableName) { t in
                t.column("gatewayID", .text).notNull().references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("serial", .text).notNull().references(RegisteredDevice.databaseTableName, onDelete: .cascade)
                t.column("firstSeenAt", .datetime).notNull()
                t.primaryKey(["gatewayID", "serial"])
            }
        }
        migrator.registerMigration("v1-plans") { db in
            try db.create(table: StoredPlan.databaseTableName) { t in
                t.primaryKey("gatewayID", .text).references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("version", .integer).notNull()
                t.column("contentHash", .text).notNull()
                t.column("signedJSON", .text).notNull()
                t.column("issuedAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v1-reports") { db in
            try db.create(table: StoredReport.databaseTableName) { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("gatewayID", .text).notNull().indexed().references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("planVersion", .integer).notNull()
                t.column("outcome", .text).notNull()
                t.column("json", .text).notNull()
                t.column("receivedAt", .datetime).notNull()
            }
        }
        return migrator
    }

    public func registerDevice(_ device: RegisteredDevice) async throws {
        try await pool.write { db in
            if let existing = try RegisteredDevice.fetchOne(db, key: device.serial) {
                guard existing.vendorID == device.vendorID, existing.productID == device.productID, existing.model == device.model else {
                    throw StoreError(.conflict, "device \(device.serial) is already registered as \(existing.model) "
                        + "\(existing.vendorID):\(existing.productID)")
                }
                return
            }
            try device.insert(db)
        }
    }

    public func device(serial: String) async throws -> RegisteredDevice? {
        try await pool.read { db in try RegisteredDevice.fetchOne(db, key: serial) }
    }

    public func devices() async throws -> [RegisteredDevice] {
        try await pool.read { db in try RegisteredDevice.order(Column("serial")).fetchAll(db) }
    }

    public func enrollGateway(_ gateway: EnrolledGateway) async throws {
        try await pool.write { db in
            if let existing = try EnrolledGateway.fetchOne(db, key: gateway.id) {
                guard existing.publicKey == gateway.publicKey else {
                    throw StoreError(.conflict, "gateway \(gateway.id) is already enrolled with another public key")
                }
                return
            }
            try gateway.insert(db)
        }
    }

    public func gateway(id: String) async throws -> EnrolledGateway? {
        try await pool.read { db in try EnrolledGateway.fetchOne(db, key: id) }
    }

    public func gateways() async throws -> [GatewaySummary] {
        try await pool.read { db in
            let gateways = try EnrolledGateway.order(Column("id")).fetchAll(db)
            let devices = Dictionary(grouping: try GatewayDevice.order(Column("serial")).fetchAll(db), by: \.gatewayID)
            let plans = Dictionary(try StoredPlan.fetchAll(db).map { ($0.gatewayID, $0) }, uniquingKeysWith: { a, _ in a })
            return gateways.map { g in
                GatewaySummary(id: g.id, publicKey: g.publicKey, enrolledAt: g.enrolledAt, devices: devices[g.id, default: []].map(\.serial),
                               planVersion: plans[g.id]?.version, planIssuedAt: plans[g.id]?.issuedAt)
            }
        }
    }

    public func recordAnnouncement<Issued: Sendable>(
        gatewayID: String, serial: String, at: Date,
        issue: @Sendable (_ devices: [RegisteredDevice], _ previous: StoredPlan?) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued {
        try await pool.write { db in
            guard try EnrolledGateway.exists(db, key: gatewayID) else {
                throw StoreError(.notFound, "gateway \(gatewayID) is not enrolled")
            }
            guard try RegisteredDevice.exists(db, key: serial) else {
                throw StoreError(.notFound, "device \(serial) is not registered")
            }
            try GatewayDevice(gatewayID: gatewayID, serial: serial, firstSeenAt: at).insert(db, onConflict: .ignore)
            let devices = try RegisteredDevice.fetchAll(db, sql: """
                SELECT devices.* FROM devices
                JOIN gateway_devices ON gateway_devices.serial = devices.serial
                WHERE gateway_devices.gatewayID = ?
                ORDER BY gateway_devices.firstSeenAt, devices.serial
                """, arguments: [gatewayID])
            let previous = try StoredPlan.fetchOne(db, key: gatewayID)
            let (plan, issued) = try issue(devices, previous)
            try plan.save(db)
            return issued
        }
    }

    public func plan(gatewayID: String) async throws -> StoredPlan? {
        try await pool.read { db in try StoredPlan.fetchOne(db, key: gatewayID) }
    }

    @discardableResult public func addReport(_ report: StoredReport) async throws -> StoredReport {
        try await pool.write { db in
            var report = report
            try report.insert(db)
            return report
        }
    }

    public func reports() async throws -> [StoredReport] {
        try await pool.read { db in try StoredReport.order(Column("id")).fetchAll(db) }
    }
}

extension RegisteredDevice: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "devices"
}

extension EnrolledGateway: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "gateways"
}

extension GatewayDevice: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "gateway_devices"
}

extension StoredPlan: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "plans"
}

extension StoredReport: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "reports"

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}
