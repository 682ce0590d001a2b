import Foundation
import GatewayProtocol
import Logging
import PostgresNIO

/// ``VendorStore`` on PostgreSQL (postgres-nio `PostgresClient`, a connection pool). Any number of
/// `iot-daemon serve` replicas may share one database: every method is one transaction, plan issuing locks
/// the gateway's row (`SELECT … FOR NO KEY UPDATE`) so versions are allocated once per gateway, and
/// enrollment, registration and nonces rest on primary keys (`INSERT … ON CONFLICT`).
///
/// The pool runs in ``run()``, which must be going while the store is used (a `Service`'s `run`, or
/// ``withStore(settings:create:logger:_:)`` which runs it around a body). ``migrate(create:)`` applies the
/// schema before first use.
public struct PostgresVendorStore: VendorStore {
    let client: PostgresClient
    /// For the one connection ``withStore(settings:create:logger:)`` tries first.
    let probe: PostgresConnection.Configuration
    /// The schema the tables live in (validated as a plain identifier: it is written into statements).
    let schema: String
    let logger: Logger
    /// Nonce claims, committed in groups (see ``claimNonceReadingGeneration(gatewayID:nonce:expiresAt:now:)``).
    let nonces: NonceClaims<PlanGeneration?>
    /// Generation reads of session polls, made together (see ``generation(gatewayID:)``).
    let generations: Grouped<String, PlanGeneration?>
    /// The counts those reads found, kept true by the triggers' notices while ``run()`` listens for them.
    let generationCache = GenerationCache()

    /// Builds the pool from a configuration's `postgres` section; connects nothing yet.
    /// - Throws: ``ConfigurationError`` for a bad section or an unreadable password file.
    public init(settings: VendorConfiguration.PostgresSettings, logger: Logger) throws {
        try settings.validate()
        let endpoint = try settings.endpoint
        var password = endpoint.password
        if let file = settings.passwordFile {
            do {
                password = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ConfigurationError(.unreadable, field: "postgres.passwordFile", "cannot read \(file)")
            }
        }
        var configuration = PostgresClient.Configuration(host: endpoint.host, port: endpoint.port, username: endpoint.user,
                                                         password: password, database: endpoint.database, tls: .disable)
        configuration.options.maximumConnections = settings.maxConnections ?? VendorConfiguration.PostgresSettings.defaultMaxConnections
        configuration.options.connectTimeout = .seconds(10)
        configuration.options.additionalStartupParameters = [("search_path", settings.schemaName)]
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        nonces = NonceClaims(replayed: nil) { claims in try await Self.commitNonces(claims, client: client, logger: logger) }
        generations = Grouped { ids in try await Self.generations(ids, client: client, logger: logger) }
        var probe = PostgresConnection.Configuration(host: endpoint.host, port: endpoint.port, username: endpoint.user, password: password,
                                                     database: endpoint.database, tls: .disable)
        probe.options.connectTimeout = .seconds(10)
        self.probe = probe
        schema = settings.schemaName
        self.logger = logger
    }

    /// Runs the connection pool, and the connection that listens for generation notices, until the task is
    /// cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await client.run() }
            group.addTask { await listenForGenerationNotices() }
        }
    }

    /// Runs the pool, applies pending migrations, calls `body` with the store, then stops the pool.
    /// - Parameter create: create the schema when missing (`iot-daemon init`); otherwise a database without
    ///   it throws ``StoreError/Code/missingDatabase``.
    public static func withStore<T: Sendable>(settings: VendorConfiguration.PostgresSettings, create: Bool, logger: Logger,
                                              _ body: (PostgresVendorStore) async throws -> T) async throws -> T {
        let store = try PostgresVendorStore(settings: settings, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await store.run() }
            defer { group.cancelAll() }
            // Also gives the pool's task time to start before the first lease.
            try await store.checkReachable()
            try await store.migrate(create: create)
            return try await body(store)
        }
    }

    /// Connects once outside the pool and closes: a server that is down or refuses the login throws its
    /// `PSQLError` now, where the pool would retry for a minute and then report only a tripped circuit breaker.
    public func checkReachable() async throws {
        let connection = try await PostgresConnection.connect(configuration: probe, id: 0, logger: logger)
        try await connection.close()
    }

    // MARK: Schema

    /// Migrations, applied in order and recorded by name in `schema_migrations`. Never edit one that has
    /// shipped; add a new one. Column names are the record properties in snake_case.
    static let migrations: [(name: String, statements: [String])] = [
        ("v1-schema", [
            """
            CREATE TABLE devices (serial text PRIMARY KEY, vendor_id text NOT NULL, product_id text NOT NULL, model text NOT NULL,
                                  registered_at timestamptz NOT NULL)
            """,
            "CREATE TABLE gateways (id text PRIMARY KEY, public_key text NOT NULL, enrolled_at timestamptz NOT NULL, revoked_at timestamptz)",
            """
            CREATE TABLE gateway_devices (gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE,
                                          serial text NOT NULL REFERENCES devices ON DELETE CASCADE,
                                          first_seen_at timestamptz NOT NULL, PRIMARY KEY (gateway_id, serial))
            """,
            """
            CREATE TABLE plans (gateway_id text PRIMARY KEY REFERENCES gateways ON DELETE CASCADE, version bigint NOT NULL,
                                content_hash text NOT NULL, signed_json text NOT NULL, issued_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE reports (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                  gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE, plan_version bigint NOT NULL,
                                  outcome text NOT NULL, json text NOT NULL, received_at timestamptz NOT NULL)
            """,
            "CREATE INDEX reports_gateway_id ON reports (gateway_id)",
            """
            CREATE TABLE app_releases (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, app text NOT NULL, version text NOT NULL,
                                       run_list text NOT NULL, published_at timestamptz NOT NULL)
            """,
            "CREATE INDEX app_releases_app ON app_releases (app)",
            """
            CREATE TABLE chef_registrations (gateway_id text PRIMARY KEY REFERENCES gateways ON DELETE CASCADE,
                                             node_name text NOT NULL UNIQUE, client_key_pem text NOT NULL,
                                             registered_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE request_nonces (gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE, nonce text NOT NULL,
                                         expires_at timestamptz NOT NULL, PRIMARY KEY (gateway_id, nonce))
            """,
            "CREATE INDEX request_nonces_expires_at ON request_nonces (expires_at)",
            """
            CREATE TABLE gateway_status (gateway_id text PRIMARY KEY REFERENCES gateways ON DELETE CASCADE, online boolean NOT NULL,
                                         session bigint NOT NULL, sequence bigint NOT NULL, status text NOT NULL,
                                         last_seen_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE command_results (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                          gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE, command_id text NOT NULL,
                                          command text NOT NULL, outcome text NOT NULL, message text NOT NULL,
                                          received_at timestamptz NOT NULL)
            """,
            "CREATE INDEX command_results_gateway_id ON command_results (gateway_id)",
        ]),
        ("v2-rollouts", [
            "ALTER TABLE app_releases ADD COLUMN staged boolean NOT NULL DEFAULT false",
            "CREATE TABLE gateway_groups (name text PRIMARY KEY, created_at timestamptz NOT NULL)",
            """
            CREATE TABLE group_members (group_name text NOT NULL REFERENCES gateway_groups ON DELETE CASCADE,
                                        gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE, PRIMARY KEY (group_name, gateway_id))
            """,
            "CREATE INDEX group_members_gateway_id ON group_members (gateway_id)",
            """
            CREATE TABLE rollouts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, app text NOT NULL, version text NOT NULL,
                                   run_list text NOT NULL, release_id bigint NOT NULL REFERENCES app_releases, group_name text,
                                   stages text NOT NULL, max_failure_rate double precision NOT NULL, min_reports bigint NOT NULL,
                                   stage_timeout_seconds bigint NOT NULL, on_failure text NOT NULL, state text NOT NULL,
                                   stage bigint NOT NULL, stage_started_at timestamptz NOT NULL, created_at timestamptz NOT NULL,
                                   updated_at timestamptz NOT NULL, message text NOT NULL)
            """,
            "CREATE INDEX rollouts_app ON rollouts (app)",
            """
            CREATE TABLE rollout_targets (rollout_id bigint NOT NULL REFERENCES rollouts ON DELETE CASCADE,
                                          gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE, stage bigint NOT NULL,
                                          plan_version bigint, outcome text, reported_at timestamptz, reverted boolean NOT NULL,
                                          PRIMARY KEY (rollout_id, gateway_id))
            """,
            "CREATE INDEX rollout_targets_gateway_id ON rollout_targets (gateway_id)",
            """
            CREATE TABLE gateway_pins (gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE, app text NOT NULL,
                                       release_id bigint NOT NULL REFERENCES app_releases,
                                       rollout_id bigint NOT NULL REFERENCES rollouts ON DELETE CASCADE, PRIMARY KEY (gateway_id, app))
            """,
            "CREATE INDEX gateway_pins_rollout_id ON gateway_pins (rollout_id)",
        ]),
        ("v6-withdrawals", ["ALTER TABLE gateways ADD COLUMN withdrawn_at timestamptz"]),
        // The counts of `PlanGeneration`, kept by triggers whoever writes. The functions keep the schema they
        // were made in, so that a trigger fired from any connection raises this schema's counts.
        ("v7-generations", [
            "ALTER TABLE gateways ADD COLUMN generation bigint NOT NULL DEFAULT 0",
            "CREATE TABLE catalog_generation (id int PRIMARY KEY CHECK (id = 1), n bigint NOT NULL)",
            "INSERT INTO catalog_generation (id, n) VALUES (1, 0)",
            """
            CREATE FUNCTION bump_gateway_generation() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
            BEGIN
                IF TG_OP <> 'INSERT' THEN UPDATE gateways SET generation = generation + 1 WHERE id = OLD.gateway_id; END IF;
                IF TG_OP <> 'DELETE' THEN UPDATE gateways SET generation = generation + 1 WHERE id = NEW.gateway_id; END IF;
                RETURN NULL;
            END $$
            """,
            """
            CREATE FUNCTION bump_own_generation() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
            BEGIN NEW.generation := OLD.generation + 1; RETURN NEW; END $$
            """,
            """
            CREATE FUNCTION bump_catalog_generation() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
            BEGIN UPDATE catalog_generation SET n = n + 1; RETURN NULL; END $$
            """,
            """
            CREATE TRIGGER gateways_generation BEFORE UPDATE ON gateways FOR EACH ROW
                WHEN (OLD.public_key IS DISTINCT FROM NEW.public_key OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
                      OR OLD.withdrawn_at IS DISTINCT FROM NEW.withdrawn_at)
                EXECUTE FUNCTION bump_own_generation()
            """,
        ] + ["gateway_devices", "plans", "gateway_pins"].map { table in
            "CREATE TRIGGER \(table)_generation AFTER INSERT OR UPDATE OR DELETE ON \(table) FOR EACH ROW EXECUTE FUNCTION bump_gateway_generation()"
        } + ["devices", "app_releases"].map { table in
            "CREATE TRIGGER \(table)_generation AFTER INSERT OR UPDATE OR DELETE ON \(table) FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_generation()"
        }),
        // Every change of those counts is announced to the replicas (``GenerationCache``), on commit: the
        // gateway's id, or '' for the catalog's.
        ("v8-generation-notices", [
            """
            CREATE FUNCTION notify_generation() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
            BEGIN
                PERFORM pg_notify(\(generationChannel), CASE WHEN TG_TABLE_NAME = 'gateways' THEN OLD.id::text ELSE '' END);
                RETURN NULL;
            END $$
            """,
            """
            CREATE TRIGGER gateways_generation_notice AFTER UPDATE ON gateways FOR EACH ROW
                WHEN (OLD.generation IS DISTINCT FROM NEW.generation) EXECUTE FUNCTION notify_generation()
            """,
            "CREATE TRIGGER gateways_deleted_notice AFTER DELETE ON gateways FOR EACH ROW EXECUTE FUNCTION notify_generation()",
            "CREATE TRIGGER catalog_generation_notice AFTER UPDATE ON catalog_generation FOR EACH ROW EXECUTE FUNCTION notify_generation()",
        ]),
    ]

    /// The notice channel of the schema a statement runs in, as an SQL expression (49 characters whatever the
    /// schema's name: a channel name may have 63).
    static let generationChannel = "'iotgw_generation_' || md5(current_schema())"
    static let listenerSilent = StoreError.Code("listenerSilent")
    /// How often the listening connection must answer a `SELECT 1` (and how long it may take) to stay live.
    static let heartbeat: Duration = .seconds(5)
    static func listenerName(_ schema: String) -> String { String("iot-daemon generation notices \(schema)".prefix(63)) }

    /// Applies the migrations not yet recorded, in one transaction under an advisory lock, so replicas
    /// starting together apply each once.
    /// - Parameter create: create the schema and the migrations table when missing; otherwise their absence
    ///   throws ``StoreError/Code/missingDatabase``.
    public func migrate(create: Bool) async throws {
        let schema = self.schema
        try await write { db in
            try await db.query("SELECT pg_advisory_xact_lock(hashtext('iot-daemon-migrations:' || \(schema)))", logger: logger)
            var exists = false
            for try await (found) in try await db.query("SELECT to_regclass(\(schema + ".schema_migrations")) IS NOT NULL",
                                                        logger: logger).decode(Bool.self) {
                exists = found
            }
            if !exists {
                guard create else {
                    throw StoreError(.missingDatabase, "PostgreSQL schema \(schema) has no iot-daemon tables; run `iot-daemon init` first")
                }
                try await db.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: logger)
                try await db.query(PostgresQuery(unsafeSQL: """
                    CREATE TABLE \(schema).schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                    """), logger: logger)
            }
            var applied: Set<String> = []
            for try await name in try await db.query("SELECT name FROM schema_migrations", logger: logger).decode(String.self) {
                applied.insert(name)
            }
            for migration in Self.migrations where !applied.contains(migration.name) {
                for statement in migration.statements {
                    try await db.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await db.query("INSERT INTO schema_migrations (name) VALUES (\(migration.name))", logger: logger)
                logger.info("postgres migration applied", metadata: ["postgres.schema": "\(schema)", "postgres.migration": "\(migration.name)"])
            }
        }
    }

    // MARK: Transactions

    /// Runs `body` in a read-write transaction on one pooled connection: committed when it returns,
    /// rolled back when it throws (its error is rethrown as is, so a ``StoreError`` stays matchable).
    func write<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        // What this replica writes is read again by its next poll, without waiting for the notice.
        defer { generationCache.invalidateAll() }
        return try await transaction("BEGIN", body)
    }

    /// A read-only transaction on one snapshot (several queries see the same state, as a SQLite read does).
    func read<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    private func transaction<T: Sendable>(_ begin: String, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        let logger = self.logger
        return try await client.withConnection { db in
            try await db.query(PostgresQuery(unsafeSQL: begin), logger: logger)
            let result: T
            do {
                result = try await body(db)
            } catch {
                do { try await db.query("ROLLBACK", logger: logger) } catch {
                    logger.warning("postgres rollback failed", metadata: ["error": "\(error)"])
                }
                throw error
            }
            try await db.query("COMMIT", logger: logger)
            return result
        }
    }

    // MARK: Registry and enrollment

    public func registerDevice(_ device: RegisteredDevice) async throws {
        try await write { db in
            let inserted = try await db.query("""
                INSERT INTO devices (serial, vendor_id, product_id, model, registered_at)
                VALUES (\(device.serial), \(device.vendorID), \(device.productID), \(device.model), \(device.registeredAt))
                ON CONFLICT (serial) DO NOTHING RETURNING serial
                """, logger: logger).collect()
            guard inserted.isEmpty else { return }
            // Another registration of the serial exists (perhaps committed by another replica just now).
            guard let existing = try await Self.device(db, serial: device.serial, logger: logger) else { return }
            guard existing.vendorID == device.vendorID, existing.productID == device.productID, existing.model == device.model else {
                throw StoreError(.conflict, "device \(device.serial) is already registered as \(existing.model) "
                    + "\(existing.vendorID):\(existing.productID)")
            }
        }
    }

    static func device(_ db: PostgresConnection, serial: String, logger: Logger) async throws -> RegisteredDevice? {
        let rows = try await db.query("""
            SELECT serial, vendor_id, product_id, model, registered_at FROM devices WHERE serial = \(serial)
            """, logger: logger)
        for try await (serial, vendorID, productID, model, registeredAt) in rows.decode((String, String, String, String, Date).self) {
            return RegisteredDevice(serial: serial, vendorID: vendorID, productID: productID, model: model, registeredAt: registeredAt)
        }
        return nil
    }

    public func device(serial: String) async throws -> RegisteredDevice? {
        try await read { db in try await Self.device(db, serial: serial, logger: logger) }
    }

    public func devices() async throws -> [RegisteredDevice] {
        try await read { db in
            var devices: [RegisteredDevice] = []
            let rows = try await db.query("SELECT serial, vendor_id, product_id, model, registered_at FROM devices ORDER BY serial",
                                          logger: logger)
            for try await (serial, vendorID, productID, model, registeredAt) in rows.decode((String, String, String, String, Date).self) {
                devices.append(RegisteredDevice(serial: serial, vendorID: vendorID, productID: productID, model: model, registeredAt: registeredAt))
            }
            return devices
        }
    }

    public func enrollGateway(_ gateway: EnrolledGateway) async throws {
        try await write { db in
            let inserted = try await db.query("""
                INSERT INTO gateways (id, public_key, enrolled_at) VALUES (\(gateway.id), \(gateway.publicKey), \(gateway.enrolledAt))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """, logger: logger).collect()
            guard inserted.isEmpty else { return }
            for try await key in try await db.query("SELECT public_key FROM gateways WHERE id = \(gateway.id)", logger: logger)
                .decode(String.self) where key != gateway.publicKey {
                throw StoreError(.conflict, "gateway \(gateway.id) is already enrolled with another public key")
            }
        }
    }

    /// An enrolled gateway that was not revoked.
    public func gatewayRecord(id: String) async throws -> GatewayRecord? {
        let rows = try await client.query("""
            SELECT id, public_key, enrolled_at, generation FROM gateways WHERE id = \(id) AND revoked_at IS NULL
            """, logger: logger)
        for try await (id, publicKey, enrolledAt, generation) in rows.decode((String, String, Date, Int64).self) {
            return GatewayRecord(gateway: EnrolledGateway(id: id, publicKey: publicKey, enrolledAt: enrolledAt), generation: generation)
        }
        return nil
    }

    /// From the replica's copy while it is live (``GenerationCache``); otherwise read, polls arriving while a
    /// read runs being read together in the next one, one statement (``Grouped``).
    public func generation(gatewayID: String) async throws -> PlanGeneration? {
        if let cached = generationCache.cached(gatewayID) { return cached }
        let epoch = generationCache.epoch()
        let read = try await generations.call(gatewayID)
        if let epoch, let read { generationCache.keep(read, for: gatewayID, readAt: epoch) }
        return read
    }

    /// Keeps ``generationCache`` live: one connection outside the pool `LISTEN`s on the schema's
    /// ``generationChannel`` and answers a `SELECT 1` every ``heartbeat``; a connection that fails or stops
    /// answering is closed, the copy emptied, and another connected a second later (backing off to 30 s while
    /// none goes live). Returns when cancelled.
    func listenForGenerationNotices() async {
        var configuration = probe
        // Named, so that an operator sees it in `pg_stat_activity` (and a test can cut it).
        configuration.options.additionalStartupParameters = [("search_path", schema), ("application_name", Self.listenerName(schema))]
        let (cache, logger, heartbeat) = (generationCache, logger, Self.heartbeat)
        // After a listener that never went live the next try waits twice as long, up to 30 s: a server that is
        // down is not asked (nor logged about) every second.
        var retry: Duration = .seconds(1)
        while !Task.isCancelled {
            var connection: PostgresConnection?
            do {
                let db = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
                connection = db
                var channel = ""
                for try await name in try await db.query(PostgresQuery(unsafeSQL: "SELECT \(Self.generationChannel)"), logger: logger)
                    .decode(String.self) { channel = name }
                try await withThrowingTaskGroup(of: Void.self) { [channel] group in
                    group.addTask {
                        try await db.listen(on: channel) { notices in
                            cache.setLive(true)
                            for try await notice in notices { cache.notice(notice.payload) }
                        }
                    }
                    group.addTask {
                        while true {
                            try await Task.sleep(for: heartbeat)
                            try await withThrowingTaskGroup(of: Void.self) { probe in
                                probe.addTask { _ = try await db.query("SELECT 1", logger: logger).collect() }
                                probe.addTask {
                                    // Closing fails the query and the listen, so that nothing waits on a silent server.
                                    try await Task.sleep(for: heartbeat)
                                    try? await db.close()
                                    throw StoreError(Self.listenerSilent, "the postgres listener did not answer within \(heartbeat)")
                                }
                                defer { probe.cancelAll() }
                                try await probe.next()
                            }
                        }
                    }
                    defer { group.cancelAll() }
                    try await group.next()
                }
            } catch where !Task.isCancelled {
                logger.notice("postgres generation notices lost: polls read the store until they are back",
                              metadata: ["error": "\(String(reflecting: error))"])
            } catch {}
            retry = cache.isLive ? .seconds(1) : min(retry * 2, .seconds(30))
            cache.setLive(false)
            try? await connection?.close()
            try? await Task.sleep(for: retry)
        }
    }

    static func generations(_ gatewayIDs: [String], client: PostgresClient, logger: Logger) async throws -> [PlanGeneration?] {
        let unique = Array(Set(gatewayIDs))
        let rows = try await client.query("""
            SELECT g.id, g.generation, (SELECT n FROM catalog_generation) FROM gateways g WHERE g.id = ANY(\(unique)::text[])
            """, logger: logger)
        var found: [String: PlanGeneration] = [:]
        for try await (id, gateway, catalog) in rows.decode((String, Int64, Int64).self) {
            found[id] = PlanGeneration(gateway: gateway, catalog: catalog)
        }
        return gatewayIDs.map { found[$0] }
    }

    public func gateway(id: String) async throws -> EnrolledGateway? {
        // Every signed request looks its gateway up: one statement, no BEGIN/COMMIT around it (a single SELECT
        // sees one snapshot anyway), a third of the round trips.
        let rows = try await client.query("SELECT id, public_key, enrolled_at FROM gateways WHERE id = \(id) AND revoked_at IS NULL",
                                          logger: logger)
        for try await (id, publicKey, enrolledAt) in rows.decode((String, String, Date).self) {
            return EnrolledGateway(id: id, publicKey: publicKey, enrolledAt: enrolledAt)
        }
        return nil
    }

    public func gateways() async throws -> [GatewaySummary] {
        try await read { db in
            var devices: [String: [String]] = [:]
            for try await (gatewayID, serial) in try await db.query("SELECT gateway_id, serial FROM gateway_devices ORDER BY serial",
                                                                    logger: logger).decode((String, String).self) {
                devices[gatewayID, default: []].append(serial)
            }
            var plans: [String: (version: Int, issuedAt: Date)] = [:]
            for try await (gatewayID, version, issuedAt) in try await db.query("SELECT gateway_id, version, issued_at FROM plans",
                                                                               logger: logger).decode((String, Int, Date).self) {
                plans[gatewayID] = (version, issuedAt)
            }
            var statuses: [String: GatewayStatusRecord] = [:]
            for status in try await Self.statuses(db, logger: logger) { statuses[status.gatewayID] = status }
            var summaries: [GatewaySummary] = []
            let rows = try await db.query("SELECT id, public_key, enrolled_at, revoked_at FROM gateways ORDER BY id", logger: logger)
            for try await (id, publicKey, enrolledAt, revokedAt) in rows.decode((String, String, Date, Date?).self) {
                let s = statuses[id]
                summaries.append(GatewaySummary(
                    id: id, publicKey: publicKey, enrolledAt: enrolledAt, devices: devices[id, default: []], planVersion: plans[id]?.version,
                    planIssuedAt: plans[id]?.issuedAt, online: s?.online, lastSeenAt: s?.lastSeenAt,
                    status: s.flatMap { try? WireJSON.decoder().decode(GatewayStatus.self, from: Data($0.status.utf8)) }, revokedAt: revokedAt))
            }
            return summaries
        }
    }

    // MARK: Fleet channel

    public func saveStatuses(_ statuses: [ReceivedStatus]) async throws -> [Bool?] {
        let json = try statuses.map { String(decoding: try WireJSON.encoder().encode($0.status), as: UTF8.self) }
        return try await write { db in
            var kept = [Bool?](repeating: nil, count: statuses.count)
            for i in ReceivedStatus.lockOrder(statuses) {
                let (status, receivedAt) = (statuses[i].status, statuses[i].receivedAt)
                // Locking the gateway serializes statuses of one gateway across replicas.
                guard try await Self.lockGateway(db, id: status.gatewayID, logger: logger) else { continue }
                let current = try await Self.statuses(db, gatewayID: status.gatewayID, logger: logger).first
                let decoded = current.flatMap { try? WireJSON.decoder().decode(GatewayStatus.self, from: Data($0.status.utf8)) }
                guard status.supersedes(decoded) else {
                    kept[i] = false
                    continue
                }
                kept[i] = true
                if !status.online, current != nil {
                    // The will says only "gone": the last status stays, marked offline.
                    try await db.query("""
                        UPDATE gateway_status SET online = false, last_seen_at = \(receivedAt) WHERE gateway_id = \(status.gatewayID)
                        """, logger: logger)
                    continue
                }
                try await db.query("""
                    INSERT INTO gateway_status (gateway_id, online, session, sequence, status, last_seen_at)
                    VALUES (\(status.gatewayID), \(status.online), \(status.session), \(status.sequence), \(json[i]), \(receivedAt))
                    ON CONFLICT (gateway_id) DO UPDATE SET online = EXCLUDED.online, session = EXCLUDED.session,
                        sequence = EXCLUDED.sequence, status = EXCLUDED.status, last_seen_at = EXCLUDED.last_seen_at
                    """, logger: logger)
            }
            return kept
        }
    }

    static func statuses(_ db: PostgresConnection, gatewayID: String? = nil, logger: Logger) async throws -> [GatewayStatusRecord] {
        let rows = try await db.query("""
            SELECT gateway_id, online, session, sequence, status, last_seen_at FROM gateway_status
            WHERE \(gatewayID)::text IS NULL OR gateway_id = \(gatewayID)::text ORDER BY gateway_id
            """, logger: logger)
        var records: [GatewayStatusRecord] = []
        for try await (gatewayID, online, session, sequence, status, lastSeenAt) in rows.decode((String, Bool, Int64, Int64, String, Date).self) {
            records.append(GatewayStatusRecord(gatewayID: gatewayID, online: online, session: session, sequence: sequence, status: status,
                                               lastSeenAt: lastSeenAt))
        }
        return records
    }

    public func statuses() async throws -> [GatewayStatusRecord] {
        try await read { db in try await Self.statuses(db, logger: logger) }
    }

    public func addCommandResult(_ result: StoredCommandResult) async throws {
        try await write { db in
            // Only for an enrolled gateway (a result for another is dropped), as the SQLite store does.
            _ = try await db.query("""
                INSERT INTO command_results (gateway_id, command_id, command, outcome, message, received_at)
                SELECT id, \(result.commandID), \(result.command), \(result.outcome), \(result.message), \(result.receivedAt)
                FROM gateways WHERE id = \(result.gatewayID)
                """, logger: logger)
        }
    }

    public func commandResults(gatewayID: String?) async throws -> [StoredCommandResult] {
        try await read { db in
            let rows = try await db.query("""
                SELECT id, gateway_id, command_id, command, outcome, message, received_at FROM command_results
                WHERE \(gatewayID)::text IS NULL OR gateway_id = \(gatewayID)::text ORDER BY id
                """, logger: logger)
            var results: [StoredCommandResult] = []
            for try await (id, gatewayID, commandID, command, outcome, message, receivedAt)
                in rows.decode((Int64, String, String, String, String, String, Date).self) {
                results.append(StoredCommandResult(id: id, gatewayID: gatewayID, commandID: commandID, command: command, outcome: outcome,
                                                   message: message, receivedAt: receivedAt))
            }
            return results
        }
    }

    public func revokeGateway(id: String, at: Date) async throws {
        try await write { db in
            let updated = try await db.query("""
                UPDATE gateways SET revoked_at = COALESCE(revoked_at, \(at)) WHERE id = \(id) RETURNING id
                """, logger: logger).collect()
            guard updated.count == 1 else { throw StoreError(.notFound, "gateway \(id) is not enrolled") }
        }
    }

    public func setWithdrawn(gatewayID: String, at: Date?) async throws {
        try await write { db in
            let updated = try await db.query("""
                UPDATE gateways SET withdrawn_at = \(at) WHERE id = \(gatewayID) AND revoked_at IS NULL RETURNING id
                """, logger: logger).collect()
            guard updated.count == 1 else { throw StoreError(.notFound, "gateway \(gatewayID) is not enrolled") }
        }
    }

    // MARK: Plans

    /// Locks the gateway's row until the transaction ends; false when the gateway is not enrolled. `NO KEY
    /// UPDATE` serializes plan issuing (and statuses) per gateway without blocking inserts that only reference
    /// the gateway (reports, nonces).
    static func lockGateway(_ db: PostgresConnection, id: String, logger: Logger) async throws -> Bool {
        try await !db.query("SELECT id FROM gateways WHERE id = \(id) FOR NO KEY UPDATE", logger: logger).collect().isEmpty
    }

    public func recordAnnouncement<Issued: Sendable>(
        gatewayID: String, serial: String, at: Date,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued {
        try await write { db in
            guard try await Self.lockGateway(db, id: gatewayID, logger: logger) else {
                throw StoreError(.notFound, "gateway \(gatewayID) is not enrolled")
            }
            guard try await Self.device(db, serial: serial, logger: logger) != nil else {
                throw StoreError(.notFound, "device \(serial) is not registered")
            }
            try await db.query("""
                INSERT INTO gateway_devices (gateway_id, serial, first_seen_at) VALUES (\(gatewayID), \(serial), \(at))
                ON CONFLICT (gateway_id, serial) DO NOTHING
                """, logger: logger)
            let inputs = try await Self.planInputs(db, gatewayID: gatewayID, logger: logger)
            let (plan, issued) = try issue(inputs)
            // A device announced again leaves the plan as it was: rewriting it would only raise the generation.
            if plan != inputs.previous { try await Self.save(plan, db, logger: logger) }
            return issued
        }
    }

    public func reissuePlan<Issued: Sendable>(
        gatewayID: String,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued? {
        try await write { db in
            guard try await Self.lockGateway(db, id: gatewayID, logger: logger) else { return nil }
            let inputs = try await Self.planInputs(db, gatewayID: gatewayID, logger: logger)
            guard inputs.previous != nil else { return nil }
            let (plan, issued) = try issue(inputs)
            // Most polls get the stored plan back: writing it again would only make a dead row.
            if plan != inputs.previous { try await Self.save(plan, db, logger: logger) }
            return issued
        }
    }

    static func save(_ plan: StoredPlan, _ db: PostgresConnection, logger: Logger) async throws {
        try await db.query("""
            INSERT INTO plans (gateway_id, version, content_hash, signed_json, issued_at)
            VALUES (\(plan.gatewayID), \(plan.version), \(plan.contentHash), \(plan.signedJSON), \(plan.issuedAt))
            ON CONFLICT (gateway_id) DO UPDATE SET version = EXCLUDED.version, content_hash = EXCLUDED.content_hash,
                signed_json = EXCLUDED.signed_json, issued_at = EXCLUDED.issued_at
            """, logger: logger)
    }

    public func planInputs(gatewayID: String) async throws -> PlanInputs {
        // Every poll reads these: one statement (one snapshot) on any pooled connection, no BEGIN/COMMIT.
        try await Self.planInputs(from: client.query(Self.planInputsQuery(gatewayID: gatewayID), logger: logger))
    }

    static func planInputs(_ db: PostgresConnection, gatewayID: String, logger: Logger) async throws -> PlanInputs {
        try await planInputs(from: db.query(planInputsQuery(gatewayID: gatewayID), logger: logger))
    }

    /// The gateway's devices (in the order first seen), its plan, its current releases (by app), whether it
    /// is withdrawn and its generation, in one statement: rows of kind 0 (device), 1 (plan), 2 (release),
    /// 3 (withdrawn), 4 (the gateway's generation) and 5 (the catalog's) with the columns each needs.
    static func planInputsQuery(gatewayID: String) -> PostgresQuery {
        """
        SELECT 0 AS kind, row_number() OVER (ORDER BY g.first_seen_at, d.serial) AS ord, d.serial AS a, d.vendor_id AS b,
               d.product_id AS c, d.model AS e, d.registered_at AS t, NULL::bigint AS n, NULL::boolean AS staged
            FROM devices d JOIN gateway_devices g ON g.serial = d.serial WHERE g.gateway_id = \(gatewayID)
        UNION ALL
        SELECT 1, 0, p.gateway_id, p.content_hash, p.signed_json, NULL, p.issued_at, p.version, NULL
            FROM plans p WHERE p.gateway_id = \(gatewayID)
        UNION ALL
        SELECT 2, row_number() OVER (ORDER BY r.app, r.id), r.app, r.version, r.run_list, NULL, r.published_at, r.id, r.staged
            FROM app_releases r WHERE r.id IN (
                SELECT MAX(id) FROM app_releases WHERE NOT staged
                    AND app NOT IN (SELECT app FROM gateway_pins WHERE gateway_id = \(gatewayID)) GROUP BY app
                UNION SELECT release_id FROM gateway_pins WHERE gateway_id = \(gatewayID))
        UNION ALL
        SELECT 3, 0, w.id, '', '', NULL, w.withdrawn_at, NULL, NULL FROM gateways w WHERE w.id = \(gatewayID) AND w.withdrawn_at IS NOT NULL
        UNION ALL
        SELECT 4, 0, '', '', '', NULL, 'epoch'::timestamptz, w.generation, NULL FROM gateways w WHERE w.id = \(gatewayID)
        UNION ALL
        SELECT 5, 0, '', '', '', NULL, 'epoch'::timestamptz, c.n, NULL FROM catalog_generation c
        ORDER BY kind, ord
        """
    }

    static func planInputs(from rows: PostgresRowSequence) async throws -> PlanInputs {
        var inputs = PlanInputs(devices: [], previous: nil, releases: [])
        var gateway: Int64 = 0, catalog: Int64 = 0
        for try await (kind, _, a, b, c, e, at, n, staged) in rows.decode((Int, Int, String, String, String, String?, Date, Int64?, Bool?).self) {
            switch kind {
            case 0:
                inputs.devices.append(RegisteredDevice(serial: a, vendorID: b, productID: c, model: e ?? "", registeredAt: at))
            case 1:
                inputs.previous = StoredPlan(gatewayID: a, version: Int(n ?? 0), contentHash: b, signedJSON: c, issuedAt: at)
            case 3:
                inputs.withdrawn = true
            case 4:
                gateway = n ?? 0
            case 5:
                catalog = n ?? 0
            default:
                inputs.releases.append(AppRelease(id: n, app: a, version: b, runList: try JSONDecoder().decode([String].self, from: Data(c.utf8)),
                                                  publishedAt: at, staged: staged ?? false))
            }
        }
        inputs.generation = PlanGeneration(gateway: gateway, catalog: catalog)
        return inputs
    }

    static func plans(_ db: PostgresConnection, gatewayID: String?, logger: Logger) async throws -> [StoredPlan] {
        let rows = try await db.query("""
            SELECT gateway_id, version, content_hash, signed_json, issued_at FROM plans
            WHERE \(gatewayID)::text IS NULL OR gateway_id = \(gatewayID)::text ORDER BY gateway_id
            """, logger: logger)
        var plans: [StoredPlan] = []
        for try await (gatewayID, version, contentHash, signedJSON, issuedAt) in rows.decode((String, Int, String, String, Date).self) {
            plans.append(StoredPlan(gatewayID: gatewayID, version: version, contentHash: contentHash, signedJSON: signedJSON, issuedAt: issuedAt))
        }
        return plans
    }

    public func plan(gatewayID: String) async throws -> StoredPlan? {
        try await read { db in try await Self.plans(db, gatewayID: gatewayID, logger: logger).first }
    }

    public func plans() async throws -> [StoredPlan] {
        try await read { db in try await Self.plans(db, gatewayID: nil, logger: logger) }
    }

    // MARK: Releases and Chef registrations

    /// Every release oldest first, or (`currentFor`) what a gateway's plan carries: the newest release of each
    /// app that is not staged, with the gateway's pinned releases in place of their apps', by app name.
    static func releases(_ db: PostgresConnection, currentFor gatewayID: String?, logger: Logger) async throws -> [AppRelease] {
        let rows = try await db.query("""
            SELECT id, app, version, run_list, published_at, staged FROM app_releases
            WHERE \(gatewayID)::text IS NULL OR id IN (
                SELECT MAX(id) FROM app_releases WHERE NOT staged
                    AND app NOT IN (SELECT app FROM gateway_pins WHERE gateway_id = \(gatewayID)::text) GROUP BY app
                UNION SELECT release_id FROM gateway_pins WHERE gateway_id = \(gatewayID)::text)
            ORDER BY CASE WHEN \(gatewayID)::text IS NOT NULL THEN app END, id
            """, logger: logger)
        var releases: [AppRelease] = []
        for try await (id, app, version, runList, publishedAt, staged) in rows.decode((Int64, String, String, String, Date, Bool).self) {
            releases.append(AppRelease(id: id, app: app, version: version, runList: try JSONDecoder().decode([String].self, from: Data(runList.utf8)),
                                       publishedAt: publishedAt, staged: staged))
        }
        return releases
    }

    @discardableResult public func addAppRelease(_ release: AppRelease) async throws -> AppRelease {
        try await write { db in try await Self.insert(release, db, logger: logger) }
    }

    static func insert(_ release: AppRelease, _ db: PostgresConnection, logger: Logger) async throws -> AppRelease {
        let runList = String(decoding: try JSONEncoder().encode(release.runList), as: UTF8.self)
        var release = release
        for try await id in try await db.query("""
            INSERT INTO app_releases (app, version, run_list, published_at, staged)
            VALUES (\(release.app), \(release.version), \(runList), \(release.publishedAt), \(release.staged)) RETURNING id
            """, logger: logger).decode(Int64.self) {
            release.id = id
        }
        return release
    }

    public func appReleases() async throws -> [AppRelease] {
        try await read { db in try await Self.releases(db, currentFor: nil, logger: logger) }
    }

    static func chefRegistrations(_ db: PostgresConnection, gatewayID: String?, logger: Logger) async throws -> [ChefRegistration] {
        let rows = try await db.query("""
            SELECT gateway_id, node_name, client_key_pem, registered_at FROM chef_registrations
            WHERE \(gatewayID)::text IS NULL OR gateway_id = \(gatewayID)::text ORDER BY gateway_id
            """, logger: logger)
        var registrations: [ChefRegistration] = []
        for try await (gatewayID, nodeName, key, registeredAt) in rows.decode((String, String, String, Date).self) {
            registrations.append(ChefRegistration(gatewayID: gatewayID, nodeName: nodeName, clientKeyPEM: key, registeredAt: registeredAt))
        }
        return registrations
    }

    public func chefRegistration(gatewayID: String) async throws -> ChefRegistration? {
        try await read { db in try await Self.chefRegistrations(db, gatewayID: gatewayID, logger: logger).first }
    }

    public func saveChefRegistration(_ registration: ChefRegistration) async throws {
        try await write { db in
            guard try await Self.lockGateway(db, id: registration.gatewayID, logger: logger) else {
                throw StoreError(.notFound, "gateway \(registration.gatewayID) is not enrolled")
            }
            try await db.query("""
                INSERT INTO chef_registrations (gateway_id, node_name, client_key_pem, registered_at)
                VALUES (\(registration.gatewayID), \(registration.nodeName), \(registration.clientKeyPEM), \(registration.registeredAt))
                ON CONFLICT (gateway_id) DO UPDATE SET node_name = EXCLUDED.node_name, client_key_pem = EXCLUDED.client_key_pem,
                    registered_at = EXCLUDED.registered_at
                """, logger: logger)
        }
    }

    public func chefRegistrations() async throws -> [ChefRegistration] {
        try await read { db in try await Self.chefRegistrations(db, gatewayID: nil, logger: logger) }
    }

    // MARK: Nonces and reports

    /// Claims wait for the batch committing now and go in the next one together (``NonceClaims``): one
    /// statement for all of them, where each learns whether its own nonce was fresh.
    public func claimNonceReadingGeneration(gatewayID: String, nonce: String, expiresAt: Date, now: Date) async throws -> PlanGeneration? {
        try await nonces.claim(NonceClaim(gatewayID: gatewayID, nonce: nonce, expiresAt: expiresAt, now: now))
    }

    /// One statement (its own transaction, one commit) for a batch of claims, each (gateway, nonce) once:
    /// every signed request claims a nonce, so the round trips and the commit's WAL flush were a good part of
    /// a plan poll's cost. The prune skips rows another claim is pruning right now (that claim deletes them)
    /// and the rows being claimed (their own ON CONFLICT decides). The primary key decides between replicas
    /// claiming the same nonce: the second waits for the first to commit, then finds the row. A row that
    /// expired (by the batch's oldest `now`: a claim is never let through on a later clock) but was not
    /// pruned is free again. The statement's snapshot also gives each fresh claim its gateway's generation
    /// (see ``PlanGeneration``).
    static func commitNonces(_ claims: [NonceClaim], client: PostgresClient, logger: Logger) async throws -> [PlanGeneration?] {
        guard let oldest = claims.map(\.now).min() else { return [] }
        let gatewayIDs = claims.map(\.gatewayID), nonces = claims.map(\.nonce), expiries = claims.map(\.expiresAt)
        let rows = try await client.query("""
            WITH claims AS (
                SELECT * FROM unnest(\(gatewayIDs)::text[], \(nonces)::text[], \(expiries)::timestamptz[]) AS c(gateway_id, nonce, expires_at)
            ), pruned AS (
                DELETE FROM request_nonces WHERE ctid IN
                    (SELECT ctid FROM request_nonces r WHERE r.expires_at <= \(oldest)
                        AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.gateway_id = r.gateway_id AND c.nonce = r.nonce)
                     FOR UPDATE SKIP LOCKED)
            )
            INSERT INTO request_nonces (gateway_id, nonce, expires_at) SELECT gateway_id, nonce, expires_at FROM claims
            ON CONFLICT (gateway_id, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at
                WHERE request_nonces.expires_at <= \(oldest)
            RETURNING gateway_id, nonce, (SELECT g.generation FROM gateways g WHERE g.id = request_nonces.gateway_id),
                (SELECT n FROM catalog_generation)
            """, logger: logger)
        var claimed: [NonceClaim.Key: PlanGeneration] = [:]
        for try await (gatewayID, nonce, gateway, catalog) in rows.decode((String, String, Int64, Int64).self) {
            claimed[NonceClaim.Key(gatewayID: gatewayID, nonce: nonce)] = PlanGeneration(gateway: gateway, catalog: catalog)
        }
        return claims.map { claimed[$0.key] }
    }

    @discardableResult public func addReport(_ report: StoredReport) async throws -> StoredReport {
        try await write { db in
            var report = report
            for try await id in try await db.query("""
                INSERT INTO reports (gateway_id, plan_version, outcome, json, received_at)
                VALUES (\(report.gatewayID), \(report.planVersion), \(report.outcome), \(report.json), \(report.receivedAt)) RETURNING id
                """, logger: logger).decode(Int64.self) {
                report.id = id
            }
            try await Self.recordRolloutOutcome(db, report, logger: logger)
            return report
        }
    }

    public func reports() async throws -> [StoredReport] {
        try await read { db in
            let rows = try await db.query("""
                SELECT id, gateway_id, plan_version, outcome, json, received_at FROM reports ORDER BY id
                """, logger: logger)
            var reports: [StoredReport] = []
            for try await (id, gatewayID, planVersion, outcome, json, receivedAt) in rows.decode((Int64, String, Int, String, String, Date).self) {
                reports.append(StoredReport(id: id, gatewayID: gatewayID, planVersion: planVersion, outcome: outcome, json: json,
                                            receivedAt: receivedAt))
            }
            return reports
        }
    }
}
