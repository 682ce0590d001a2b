import Foundation
import GatewayProtocol
import Testing
@testable import VendorService

@Suite("Fleet channel in the vendor store (SQLite and PostgreSQL)")
struct FleetStoreTests {
    func status(_ h: StoreHarness, online: Bool = true, session: Int64, sequence: Int64, delivered: Int? = nil) -> GatewayStatus {
        GatewayStatus(gatewayID: h.gateway.id, vendor: "acme", online: online, session: session, sequence: sequence, publishedAt: Harness.now,
                      agentVersion: "0.8.0", uptimeSeconds: 1, container: .init(name: "iotgw-acme", state: "Running"), devices: ["FT1"],
                      plan: .init(delivered: delivered), lastDelivery: nil, rejection: nil)
    }

    @Test(arguments: Backend.allCases) func theNewestStatusIsKeptAndAWillMarksOnlyItsOwnSessionOffline(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            #expect(try await h.store.saveStatus(status(h, session: 10, sequence: 2, delivered: 2), receivedAt: Harness.now))
            #expect(try await !h.store.saveStatus(status(h, session: 10, sequence: 1, delivered: 1), receivedAt: Harness.now), "late and older")
            #expect(try await h.store.gateways().first?.status?.plan.delivered == 2)
            #expect(try await h.store.saveStatus(status(h, online: false, session: 10, sequence: 0), receivedAt: Harness.now))
            let offline = try #require(try await h.store.gateways().first)
            #expect(offline.online == false && offline.status?.plan.delivered == 2, "the will keeps the last status")
            #expect(try await h.store.saveStatus(status(h, session: 11, sequence: 1, delivered: 3), receivedAt: Harness.now))
            #expect(try await !h.store.saveStatus(status(h, online: false, session: 10, sequence: 0), receivedAt: Harness.now),
                    "a will of an older session does not end the new one")
            #expect(try await h.store.gateways().first?.online == true)
        }
    }

    /// What the fleet channel saves in one transaction: each status as if alone, in order per gateway, an
    /// unknown gateway's named (nil) without failing the others.
    @Test(arguments: Backend.allCases) func aBatchOfStatusesIsSavedAsIfOneByOne(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            var stranger = status(h, session: 10, sequence: 1)
            stranger.gatewayID = "gw-00000000000000ff"
            let batch = [status(h, session: 10, sequence: 1, delivered: 1), stranger, status(h, session: 10, sequence: 3, delivered: 3),
                         status(h, session: 10, sequence: 2, delivered: 2), status(h, online: false, session: 10, sequence: 0)]
            let kept = try await h.store.saveStatuses(batch.map { ReceivedStatus($0, receivedAt: Harness.now) })
            #expect(kept == [true, nil, true, false, true])
            let stored = try #require(try await h.store.gateways().first)
            #expect(stored.online == false && stored.status?.plan.delivered == 3, "the newest kept, then marked offline by the will")
            await #expect(throws: StoreError.self) { try await h.store.saveStatus(stranger, receivedAt: Harness.now) }
        }
    }

    @Test(arguments: Backend.allCases) func aRevokedGatewayIsNoLongerFoundAndListedAsRevoked(_ backend: Backend) async throws {
        try await StoreHarness.with(backend) { h in
            #expect(try await h.store.gateway(id: h.gateway.id) != nil)
            try await h.store.revokeGateway(id: h.gateway.id, at: Harness.now)
            #expect(try await h.store.gateway(id: h.gateway.id) == nil)
            #expect(try await h.store.gateways().first?.revokedAt != nil)
            await #expect(throws: StoreError.self) { try await h.store.revokeGateway(id: "gw-0000000000000000", at: Harness.now) }
        }
    }
}
