import Crypto
import Foundation
import GatewayProtocol
import Testing
@testable import VendorService

@Suite("SQLite store and key file")
struct StoreTests {
    @Test func registeringTwiceIsIdempotentButConflictsAreRefused() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.register("FT1")
            let error = await #expect(throws: StoreError.self) { try await h.register("FT1", model: "hygro-v2") }
            #expect(error?.code == .conflict)
            #expect(try await h.store.devices().map(\.serial) == ["FT1"])
        }
    }

    @Test func enrollingAnotherKeyUnderTheSameIDIsRefused() async throws {
        try await Harness.with { h in
            let error = await #expect(throws: StoreError.self) {
                try await h.store.enrollGateway(EnrolledGateway(id: h.gateway.id, publicKey: Keys.encode(Curve25519.Signing.PrivateKey().publicKey),
                                                                enrolledAt: Harness.now))
            }
            #expect(error?.code == .conflict)
            try await h.store.enrollGateway(EnrolledGateway(id: h.gateway.id, publicKey: h.gateway.publicKey, enrolledAt: Harness.now))
        }
    }

    @Test func failedIssueRecordsNothing() async throws {
        struct Refused: Error {}
        try await Harness.with { h in
            try await h.register("FT1")
            await #expect(throws: Refused.self) {
                let _: Int = try await h.store.recordAnnouncement(gatewayID: h.gateway.id, serial: "FT1", at: Harness.now) { _ in
                    throw Refused()
                }
            }
            #expect(try await h.store.gateways().first?.devices == [])
        }
    }

    @Test func announcedDevicesComeInTheOrderFirstSeen() async throws {
        try await Harness.with { h in
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
