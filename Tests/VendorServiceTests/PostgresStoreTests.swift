import Crypto
import Foundation
import GatewayProtocol
import PostgresNIO
import Testing
@testable import VendorService

/// What only the PostgreSQL store has: its schema migrations, and several replicas on one database. The
/// behavior both backends share is in the parameterized store suites.
@Suite("PostgreSQL store: migrations and replicas")
struct PostgresStoreTests {
    /// A second replica on the schema of `first`, for `body`.
    func withReplica<T: Sendable>(of settings: VendorConfiguration.PostgresSettings,
                                  _ body: (PostgresVendorStore) async throws -> T) async throws -> T {
        try await PostgresVendorStore.withStore(settings: settings, create: false, logger: TestPostgres.logger, body)
    }

    @Test func anUninitializedSchemaIsRefusedAndMigrationsAreRecordedByName() async throws {
        let settings = TestPostgres.freshSettings()
        let error = await #expect(throws: StoreError.self) {
            try await TestPostgres.withReachable {
                try await PostgresVendorStore.withStore(settings: settings, create: false, logger: TestPostgres.logger) { _ in }
            }
        }
        #expect(error?.code == .missingDatabase)
        try await TestPostgres.withFreshStore(settings: settings) { store in
            let applied = try await store.read { db in
                var names: [String] = []
                for try await name in try await db.query("SELECT name FROM schema_migrations ORDER BY applied_at, name", logger: store.logger)
                    .decode(String.self) { names.append(name) }
                return names
            }
            #expect(applied == PostgresVendorStore.migrations.map(\.name))
            // Opening again (another replica starting) applies nothing and works.
            let devices = try await withReplica(of: settings) { replica in try await replica.devices() }
            #expect(devices == [])
        }
    }

    @Test func twoReplicasUnderLoadAllocateEveryPlanVersionOnce() async throws {
        let settings = TestPostgres.freshSettings()
        try await TestPostgres.withFreshStore(settings: settings) { first in
            try await withReplica(of: settings) { second in
                let gateways = (0..<2).map { _ in GatewayIdentity(key: Curve25519.Signing.PrivateKey()) }
                let serials = ["FT1", "FT2", "FT3"]
                for serial in serials {
                    try await first.registerDevice(RegisteredDevice(serial: serial, vendorID: "0403", productID: "6001", model: "thermo-v1",
                                                                    registeredAt: Harness.now))
                }
                for g in gateways {
                    try await second.enrollGateway(EnrolledGateway(id: g.id, publicKey: g.publicKey, enrolledAt: Harness.now))
                }
                @Sendable func next(_ gatewayID: String) -> @Sendable (PlanInputs) throws -> (plan: StoredPlan, issued: Int) {
                    { inputs in
                        let version = (inputs.previous?.version ?? 0) + 1
                        return (StoredPlan(gatewayID: gatewayID, version: version, contentHash: "\(version)", signedJSON: "{}",
                                           issuedAt: Harness.now), version)
                    }
                }
                // 2 replicas × 50 concurrent announcements and reissues over both gateways.
                let issued = try await withThrowingTaskGroup(of: (String, Int?).self) { group in
                    for (r, store) in [first, second].enumerated() {
                        for i in 0..<50 {
                            let gatewayID = gateways[i % 2].id
                            group.addTask {
                                if (i + r) % 3 == 2 {
                                    return (gatewayID, try await store.reissuePlan(gatewayID: gatewayID, issue: next(gatewayID)))
                                }
                                return (gatewayID, try await store.recordAnnouncement(gatewayID: gatewayID, serial: serials[(i / 2) % 3],
                                                                                      at: Harness.now.addingTimeInterval(Double(i)),
                                                                                      issue: next(gatewayID)))
                            }
                        }
                    }
                    var issued: [String: [Int]] = [:]
                    for try await (gatewayID, version) in group {
                        if let version { issued[gatewayID, default: []].append(version) }
                    }
                    return issued
                }
                for g in gateways {
                    let versions = issued[g.id, default: []].sorted()
                    #expect(!versions.isEmpty)
                    #expect(versions == Array(1...max(1, versions.count)), "no version issued twice, none lost")
                    #expect(try await first.plan(gatewayID: g.id)?.version == versions.count)
                }
                #expect(try await second.gateways().map { $0.devices.count } == [3, 3])
            }
        }
    }

    @Test func aNonceClaimedByBothReplicasAtOnceIsGrantedOnce() async throws {
        let settings = TestPostgres.freshSettings()
        try await TestPostgres.withFreshStore(settings: settings) { first in
            try await withReplica(of: settings) { second in
                let g = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
                try await first.enrollGateway(EnrolledGateway(id: g.id, publicKey: g.publicKey, enrolledAt: Harness.now))
                let nonces = (0..<25).map { String(format: "n-%016d", $0) }
                let granted = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                    for nonce in nonces {
                        for store in [first, second] {
                            group.addTask {
                                (nonce, try await store.claimNonce(gatewayID: g.id, nonce: nonce, expiresAt: Harness.now.addingTimeInterval(600),
                                                                   now: Harness.now))
                            }
                        }
                    }
                    var granted: [String: Int] = [:]
                    for try await (nonce, ok) in group where ok { granted[nonce, default: 0] += 1 }
                    return granted
                }
                #expect(nonces.allSatisfy { granted[$0] == 1 }, "each nonce granted exactly once: \(granted)")
            }
        }
    }

    @Test func concurrentEnrollmentsAndRegistrationsOfTheSameRecordMakeOneRow() async throws {
        let settings = TestPostgres.freshSettings()
        try await TestPostgres.withFreshStore(settings: settings) { first in
            try await withReplica(of: settings) { second in
                let g = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
                let device = RegisteredDevice(serial: "FT9", vendorID: "0403", productID: "6001", model: "thermo-v1", registeredAt: Harness.now)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<10 {
                        for store in [first, second] {
                            group.addTask {
                                try await store.enrollGateway(EnrolledGateway(id: g.id, publicKey: g.publicKey, enrolledAt: Harness.now))
                                try await store.registerDevice(device)
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(try await first.gateways().map(\.id) == [g.id])
                #expect(try await second.devices() == [device])
                // And the conflict is still a conflict across replicas.
                let other = Keys.encode(Curve25519.Signing.PrivateKey().publicKey)
                let error = await #expect(throws: StoreError.self) {
                    try await second.enrollGateway(EnrolledGateway(id: g.id, publicKey: other, enrolledAt: Harness.now))
                }
                #expect(error?.code == .conflict)
            }
        }
    }

    /// A replica answers session polls' generation reads from a copy that PostgreSQL's notices keep true:
    /// another replica's writes reach it by notice (a device registered raises the catalog's count, a
    /// revocation the gateway's), its own writes at once, and with its listener cut it reads the store until
    /// the listener is back.
    @Test func aReplicasGenerationCopyFollowsEveryWriteAnywhere() async throws {
        let settings = TestPostgres.freshSettings()
        try await TestPostgres.withFreshStore(settings: settings) { first in
            try await withReplica(of: settings) { second in
                let cache = first.generationCache
                func waitFor(_ what: String, _ condition: () -> Bool) async throws -> Duration {
                    let clock = ContinuousClock(), start = clock.now
                    while !condition() {
                        guard clock.now - start < .seconds(10) else { throw TestPostgres.Unavailable(description: "no \(what) in 10 s") }
                        try await Task.sleep(for: .milliseconds(1))
                    }
                    return clock.now - start
                }
                let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
                try await first.enrollGateway(EnrolledGateway(id: gateway.id, publicKey: gateway.publicKey, enrolledAt: Harness.now))
                _ = try await waitFor("listener", { cache.isLive })
                let start = try #require(try await first.generation(gatewayID: gateway.id))
                #expect(cache.cached(gateway.id) == start, "kept while nothing changes")
                #expect(try await first.generation(gatewayID: "gw-0000000000000000") == nil)

                // Another replica registers a device: the catalog's count rises, by notice.
                try await second.registerDevice(RegisteredDevice(serial: "FT1", vendorID: "0403", productID: "6001", model: "thermo-v1",
                                                                 registeredAt: Harness.now))
                let catalogNotice = try await waitFor("catalog notice", { cache.cached(gateway.id) == nil })
                let registered = try #require(try await first.generation(gatewayID: gateway.id))
                #expect(registered.catalog > start.catalog && registered.gateway == start.gateway)
                // Another replica revokes the gateway: its own count rises, by notice.
                try await second.revokeGateway(id: gateway.id, at: Harness.now)
                let gatewayNotice = try await waitFor("gateway notice", { cache.cached(gateway.id) == nil })
                let revoked = try #require(try await first.generation(gatewayID: gateway.id))
                #expect(revoked.gateway > registered.gateway)
                print("generation notices reached the other replica after \(catalogNotice) (catalog), \(gatewayNotice) (gateway)")

                // This replica's own write: forgotten as it commits, before any notice.
                #expect(cache.cached(gateway.id) == revoked)
                try await first.registerDevice(RegisteredDevice(serial: "FT2", vendorID: "0403", productID: "6001", model: "thermo-v1",
                                                                registeredAt: Harness.now))
                #expect(cache.cached(gateway.id) == nil)
                #expect(try await first.generation(gatewayID: gateway.id)?.catalog ?? 0 > revoked.catalog)

                // The listener cut: nothing is answered from the copy until it listens again.
                try await second.write { db in
                    try await db.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(PostgresVendorStore.listenerName(settings.schemaName))",
                                       logger: second.logger)
                }
                _ = try await waitFor("listener lost", { !cache.isLive })
                #expect(cache.count == 0 && cache.cached(gateway.id) == nil)
                _ = try await waitFor("listener back", { cache.isLive })
                let again = try #require(try await first.generation(gatewayID: gateway.id))
                #expect(cache.cached(gateway.id) == again)
            }
        }
    }

    @Test func thePostgresSectionIsParsedAndChecked() throws {
        var settings = VendorConfiguration.PostgresSettings(url: "postgres://iotd:p%40ss@db.example:6543/vendors", schema: "acme")
        #expect(try settings.endpoint == .init(host: "db.example", port: 6543, user: "iotd", password: "p@ss", database: "vendors"))
        settings.url = "postgresql://iotd@127.0.0.1"
        #expect(try settings.endpoint == .init(host: "127.0.0.1", port: 5432, user: "iotd", password: nil, database: "iotd"))
        for (bad, field) in [(VendorConfiguration.PostgresSettings(url: "mysql://u@h/d"), "postgres.url"),
                             (VendorConfiguration.PostgresSettings(url: "postgres://h/d"), "postgres.url"),
                             (VendorConfiguration.PostgresSettings(url: "postgres://u@h/d", schema: "Acme; DROP"), "postgres.schema"),
                             (VendorConfiguration.PostgresSettings(url: "postgres://u@h/d", maxConnections: 0), "postgres.maxConnections")] {
            let error = #expect(throws: ConfigurationError.self) { try bad.validate() }
            #expect(error?.field == field)
        }
    }

    @Test func aConfigurationWithAPostgresSectionResolvesItsPasswordFile() async throws {
        try await withTemporaryFolder { folder in
            let path = folder.appendingPathComponent("vendor.yaml").path
            var configuration = makeConfiguration(folder: folder)
            configuration.postgres = .init(url: "postgres://iotd@127.0.0.1:5432/iotd", passwordFile: "pg/password")
            let yaml = try String(decoding: JSONEncoder().encode(configuration), as: UTF8.self)  // JSON is YAML
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            let loaded = try VendorConfiguration.load(from: path)
            #expect(loaded.postgres?.passwordFile == folder.appendingPathComponent("pg/password").standardizedFileURL.path)
            #expect(loaded.postgres?.schemaName == "public")
        }
    }

    @Test func anUnreachableServerFailsSayingWhatToRun() async throws {
        var settings = TestPostgres.freshSettings()
        settings.url = "postgres://iotd@127.0.0.1:1/iotd"
        let error = await #expect(throws: TestPostgres.Unavailable.self) {
            try await TestPostgres.withReachable {
                try await PostgresVendorStore.withStore(settings: settings, create: true, logger: TestPostgres.logger) { _ in }
            }
        }
        #expect(error?.description.contains("run scripts/start-postgres") == true)
    }
}
