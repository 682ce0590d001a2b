import Foundation
import GatewayProtocol
import GRDB

/// ``VendorStore`` on a SQLite file in WAL mode (GRDB `DatabasePool`): many concurrent readers, one writer.
public struct SQLiteVendorStore: VendorStore {
    let pool: DatabasePool
    /// Nonce claims, committed in groups (see ``claimNonceReadingGeneration(gatewayID:nonce:expiresAt:now:)``).
    let nonces: NonceClaims<PlanGeneration?>
    /// Generation reads of session polls, made together (see ``generation(gatewayID:)``).
    let generations: Grouped<String, PlanGeneration?>
    /// The counts those reads found, kept while ``changes`` says nothing was committed since.
    let generationCache = GenerationCache()
    /// A read-only connection of its own, asked `PRAGMA data_version`: it changes whenever another
    /// connection (this process's writer, the CLI, another process) commits.
    let changes: DatabaseQueue

    /// Opens the database at `path` and applies pending migrations.
    /// - Parameter create: create the file (and its folder) when missing; otherwise a missing file throws
    ///   ``StoreError/Code/missingDatabase`` so a typo in a path does not start an empty registry.
    ///   A created file is mode 0600: it holds the Chef client keys of registered gateways (SQLite gives
    ///   its `-wal` and `-shm` files the same mode).
    public init(path: String, create: Bool) throws {
        let url = URL(fileURLWithPath: path)
        var created = false
        if !FileManager.default.fileExists(atPath: path) {
            guard create else {
                throw StoreError(.missingDatabase, "database \(path) does not exist; run `iot-daemon init` first")
            }
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            // An empty file first, so the mode is set before anything is written.
            guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw StoreError(.missingDatabase, "cannot create database \(path)")
            }
            created = true
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.foreignKeysEnabled = true
        do {
            let pool = try DatabasePool(path: path, configuration: configuration)
            // GRDB sets the writer to `synchronous = NORMAL` with WAL (a sync at checkpoints only): every write
            // here (enrolments, keys, signed plans) is to be on disk when it returns, so FULL, set on the writer
            // itself (`prepareDatabase` runs before GRDB's own setting).
            try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
            try Self.migrator.migrate(pool)
            self.pool = pool
            nonces = NonceClaims(replayed: nil) { claims in try await Self.commitNonces(claims, pool: pool) }
            generations = Grouped { ids in try await pool.read { db in try Self.generations(db, gatewayIDs: ids) } }
            var readOnly = configuration
            readOnly.readonly = true
            changes = try DatabaseQueue(path: path, configuration: readOnly)
        } catch {
            if created { try? FileManager.default.removeItem(atPath: path) }
            throw error
        }
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
        migrator.registerMigration("v2-app-releases") { db in
            try db.create(table: AppRelease.databaseTableName) { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("app", .text).notNull().indexed()
                t.column("version", .text).notNull()
                t.column("runList", .text).notNull()
                t.column("publishedAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v2-chef-registrations") { db in
            try db.create(table: ChefRegistration.databaseTableName) { t in
                t.primaryKey("gatewayID", .text).references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("nodeName", .text).notNull().unique()
                t.column("clientKeyPEM", .text).notNull()
                t.column("registeredAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v3-request-nonces") { db in
            try db.create(table: RequestNonce.databaseTableName) { t in
                t.column("gatewayID", .text).notNull().references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("nonce", .text).notNull()
                t.column("expiresAt", .datetime).notNull().indexed()
                t.primaryKey(["gatewayID", "nonce"])
            }
        }
        migrator.registerMigration("v4-fleet") { db in
            try db.alter(table: EnrolledGateway.databaseTableName) { t in t.add(column: "revokedAt", .datetime) }
            try db.create(table: GatewayStatusRecord.databaseTableName) { t in
                t.primaryKey("gatewayID", .text).references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("online", .boolean).notNull()
                t.column("session", .integer).notNull()
                t.column("sequence", .integer).notNull()
                t.column("status", .text).notNull()
                t.column("lastSeenAt", .datetime).notNull()
            }
            try db.create(table: StoredCommandResult.databaseTableName) { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("gatewayID", .text).notNull().indexed().references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("commandID", .text).notNull()
                t.column("command", .text).notNull()
                t.column("outcome", .text).notNull()
                t.column("message", .text).notNull()
                t.column("receivedAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v5-rollouts") { db in
            try db.alter(table: AppRelease.databaseTableName) { t in t.add(column: "staged", .boolean).notNull().defaults(to: false) }
            try db.create(table: GatewayGroupRow.databaseTableName) { t in
                t.primaryKey("name", .text)
                t.column("createdAt", .datetime).notNull()
            }
            try db.create(table: GroupMember.databaseTableName) { t in
                t.column("groupName", .text).notNull().references(GatewayGroupRow.databaseTableName, onDelete: .cascade)
                t.column("gatewayID", .text).notNull().indexed().references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.primaryKey(["groupName", "gatewayID"])
            }
            try db.create(table: Rollout.databaseTableName) { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("app", .text).notNull().indexed()
                t.column("version", .text).notNull()
                t.column("runList", .text).notNull()
                t.column("releaseID", .integer).notNull().references(AppRelease.databaseTableName)
                t.column("groupName", .text)
                t.column("stages", .text).notNull()
                t.column("maxFailureRate", .double).notNull()
                t.column("minReports", .integer).notNull()
                t.column("stageTimeoutSeconds", .integer).notNull()
                t.column("onFailure", .text).notNull()
                t.column("state", .text).notNull()
                t.column("stage", .integer).notNull()
                t.column("stageStartedAt", .datetime).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
                t.column("message", .text).notNull()
            }
            try db.create(table: RolloutTarget.databaseTableName) { t in
                t.column("rolloutID", .integer).notNull().references(Rollout.databaseTableName, onDelete: .cascade)
                t.column("gatewayID", .text).notNull().indexed().references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("stage", .integer).notNull()
                t.column("planVersion", .integer)
                t.column("outcome", .text)
                t.column("reportedAt", .datetime)
                t.column("reverted", .boolean).notNull()
                t.primaryKey(["rolloutID", "gatewayID"])
            }
            try db.create(table: GatewayPin.databaseTableName) { t in
                t.column("gatewayID", .text).notNull().references(EnrolledGateway.databaseTableName, onDelete: .cascade)
                t.column("app", .text).notNull()
                t.column("releaseID", .integer).notNull().references(AppRelease.databaseTableName)
                t.column("rolloutID", .integer).notNull().indexed().references(Rollout.databaseTableName, onDelete: .cascade)
                t.primaryKey(["gatewayID", "app"])
            }
        }
        migrator.registerMigration("v6-withdrawals") { db in
            try db.alter(table: EnrolledGateway.databaseTableName) { t in t.add(column: "withdrawnAt", .datetime) }
        }
        migrator.registerMigration("v7-generations") { db in
            for statement in generationSchema { try db.execute(sql: statement) }
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

    /// The `generation` column of `gateways`, the `catalog_generation` row, and the triggers that raise them
    /// (see ``PlanGeneration``), whichever process writes.
    static var generationSchema: [String] {
        let gateways = EnrolledGateway.databaseTableName
        var statements = [
            "ALTER TABLE \(gateways) ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
            "CREATE TABLE catalog_generation (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
            "INSERT INTO catalog_generation (id, n) VALUES (1, 0)",
            """
            CREATE TRIGGER gateways_generation AFTER UPDATE OF publicKey, revokedAt, withdrawnAt ON \(gateways)
            BEGIN UPDATE \(gateways) SET generation = generation + 1 WHERE id = NEW.id; END
            """,
        ]
        for table in [GatewayDevice.databaseTableName, StoredPlan.databaseTableName, GatewayPin.databaseTableName] {
            let bump = { (row: String) in "UPDATE \(gateways) SET generation = generation + 1 WHERE id = \(row).gatewayID;" }
            statements += [
                "CREATE TRIGGER \(table)_generation_insert AFTER INSERT ON \(table) BEGIN \(bump("NEW")) END",
                "CREATE TRIGGER \(table)_generation_update AFTER UPDATE ON \(table) BEGIN \(bump("OLD")) \(bump("NEW")) END",
                "CREATE TRIGGER \(table)_generation_delete AFTER DELETE ON \(table) BEGIN \(bump("OLD")) END",
            ]
        }
        for table in [RegisteredDevice.databaseTableName, AppRelease.databaseTableName] {
            let bump = "UPDATE catalog_generation SET n = n + 1;"
            statements += ["INSERT", "UPDATE", "DELETE"].map { event in
                "CREATE TRIGGER \(table)_generation_\(event.lowercased()) AFTER \(event) ON \(table) BEGIN \(bump) END"
            }
        }
        return statements
    }

    public func gatewayRecord(id: String) async throws -> GatewayRecord? {
        try await pool.read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT id, publicKey, enrolledAt, generation FROM \(EnrolledGateway.databaseTableName) WHERE id = ? AND revokedAt IS NULL
                """, arguments: [id]) else { return nil }
            return GatewayRecord(gateway: EnrolledGateway(id: row["id"], publicKey: row["publicKey"], enrolledAt: row["enrolledAt"]),
                                 generation: row["generation"])
        }
    }

    /// Polls arriving while a read runs are read together in the next one (``Grouped``): a read each, with
    /// its hop to a reader's queue and back, cost a poll more than the rest of its work.
    /// Answered from ``generationCache`` when nothing was committed since its counts were read: the
    /// database's `data_version` is asked first, after the poll arrived, so a change written by anyone before
    /// it is read (a few microseconds on this connection's own thread, against a read's hop to a reader queue).
    public func generation(gatewayID: String) async throws -> PlanGeneration? {
        let version = try dataVersion()
        generationCache.follow(version: version)
        if let cached = generationCache.cached(gatewayID) { return cached }
        let epoch = generationCache.epoch()
        let read = try await generations.call(gatewayID)
        // Kept only if nothing was committed while it was read.
        if let epoch, let read, try dataVersion() == version { generationCache.keep(read, for: gatewayID, readAt: epoch) }
        return read
    }

    func dataVersion() throws -> Int64 {
        try changes.inDatabase { db in try Int64.fetchOne(db.cachedStatement(sql: "PRAGMA data_version")) ?? 0 }
    }

    static func generations(_ db: Database, gatewayIDs: [String]) throws -> [PlanGeneration?] {
        let unique = Array(Set(gatewayIDs))
        var found: [String: Int64] = [:]
        for chunk in stride(from: 0, to: unique.count, by: 500).map({ unique[$0..<min($0 + 500, unique.count)] }) {
            // Cached per batch size: a poll's read was compiling its statement again each time.
            let statement = try db.cachedStatement(sql: """
                SELECT id, generation FROM \(EnrolledGateway.databaseTableName) WHERE id IN (\(chunk.map { _ in "?" }.joined(separator: ",")))
                """)
            let rows = try Row.fetchAll(statement, arguments: StatementArguments(Array(chunk)))
            for row in rows { found[row["id"]] = row["generation"] }
        }
        let catalog = try catalogGeneration(db)
        return gatewayIDs.map { id in found[id].map { PlanGeneration(gateway: $0, catalog: catalog) } }
    }

    /// From a cached statement: every poll and nonce claim reads it.
    static func catalogGeneration(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(try db.cachedStatement(sql: "SELECT n FROM catalog_generation")) ?? 0
    }

    /// An enrolled gateway that was not revoked.
    public func gateway(id: String) async throws -> EnrolledGateway? {
        try await pool.read { db in
            try EnrolledGateway.fetchOne(db, sql: "SELECT * FROM \(EnrolledGateway.databaseTableName) WHERE id = ? AND revokedAt IS NULL",
                                         arguments: [id])
        }
    }

    public func gateways() async throws -> [GatewaySummary] {
        try await pool.read { db in
            let gateways = try Row.fetchAll(db, sql: "SELECT id, publicKey, enrolledAt, revokedAt FROM \(EnrolledGateway.databaseTableName) ORDER BY id")
            let devices = Dictionary(grouping: try GatewayDevice.order(Column("serial")).fetchAll(db), by: \.gatewayID)
            let plans = Dictionary(try StoredPlan.fetchAll(db).map { ($0.gatewayID, $0) }, uniquingKeysWith: { a, _ in a })
            let statuses = Dictionary(try GatewayStatusRecord.fetchAll(db).map { ($0.gatewayID, $0) }, uniquingKeysWith: { a, _ in a })
            return gateways.map { row in
                let id: String = row["id"]
                let s = statuses[id]
                return GatewaySummary(id: id, publicKey: row["publicKey"], enrolledAt: row["enrolledAt"],
                                      devices: devices[id, default: []].map(\.serial), planVersion: plans[id]?.version,
                                      planIssuedAt: plans[id]?.issuedAt, online: s?.online, lastSeenAt: s?.lastSeenAt,
                                      status: s.flatMap { try? WireJSON.decoder().decode(GatewayStatus.self, from: Data($0.status.utf8)) },
                                      revokedAt: row["revokedAt"])
            }
        }
    }

    public func saveStatuses(_ statuses: [ReceivedStatus]) async throws -> [Bool?] {
        let json = try statuses.map { String(decoding: try WireJSON.encoder().encode($0.status), as: UTF8.self) }
        return try await pool.write { db in
            var kept = [Bool?](repeating: nil, count: statuses.count)
            for i in ReceivedStatus.lockOrder(statuses) {
                let (status, receivedAt) = (statuses[i].status, statuses[i].receivedAt)
                guard try EnrolledGateway.exists(db, key: status.gatewayID) else { continue }
                let current = try GatewayStatusRecord.fetchOne(db, key: status.gatewayID)
                let decoded = current.flatMap { try? WireJSON.decoder().decode(GatewayStatus.self, from: Data($0.status.utf8)) }
                guard status.supersedes(decoded) else {
                    kept[i] = false
                    continue
                }
                kept[i] = true
                if !status.online, var current {
                    // The will says only "gone": the last status stays, marked offline.
                    current.online = false
                    current.lastSeenAt = receivedAt
                    try current.update(db)
                    continue
                }
                try GatewayStatusRecord(gatewayID: status.gatewayID, online: status.online, session: status.session, sequence: status.sequence,
                                        status: json[i], lastSeenAt: receivedAt).save(db)
            }
            return kept
        }
    }

    public func statuses() async throws -> [GatewayStatusRecord] {
        try await pool.read { try GatewayStatusRecord.order(Column("gatewayID")).fetchAll($0) }
    }

    public func addCommandResult(_ result: StoredCommandResult) async throws {
        try await pool.write { db in
            guard try EnrolledGateway.exists(db, key: result.gatewayID) else { return }
            var r = result
            try r.insert(db)
        }
    }

    public func commandResults(gatewayID: String?) async throws -> [StoredCommandResult] {
        try await pool.read { db in
            var q = StoredCommandResult.order(Column("id"))
            if let gatewayID { q = q.filter(Column("gatewayID") == gatewayID) }
            return try q.fetchAll(db)
        }
    }

    public func revokeGateway(id: String, at: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE \(EnrolledGateway.databaseTableName) SET revokedAt = COALESCE(revokedAt, ?) WHERE id = ?", arguments: [at, id])
            guard db.changesCount == 1 else { throw StoreError(.notFound, "gateway \(id) is not enrolled") }
        }
    }

    public func setWithdrawn(gatewayID: String, at: Date?) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE \(EnrolledGateway.databaseTableName) SET withdrawnAt = ? WHERE id = ? AND revokedAt IS NULL",
                           arguments: [at, gatewayID])
            guard db.changesCount == 1 else { throw StoreError(.notFound, "gateway \(gatewayID) is not enrolled") }
        }
    }

    public func recordAnnouncement<Issued: Sendable>(
        gatewayID: String, serial: String, at: Date,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued {
        try await pool.write { db in
            guard try EnrolledGateway.exists(db, key: gatewayID) else {
                throw StoreError(.notFound, "gateway \(gatewayID) is not enrolled")
            }
            guard try RegisteredDevice.exists(db, key: serial) else {
                throw StoreError(.notFound, "device \(serial) is not registered")
            }
            try GatewayDevice(gatewayID: gatewayID, serial: serial, firstSeenAt: at).insert(db, onConflict: .ignore)
            let inputs = try Self.planInputs(db, gatewayID: gatewayID)
            let (plan, issued) = try issue(inputs)
            // A device announced again leaves the plan as it was: rewriting it would only raise the generation.
            if plan != inputs.previous { try plan.save(db) }
            return issued
        }
    }

    public func reissuePlan<Issued: Sendable>(
        gatewayID: String,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued? {
        try await pool.write { db in
            let inputs = try Self.planInputs(db, gatewayID: gatewayID)
            guard inputs.previous != nil else { return nil }
            let (plan, issued) = try issue(inputs)
            // Most polls get the stored plan back: writing it again would only cost a commit.
            if plan != inputs.previous { try plan.save(db) }
            return issued
        }
    }

    public func planInputs(gatewayID: String) async throws -> PlanInputs {
        try await pool.read { db in try Self.planInputs(db, gatewayID: gatewayID) }
    }

    static func planInputs(_ db: Database, gatewayID: String) throws -> PlanInputs {
        let devices = try RegisteredDevice.fetchAll(db, sql: """
            SELECT devices.* FROM devices
            JOIN gateway_devices ON gateway_devices.serial = devices.serial
            WHERE gateway_devices.gatewayID = ?
            ORDER BY gateway_devices.firstSeenAt, devices.serial
            """, arguments: [gatewayID])
        let gateway = try Row.fetchOne(db, sql: "SELECT withdrawnAt IS NOT NULL, generation FROM \(EnrolledGateway.databaseTableName) WHERE id = ?",
                                       arguments: [gatewayID])
        return PlanInputs(devices: devices, previous: try StoredPlan.fetchOne(db, key: gatewayID),
                          releases: try currentReleases(db, gatewayID: gatewayID), withdrawn: gateway?[0] ?? false,
                          generation: PlanGeneration(gateway: gateway?[1] ?? 0, catalog: try catalogGeneration(db)))
    }

    /// The newest release of each app that is not staged, by app name, with the gateway's pinned releases in
    /// place of their apps' (see ``PlanInputs/releases``).
    static func currentReleases(_ db: Database, gatewayID: String) throws -> [AppRelease] {
        try AppRelease.fetchAll(db, sql: """
            SELECT * FROM app_releases WHERE id IN (
                SELECT MAX(id) FROM app_releases WHERE staged = 0
                    AND app NOT IN (SELECT app FROM gateway_pins WHERE gatewayID = ?) GROUP BY app
                UNION SELECT releaseID FROM gateway_pins WHERE gatewayID = ?)
            ORDER BY app
            """, arguments: [gatewayID, gatewayID])
    }

    public func plan(gatewayID: String) async throws -> StoredPlan? {
        try await pool.read { db in try StoredPlan.fetchOne(db, key: gatewayID) }
    }

    public func plans() async throws -> [StoredPlan] {
        try await pool.read { db in try StoredPlan.order(Column("gatewayID")).fetchAll(db) }
    }

    @discardableResult public func addAppRelease(_ release: AppRelease) async throws -> AppRelease {
        try await pool.write { db in
            var release = release
            try release.insert(db)
            return release
        }
    }

    public func appReleases() async throws -> [AppRelease] {
        try await pool.read { db in try AppRelease.order(Column("id")).fetchAll(db) }
    }

    public func chefRegistration(gatewayID: String) async throws -> ChefRegistration? {
        try await pool.read { db in try ChefRegistration.fetchOne(db, key: gatewayID) }
    }

    public func saveChefRegistration(_ registration: ChefRegistration) async throws {
        try await pool.write { db in
            guard try EnrolledGateway.exists(db, key: registration.gatewayID) else {
                throw StoreError(.notFound, "gateway \(registration.gatewayID) is not enrolled")
            }
            try registration.save(db)
        }
    }

    public func chefRegistrations() async throws -> [ChefRegistration] {
        try await pool.read { db in try ChefRegistration.order(Column("gatewayID")).fetchAll(db) }
    }

    /// Claims wait for the batch committing now and go in the next one together (``NonceClaims``): one
    /// transaction for all of them, where each learns whether its own nonce was fresh.
    public func claimNonceReadingGeneration(gatewayID: String, nonce: String, expiresAt: Date, now: Date) async throws -> PlanGeneration? {
        try await nonces.claim(NonceClaim(gatewayID: gatewayID, nonce: nonce, expiresAt: expiresAt, now: now))
    }

    /// One transaction for a batch of claims: forgets the nonces that expired by the oldest claim's `now`,
    /// then records each claim unless its gateway holds that nonce unexpired by the claim's own `now`.
    ///
    /// Committed without an fsync of its own (`synchronous = NORMAL` for this transaction only): every signed
    /// request claims a nonce, and waiting for the disk each time capped a vendor at a few hundred requests
    /// a second. In WAL mode the claim is still atomic and survives a crash of the daemon; the next durable
    /// commit (any other write) makes it durable too, as the WAL is written in order. Only a crash of the
    /// machine itself can lose the claims made since, which reopens those requests to a replay until their
    /// timestamp expires (at most `RequestSignature.allowedSkew`).
    ///
    /// The same transaction reads the generations of the claims' gateways (see ``PlanGeneration``).
    static func commitNonces(_ claims: [NonceClaim], pool: DatabasePool) async throws -> [PlanGeneration?] {
        guard let oldest = claims.map(\.now).min() else { return [] }
        return try await pool.writeWithoutTransaction { db in
            let previous = try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? 2
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            defer { try? db.execute(sql: "PRAGMA synchronous = \(previous)") }
            var fresh: [PlanGeneration?] = []
            try db.inTransaction(.immediate) {
                fresh = []
                try RequestNonce.filter(Column("expiresAt") <= oldest).deleteAll(db)
                // A row still there but expired for this claim is free again: the upsert takes it over.
                let insert = try db.cachedStatement(sql: """
                    INSERT INTO \(RequestNonce.databaseTableName) (gatewayID, nonce, expiresAt) VALUES (?, ?, ?)
                    ON CONFLICT (gatewayID, nonce) DO UPDATE SET expiresAt = excluded.expiresAt
                        WHERE \(RequestNonce.databaseTableName).expiresAt <= ?
                    """)
                let generation = try db.cachedStatement(sql: "SELECT generation FROM \(EnrolledGateway.databaseTableName) WHERE id = ?")
                let catalog = try catalogGeneration(db)
                for claim in claims {
                    try insert.execute(arguments: [claim.gatewayID, claim.nonce, claim.expiresAt, claim.now])
                    guard db.changesCount == 1 else { fresh.append(nil); continue }
                    let gateway = try Int64.fetchOne(generation, arguments: [claim.gatewayID]) ?? 0
                    fresh.append(PlanGeneration(gateway: gateway, catalog: catalog))
                }
                return .commit
            }
            return fresh
        }
    }

    @discardableResult public func addReport(_ report: StoredReport) async throws -> StoredReport {
        try await pool.write { db in
            var report = report
            try report.insert(db)
            try Self.recordRolloutOutcome(db, report)
            return report
        }
    }

    public func reports() async throws -> [StoredReport] {
        try await pool.read { db in try StoredReport.order(Column("id")).fetchAll(db) }
    }
}

// MARK: Groups and rollouts

extension SQLiteVendorStore {
    public func createGroup(name: String, at: Date) async throws {
        try await pool.write { db in try GatewayGroupRow(name: name, createdAt: at).insert(db, onConflict: .ignore) }
    }

    public func addToGroup(name: String, gatewayIDs: [String]) async throws {
        try await pool.write { db in
            guard try GatewayGroupRow.exists(db, key: name) else { throw StoreError(.notFound, "group \(name) does not exist") }
            for id in gatewayIDs {
                guard try EnrolledGateway.exists(db, key: id) else { throw StoreError(.notFound, "gateway \(id) is not enrolled") }
                try GroupMember(groupName: name, gatewayID: id).insert(db, onConflict: .ignore)
            }
        }
    }

    public func removeFromGroup(name: String, gatewayIDs: [String]) async throws {
        try await pool.write { db in
            guard try GatewayGroupRow.exists(db, key: name) else { throw StoreError(.notFound, "group \(name) does not exist") }
            _ = try GroupMember.filter(Column("groupName") == name && gatewayIDs.contains(Column("gatewayID"))).deleteAll(db)
        }
    }

    public func groups() async throws -> [GatewayGroup] {
        try await pool.read { db in
            let members = Dictionary(grouping: try GroupMember.order(Column("gatewayID")).fetchAll(db), by: \.groupName)
            return try GatewayGroupRow.order(Column("name")).fetchAll(db).map {
                GatewayGroup(name: $0.name, createdAt: $0.createdAt, members: members[$0.name, default: []].map(\.gatewayID))
            }
        }
    }

    public func createRollout(_ rollout: Rollout, release: AppRelease, targets: [RolloutTarget]) async throws -> Rollout {
        try await pool.write { db in
            let active = Rollout.State.allCases.filter(\.isActive).map(\.rawValue)
            if let other = try Rollout.filter(Column("app") == rollout.app && active.contains(Column("state"))).fetchOne(db) {
                throw StoreError(.conflict, "rollout \(other.id ?? 0) of \(rollout.app) is \(other.state.rawValue): "
                    + "finish or abort it before starting another")
            }
            var release = release
            release.staged = true
            try release.insert(db)
            var rollout = rollout
            rollout.releaseID = release.id!
            try rollout.insert(db)
            for var target in targets {
                target.rolloutID = rollout.id!
                try target.insert(db)
            }
            return rollout
        }
    }

    public func rollouts() async throws -> [Rollout] {
        try await pool.read { db in try Rollout.order(Column("id")).fetchAll(db) }
    }

    public func rollout(id: Int64) async throws -> Rollout? {
        try await pool.read { db in try Rollout.fetchOne(db, key: id) }
    }

    public func rolloutTargets(rolloutID: Int64) async throws -> [RolloutTarget] {
        try await pool.read { db in
            try RolloutTarget.filter(Column("rolloutID") == rolloutID).order(Column("stage"), Column("gatewayID")).fetchAll(db)
        }
    }

    public func transitionRollout(id: Int64, from: Set<Rollout.State>, stage: Int?, to state: Rollout.State, newStage: Int, message: String,
                                  at: Date) async throws -> Bool {
        try await pool.write { db in
            guard var rollout = try Rollout.fetchOne(db, key: id), from.contains(rollout.state), stage == nil || rollout.stage == stage else {
                return false
            }
            if newStage != rollout.stage || (rollout.state == .paused && state == .running) { rollout.stageStartedAt = at }
            rollout.state = state
            rollout.stage = newStage
            rollout.message = message
            rollout.updatedAt = at
            try rollout.update(db)
            return true
        }
    }

    public func stageTarget<Issued: Sendable>(
        rolloutID: Int64, gatewayID: String, pin: Bool,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued? {
        try await pool.write { db in
            guard let rollout = try Rollout.fetchOne(db, key: rolloutID),
                  pin ? rollout.state == .running : rollout.state.revertsTo != nil,
                  var target = try RolloutTarget.fetchOne(db, key: ["rolloutID": rolloutID, "gatewayID": gatewayID]),
                  try StoredPlan.exists(db, key: gatewayID)
            else { return nil }
            if pin {
                try GatewayPin(gatewayID: gatewayID, app: rollout.app, releaseID: rollout.releaseID, rolloutID: rolloutID).save(db)
            } else {
                _ = try GatewayPin.filter(Column("gatewayID") == gatewayID && Column("rolloutID") == rolloutID).deleteAll(db)
            }
            let inputs = try Self.planInputs(db, gatewayID: gatewayID)
            let (plan, issued) = try issue(inputs)
            // A device announced again leaves the plan as it was: rewriting it would only raise the generation.
            if plan != inputs.previous { try plan.save(db) }
            if pin {
                target.planVersion = target.planVersion ?? plan.version
            } else {
                target.reverted = true
            }
            try target.update(db)
            return issued
        }
    }

    /// See ``VendorStore/addReport(_:)``.
    static func recordRolloutOutcome(_ db: Database, _ report: StoredReport) throws {
        guard RolloutTarget.judgedOutcomes.contains(report.outcome) else { return }
        let active = Rollout.State.allCases.filter(\.isActive).map(\.rawValue)
        try db.execute(sql: """
            UPDATE rollout_targets SET outcome = ?, reportedAt = ?
            WHERE gatewayID = ? AND planVersion IS NOT NULL AND planVersion <= ? AND outcome IS NULL AND reverted = 0
                AND rolloutID IN (SELECT id FROM rollouts WHERE state IN (\(active.map { _ in "?" }.joined(separator: ","))))
            """, arguments: StatementArguments([report.outcome, report.receivedAt, report.gatewayID, report.planVersion]
                as [any DatabaseValueConvertible]) + StatementArguments(active))
    }

    public func completeRollout(id: Int64, stage: Int, promote: Bool, message: String, at: Date) async throws -> Bool {
        try await pool.write { db in
            guard var rollout = try Rollout.fetchOne(db, key: id), rollout.state == .running, rollout.stage == stage else { return false }
            if promote {
                try db.execute(sql: "UPDATE app_releases SET staged = 0 WHERE id = ?", arguments: [rollout.releaseID])
                _ = try GatewayPin.filter(Column("rolloutID") == id).deleteAll(db)
            }
            rollout.state = .completed
            rollout.message = message
            rollout.updatedAt = at
            try rollout.update(db)
            return true
        }
    }
}

/// `gateway_groups`.
struct GatewayGroupRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "gateway_groups"
    var name: String
    var createdAt: Date
}

/// `group_members`.
struct GroupMember: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "group_members"
    var groupName: String
    var gatewayID: String
}

/// `gateway_pins`: a rollout's staged release of an app that a gateway's plans carry. Primary key
/// (gatewayID, app).
struct GatewayPin: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "gateway_pins"
    var gatewayID: String
    var app: String
    var releaseID: Int64
    var rolloutID: Int64
}

extension Rollout: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "rollouts"

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension RolloutTarget: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "rollout_targets"
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

extension AppRelease: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "app_releases"

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension ChefRegistration: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "chef_registrations"
}

extension GatewayStatusRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "gateway_status"
}

extension StoredCommandResult: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "command_results"

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension RequestNonce: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "request_nonces"
}

extension StoredReport: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "reports"

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}
