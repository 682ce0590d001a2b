import Crypto
import Foundation
import GatewayProtocol
import GRDB
import Testing
@testable import VendorService

@Suite("Store on SQLite and PostgreSQL, and the key file")
struct StoreTests {
    @Test(arguments: Backend.allCases) func registeringTwiceIsIdempotentButConflictsAreRefused(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            try await h.register("FT1")
            try await h.register("FT1")
            let error = await #expect(throws: StoreError.self) { try await h.register("FT1", model: "hygro-v2") }
            #expect(error?.code == .conflict)
            #expect(try await h.store.devices().map(\.serial) == ["FT1"])
        }
    }

    @Test(arguments: Backend.allCases) func enrollingAnotherKeyUnderTheSameIDIsRefused(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            let error = await #expect(throws: StoreError.self) {
                try await h.store.enrollGateway(EnrolledGateway(id: h.gateway.id, publicKey: Keys.encode(Curve25519.Signing.PrivateKey().publicKey),
                                                                enrolledAt: Harness.now))
            }
            #expect(error?.code == .conflict)
            try await h.store.enrollGateway(EnrolledGateway(id: h.gateway.id, publicKey: h.gateway.publicKey, enrolledAt: Harness.now))
        }
    }

    @Test(arguments: Backend.allCases) func failedIssueRecordsNothing(_ backend: Backend) async throws {
        struct Refused: Error {}
        try await StoreHarness.with(backend) { h in
            try await h.register("FT1")
            await #expect(throws: Refused.self) {
                let _: Int = try await h.store.recordAnnouncement(gatewayID: h.gateway.id, serial: "FT1", at: Harness.now) { _ in
                    throw Refused()
                }
            }
            #expect(try await h.store.gateways().first?.devices == [])
        }
    }

    @Test(arguments: Backend.allCases) func announcedDevicesComeInTheOrderFirstSeen(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            for serial in ["B", "A", "C"] { try await h.register(serial) }
            var seen: [String] = []
            for (i, serial) in ["B", "A", "C", "B"].enumerated() {
                seen = try await h.store.recordAnnouncement(gatewayID: h.gateway.id, serial: serial, at: Harness.now.addingTimeInterval(Double(i))) {
                    inputs in
                    (StoredPlan(gatewayID: h.gateway.id, version: (inputs.previous?.version ?? 0) + 1, contentHash: "", signedJSON: "{}",
                                issuedAt: Harness.now), inputs.devices.map(\.serial))
                }
            }
            #expect(seen == ["B", "A", "C"])
            #expect(try await h.store.plan(gatewayID: h.gateway.id)?.version == 4)
        }
    }

    @Test(arguments: Backend.allCases) func aWithdrawalIsReadWithThePlanInputsUntilUndone(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            try await h.register("W1")
            _ = try await h.store.recordAnnouncement(gatewayID: h.gateway.id, serial: "W1", at: Harness.now) { inputs in
                (StoredPlan(gatewayID: h.gateway.id, version: 1, contentHash: "", signedJSON: "{}", issuedAt: Harness.now), ())
            }
            #expect(try await h.store.planInputs(gatewayID: h.gateway.id).withdrawn == false)
            try await h.store.setWithdrawn(gatewayID: h.gateway.id, at: Harness.now)
            let withdrawn = try await h.store.planInputs(gatewayID: h.gateway.id)
            #expect(withdrawn.withdrawn && withdrawn.devices.map(\.serial) == ["W1"], "the devices stay known, the plan grants none")
            let locked = try await h.store.reissuePlan(gatewayID: h.gateway.id) { inputs in
                (StoredPlan(gatewayID: h.gateway.id, version: 2, contentHash: "", signedJSON: "{}", issuedAt: Harness.now), inputs.withdrawn)
            }
            #expect(locked == true, "the locked path reads it too")
            try await h.store.setWithdrawn(gatewayID: h.gateway.id, at: nil)
            #expect(try await h.store.planInputs(gatewayID: h.gateway.id).withdrawn == false)
            await #expect(throws: StoreError.self) { try await h.store.setWithdrawn(gatewayID: "gw-0000000000000000", at: Harness.now) }
            try await h.store.revokeGateway(id: h.gateway.id, at: Harness.now)
            await #expect(throws: StoreError.self) { try await h.store.setWithdrawn(gatewayID: h.gateway.id, at: Harness.now) }
        }
    }

    /// What a replica keeps in memory is only as good as the generation: every write that changes a gateway's
    /// requests or plan inputs must raise it, in the transaction that makes it, and nothing else may.
    @Test(arguments: Backend.allCases) func everyChangeToWhatAPlanOrARequestIsCheckedAgainstRaisesTheGeneration(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            let other = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await h.store.enrollGateway(EnrolledGateway(id: other.id, publicKey: other.publicKey, enrolledAt: Harness.now))
            var n = 0
            func claimed(_ gateway: String? = nil) async throws -> PlanGeneration {
                n += 1
                let claim = try #require(try await h.store.claimNonceReadingGeneration(gatewayID: gateway ?? h.gateway.id, nonce: "n-\(n)",
                                                                                        expiresAt: Harness.now.addingTimeInterval(600), now: Harness.now))
                // A session's poll reads the same generation without claiming anything.
                #expect(try await h.store.generation(gatewayID: gateway ?? h.gateway.id) == claim)
                return claim
            }
            func announce(_ gateway: String, _ serial: String, version: Int = 1) async throws {
                _ = try await h.store.recordAnnouncement(gatewayID: gateway, serial: serial, at: Harness.now) { inputs in
                    (inputs.previous ?? StoredPlan(gatewayID: gateway, version: version, contentHash: "", signedJSON: "{}", issuedAt: Harness.now), ())
                }
            }
            var last = try await claimed()
            #expect(try await h.store.planInputs(gatewayID: h.gateway.id).generation == last, "the inputs carry the generation they were read at")
            #expect(try await h.store.gatewayRecord(id: h.gateway.id)?.generation == last.gateway)
            #expect(try await claimed() == last, "a nonce claim changes nothing")
            /// Expects `change` to raise the gateway's and/or the catalog's count, and nothing else.
            func expectRaised(gateway: Bool, catalog: Bool, _ what: Comment, by change: () async throws -> Void) async throws {
                try await change()
                let now = try await claimed()
                #expect((now.gateway > last.gateway) == gateway && (now.catalog > last.catalog) == catalog, what)
                #expect(now.gateway >= last.gateway && now.catalog >= last.catalog, what)
                last = now
            }
            try await expectRaised(gateway: false, catalog: true, "a registered device") { try await h.register("G1") }
            try await expectRaised(gateway: true, catalog: false, "an announced device and the first plan") { try await announce(h.gateway.id, "G1") }
            try await expectRaised(gateway: false, catalog: false, "the same device announced again, the plan as it was") {
                try await announce(h.gateway.id, "G1")
            }
            try await h.register("G2")
            last = try await claimed()
            try await expectRaised(gateway: false, catalog: false, "another gateway's device and plan") { try await announce(other.id, "G2") }
            try await expectRaised(gateway: true, catalog: false, "a new plan version") {
                _ = try await h.store.reissuePlan(gatewayID: h.gateway.id) { inputs in
                    (StoredPlan(gatewayID: h.gateway.id, version: 2, contentHash: "x", signedJSON: "{}", issuedAt: Harness.now), ())
                }
            }
            try await expectRaised(gateway: false, catalog: true, "an app release") {
                try await h.store.addAppRelease(AppRelease(app: "meter", version: "1.0.0", runList: ["recipe[meter]"], publishedAt: Harness.now))
            }
            try await expectRaised(gateway: true, catalog: false, "a withdrawal") { try await h.store.setWithdrawn(gatewayID: h.gateway.id, at: Harness.now) }
            try await expectRaised(gateway: true, catalog: false, "its undoing") { try await h.store.setWithdrawn(gatewayID: h.gateway.id, at: nil) }
            let before = try #require(try await h.store.gatewayRecord(id: h.gateway.id))
            try await h.store.revokeGateway(id: h.gateway.id, at: Harness.now)
            #expect(try await h.store.gatewayRecord(id: h.gateway.id) == nil)
            let revoked = try #require(try await h.store.claimNonceReadingGeneration(gatewayID: h.gateway.id, nonce: "n-revoked",
                                                                                     expiresAt: Harness.now.addingTimeInterval(600), now: Harness.now))
            #expect(revoked.gateway > before.generation, "a revocation: a copy of the row made before it is read again")
            #expect(try await h.store.generation(gatewayID: h.gateway.id) == revoked)
            #expect(try await h.store.generation(gatewayID: "gw-0000000000000000") == nil)
        }
    }

    /// Session polls read generations together (``Grouped``): each still gets its own gateway's, read after it asked.
    @Test(arguments: Backend.allCases) func generationsReadTogetherAnswerEachGatewayItsOwn(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            let others = (0..<3).map { _ in GatewayIdentity(key: Curve25519.Signing.PrivateKey()) }
            for other in others {
                try await h.store.enrollGateway(EnrolledGateway(id: other.id, publicKey: other.publicKey, enrolledAt: Harness.now))
            }
            try await h.store.setWithdrawn(gatewayID: others[1].id, at: Harness.now)
            let ids = [h.gateway.id, "gw-0000000000000000"] + others.map(\.id)
            var expected: [String: PlanGeneration?] = [:]
            for id in ids where id != "gw-0000000000000000" {
                expected[id] = try await h.store.claimNonceReadingGeneration(gatewayID: id, nonce: "n-\(id)",
                                                                             expiresAt: Harness.now.addingTimeInterval(600), now: Harness.now)
            }
            let answers = try await withThrowingTaskGroup(of: (String, PlanGeneration?).self) { group in
                for i in 0..<200 {
                    let id = ids[i % ids.count]
                    group.addTask { (id, try await h.store.generation(gatewayID: id)) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.count == 200)
            for (id, generation) in answers { #expect(generation == expected[id] ?? nil, "\(id)") }
            #expect(Set(answers.compactMap { $0.1?.gateway }).count > 1, "the withdrawn gateway's generation differs")
        }
    }

    /// On SQLite a poll's generation comes from memory only while the database's `data_version` says nothing
    /// was committed since it was read: a write by another connection (another process, the CLI) is seen by
    /// the very next read, as is this store's own.
    @Test func sqliteGenerationsAreRememberedOnlyUntilAnyoneCommits() async throws {
        try await StoreHarness.with(.sqlite) { h in
            let store = try #require(h.store as? SQLiteVendorStore)
            let cli = try SQLiteVendorStore(path: h.configuration.database, create: false)
            let first = try #require(try await store.generation(gatewayID: h.gateway.id))
            #expect(store.generationCache.cached(h.gateway.id) == first, "remembered while nothing is committed")
            #expect(try await store.generation(gatewayID: h.gateway.id) == first)

            try await cli.registerDevice(RegisteredDevice(serial: "G1", vendorID: "0403", productID: "6001", model: "thermo-v1",
                                                          registeredAt: Harness.now))
            let registered = try #require(try await store.generation(gatewayID: h.gateway.id))
            #expect(registered.catalog > first.catalog, "another connection's commit is seen by the next read")
            try await cli.revokeGateway(id: h.gateway.id, at: Harness.now)
            let revoked = try #require(try await store.generation(gatewayID: h.gateway.id))
            #expect(revoked.gateway > registered.gateway)
            try await store.addAppRelease(AppRelease(app: "meter", version: "1.0.0", runList: ["recipe[meter]"], publishedAt: Harness.now))
            #expect(try await store.generation(gatewayID: h.gateway.id)?.catalog ?? 0 > revoked.catalog, "and the store's own")
        }
    }

    @Test(arguments: Backend.allCases) func aNonceIsClaimedOnceUntilItExpires(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            let t = Harness.now, until = Harness.now.addingTimeInterval(600)
            let other = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await h.store.enrollGateway(EnrolledGateway(id: other.id, publicKey: other.publicKey, enrolledAt: t))
            #expect(try await h.store.claimNonce(gatewayID: h.gateway.id, nonce: "n-0000000000000001", expiresAt: until, now: t))
            #expect(try await !h.store.claimNonce(gatewayID: h.gateway.id, nonce: "n-0000000000000001", expiresAt: until, now: t))
            #expect(try await !h.store.claimNonce(gatewayID: h.gateway.id, nonce: "n-0000000000000001", expiresAt: until,
                                                  now: until.addingTimeInterval(-1)))
            // Nonces are per gateway.
            #expect(try await h.store.claimNonce(gatewayID: other.id, nonce: "n-0000000000000001", expiresAt: until, now: t))
            // Expired rows (of every gateway) are pruned by the next claim; the nonce is free again.
            #expect(try await h.store.claimNonce(gatewayID: h.gateway.id, nonce: "n-0000000000000002", expiresAt: until.addingTimeInterval(600),
                                                 now: until))
            #expect(try await h.nonces() == ["n-0000000000000002"])
            #expect(try await h.store.claimNonce(gatewayID: h.gateway.id, nonce: "n-0000000000000001", expiresAt: until.addingTimeInterval(600),
                                                 now: until))
        }
    }

    @Test(arguments: Backend.allCases) func concurrentClaimsOfOneNonceGrantItOnce(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            let until = Harness.now.addingTimeInterval(600)
            let replayed = "n-0000000000000000"
            let granted = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                for i in 0..<90 {
                    let nonce = i % 3 == 0 ? replayed : String(format: "n-%016d", i)
                    group.addTask { (nonce, try await h.store.claimNonce(gatewayID: h.gateway.id, nonce: nonce, expiresAt: until, now: Harness.now)) }
                }
                var granted: [String: Int] = [:]
                for try await (nonce, fresh) in group { granted[nonce, default: 0] += fresh ? 1 : 0 }
                return granted
            }
            #expect(granted.count == 61)
            #expect(granted.values.allSatisfy { $0 == 1 }, "each nonce granted exactly once: \(granted.filter { $0.value != 1 })")
        }
    }

    /// One batch as the store commits it: a nonce twice in the batch is fresh for its first claim only, a
    /// nonce claimed before is a replay, a nonce whose row expired is free again.
    @Test(arguments: Backend.allCases) func aBatchOfClaimsGrantsEachFreshNonceOnce(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            let t = Harness.now, until = Harness.now.addingTimeInterval(600)
            let nonces: NonceClaims<PlanGeneration?> = switch h.store {
            case let sqlite as SQLiteVendorStore: sqlite.nonces
            case let postgres as PostgresVendorStore: postgres.nonces
            default: throw StoreError(.notFound, "no nonce batches in \(type(of: h.store))")
            }
            #expect(try await h.store.claimNonce(gatewayID: h.gateway.id, nonce: "n-used", expiresAt: until, now: t))
            #expect(try await h.store.claimNonce(gatewayID: h.gateway.id, nonce: "n-expired", expiresAt: t.addingTimeInterval(1), now: t))
            let later = t.addingTimeInterval(1)
            func claim(_ nonce: String) -> NonceClaim {
                NonceClaim(gatewayID: h.gateway.id, nonce: nonce, expiresAt: until, now: later)
            }
            let fresh = try await nonces.commitBatch([claim("n-a"), claim("n-used"), claim("n-a"), claim("n-expired"), claim("n-b"), claim("n-b")])
            #expect(fresh.map { $0 != nil } == [true, false, false, true, true, false])
            #expect(try await h.nonces() == ["n-a", "n-b", "n-expired", "n-used"])
            #expect(try await nonces.commitBatch([claim("n-a"), claim("n-c")]).map { $0 != nil } == [false, true])
        }
    }

    @Test func aDatabaseFromBeforeNoncesGetsTheirTable() async throws {
        try await withTemporaryFolder { folder in
            let path = folder.appendingPathComponent("old.sqlite").path
            // The schema as shipped before request nonces.
            try SQLiteVendorStore.migrator.migrate(try DatabaseQueue(path: path), upTo: "v2-chef-registrations")
            let store = try SQLiteVendorStore(path: path, create: false)
            let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await store.enrollGateway(EnrolledGateway(id: gateway.id, publicKey: gateway.publicKey, enrolledAt: Harness.now))
            #expect(try await store.claimNonce(gatewayID: gateway.id, nonce: "n-0000000000000001", expiresAt: .distantFuture, now: Harness.now))
            let applied = try await store.pool.read { db in try SQLiteVendorStore.migrator.appliedMigrations(db) }
            #expect(applied.contains("v3-request-nonces"))
        }
    }

    @Test func openingAMissingDatabaseWithoutCreateFails() async throws {
        try await withTemporaryFolder { folder in
            let path = folder.appendingPathComponent("missing.sqlite").path
            let error = #expect(throws: StoreError.self) { try SQLiteVendorStore(path: path, create: false) }
            #expect(error?.code == .missingDatabase)
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }

    @Test func signingKeyIsCreatedPrivateAndReused() async throws {
        try await withTemporaryFolder { folder in
            let path = folder.appendingPathComponent("keys/acme.key").path
            let (first, created) = try SigningKeyFile.loadOrCreate(path: path)
            #expect(created)
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)
            #expect(mode.intValue & 0o777 == 0o600)
            #expect(!SigningKeyFile.isReadableByOthers(path: path))
            let (second, createdAgain) = try SigningKeyFile.loadOrCreate(path: path)
            #expect(!createdAgain)
            #expect(Keys.encode(second.publicKey) == Keys.encode(first.publicKey))
            #expect(Keys.encode(try SigningKeyFile.load(path: path).publicKey) == Keys.encode(first.publicKey))
        }
    }

    @Test func garbageKeyFileIsRefused() async throws {
        try await withTemporaryFolder { folder in
            let path = folder.appendingPathComponent("bad.key").path
            try "not a key".write(toFile: path, atomically: true, encoding: .utf8)
            let error = #expect(throws: SigningKeyError.self) { try SigningKeyFile.load(path: path) }
            #expect(error?.code == .invalid)
        }
    }
}
