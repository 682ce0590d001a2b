import Foundation
import GatewayProtocol
import Testing
@testable import VendorService

@Suite("Store on SQLite and PostgreSQL: releases, registrations, reissue")
struct StoreReleaseTests {
    @Test(arguments: Backend.allCases) func releasesAreKeptInOrderAndTheNewestOfEachAppIsCurrent(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            try await h.store.addAppRelease(AppRelease(app: "thermo-agent", version: "1.1.0", runList: ["recipe[t@1.1.0]"], publishedAt: Harness.now))
            try await h.store.addAppRelease(AppRelease(app: "hygro-agent", version: "2.2.0", runList: ["recipe[h]"], publishedAt: Harness.now))
            let last = try await h.store.addAppRelease(AppRelease(app: "thermo-agent", version: "1.2.0", runList: ["recipe[t@1.2.0]", "recipe[x]"],
                                                                  publishedAt: Harness.now))
            #expect(last.id == 3)
            let all = try await h.store.appReleases()
            #expect(all.map(\.version) == ["1.1.0", "2.2.0", "1.2.0"])
            #expect(all.last?.runList == ["recipe[t@1.2.0]", "recipe[x]"])

            // What a plan is composed from carries only the newest release of each app.
            try await h.register("FT1")
            let releases: [AppRelease] = try await h.store.recordAnnouncement(gatewayID: h.gateway.id, serial: "FT1", at: Harness.now) { inputs in
                (StoredPlan(gatewayID: h.gateway.id, version: 1, contentHash: "", signedJSON: "{}", issuedAt: Harness.now), inputs.releases)
            }
            #expect(releases.map(\.version) == ["2.2.0", "1.2.0"])
        }
    }

    @Test(arguments: Backend.allCases) func reissueNeedsAPlan(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            let none: Int? = try await h.store.reissuePlan(gatewayID: h.gateway.id) { _ in
                Issue.record("issue must not be called without a plan")
                return (StoredPlan(gatewayID: h.gateway.id, version: 1, contentHash: "", signedJSON: "{}", issuedAt: Harness.now), 0)
            }
            #expect(none == nil)
            #expect(try await h.store.plan(gatewayID: h.gateway.id) == nil)

            try await h.register("FT1")
            let _: Int = try await h.store.recordAnnouncement(gatewayID: h.gateway.id, serial: "FT1", at: Harness.now) { _ in
                (StoredPlan(gatewayID: h.gateway.id, version: 1, contentHash: "a", signedJSON: "{}", issuedAt: Harness.now), 0)
            }
            let devices: [String]? = try await h.store.reissuePlan(gatewayID: h.gateway.id) { inputs in
                (StoredPlan(gatewayID: h.gateway.id, version: (inputs.previous?.version ?? 0) + 1, contentHash: "b", signedJSON: "{}",
                            issuedAt: Harness.now), inputs.devices.map(\.serial))
            }
            #expect(devices == ["FT1"])
            #expect(try await h.store.plan(gatewayID: h.gateway.id)?.version == 2)
        }
    }

    @Test(arguments: Backend.allCases) func chefRegistrationIsReplacedAndNeverPrintsItsKey(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            #expect(try await h.store.chefRegistration(gatewayID: h.gateway.id) == nil)
            let first = ChefRegistration(gatewayID: h.gateway.id, nodeName: "\(h.gateway.id)-acme", clientKeyPEM: "SECRET-1", registeredAt: Harness.now)
            try await h.store.saveChefRegistration(first)
            #expect(try await h.store.chefRegistration(gatewayID: h.gateway.id) == first)
            var second = first
            second.clientKeyPEM = "SECRET-2"
            try await h.store.saveChefRegistration(second)
            #expect(try await h.store.chefRegistrations() == [second])
            #expect(!"\(second)".contains("SECRET"))

            let unknown = ChefRegistration(gatewayID: "gw-0000000000000000", nodeName: "n", clientKeyPEM: "k", registeredAt: Harness.now)
            let error = await #expect(throws: StoreError.self) { try await h.store.saveChefRegistration(unknown) }
            #expect(error?.code == .notFound)
        }
    }

    @Test func aNewDatabaseIsPrivate() async throws {
        try await withTemporaryFolder { folder in
            let path = folder.appendingPathComponent("db/vendor.sqlite").path
            _ = try SQLiteVendorStore(path: path, create: true)
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)
            #expect(mode.intValue & 0o777 == 0o600)
            // Opening it again works and keeps the mode.
            _ = try SQLiteVendorStore(path: path, create: false)
            #expect(!SigningKeyFile.isReadableByOthers(path: path))
        }
    }
}
