import Foundation
import GatewayProtocol
import LXD
import Logging
import Synchronization
import Testing
@testable import GatewayAgent

/// The disk guard and the pruner against a pool and an image store whose contents the test sets.
@Suite struct DiskAndPruningTests {
    final class Pool: DiskSpace {
        let free = Mutex<Int64>(0)
        let reads = Mutex(0)
        func poolFree(_ pool: String) async throws -> Int64 {
            reads.withLock { $0 += 1 }
            return free.withLock { $0 }
        }
    }

    @Test func aReadingTakenAheadStandsInForTheFirstLookOnlyWhileFresh() async throws {
        let pool = Pool()
        let guardian = DiskGuard(space: pool, pool: "default", reserveBytes: 100 << 20)
        pool.free.withLock { $0 = 400 << 20 }
        let ahead = try await guardian.read()
        #expect(pool.reads.withLock { $0 } == 1)
        try await guardian.ensurePool(300 << 20, for: "creating iotgw-acme", recent: ahead)
        #expect(pool.reads.withLock { $0 } == 1, "fresh: LXD not asked again")

        var stale = ahead
        stale.at = ContinuousClock.now - DiskGuard.readingLifetime - .milliseconds(1)
        try await guardian.ensurePool(300 << 20, for: "creating iotgw-acme", recent: stale)
        #expect(pool.reads.withLock { $0 } == 2, "stale: read again")

        // Short by the reading: the look after pruning is LXD's own, and it decides.
        var short = try await guardian.read()
        short.free = 350 << 20
        pool.free.withLock { $0 = 500 << 20 }
        let before = pool.reads.withLock { $0 }
        try await guardian.ensurePool(300 << 20, for: "creating iotgw-acme", recent: short)
        #expect(pool.reads.withLock { $0 } == before + 1)
        pool.free.withLock { $0 = 200 << 20 }
        await #expect(throws: GatewayError.self) { try await guardian.ensurePool(300 << 20, for: "creating iotgw-acme", recent: short) }
    }

    @Test func aStepGoesAheadOnlyAboveTheReserveAfterPruningOnce() async throws {
        let pool = Pool()
        let prunes = Mutex(0)
        let guardian = DiskGuard(space: pool, pool: "default", reserveBytes: 100 << 20) {
            prunes.withLock { $0 += 1 }
            pool.free.withLock { $0 += 50 << 20 }  // pruning gives back 50 MiB
        }
        pool.free.withLock { $0 = 400 << 20 }
        try await guardian.ensurePool(300 << 20, for: "creating iotgw-acme")
        #expect(prunes.withLock { $0 } == 0, "enough space: nothing pruned")

        pool.free.withLock { $0 = 360 << 20 }
        try await guardian.ensurePool(300 << 20, for: "creating iotgw-acme")
        #expect(prunes.withLock { $0 } == 1, "short by 40 MiB: pruned, then enough")

        pool.free.withLock { $0 = 200 << 20 }
        await #expect { try await guardian.ensurePool(300 << 20, for: "creating iotgw-acme") } throws: { e in
            let text = "\(e)"
            return (e as? GatewayError)?.code == .diskSpace && text.contains("deferred: creating iotgw-acme needs 300 MiB")
                && text.contains("keeps 100 MiB free") && text.contains("storage pool default has 250 MiB free (after pruning)")
        }
    }

    final class Inventory: ImageInventory {
        let images: Mutex<[Image]>
        let instances: [Instance]
        init(images: [Image], instances: [Instance]) {
            self.images = Mutex(images)
            self.instances = instances
        }
        func listImages() async throws -> [Image] { images.withLock { $0 } }
        func deleteImage(fingerprint: String) async throws { images.withLock { $0.removeAll { $0.fingerprint == fingerprint } } }
        func listInstances(userFilter: [String: String]) async throws -> [Instance] { instances }
    }

    static func image(_ fp: String, lastUsed: String? = nil) throws -> Image {
        var json: [String: Any] = ["fingerprint": fp, "filename": "x.tar.gz", "size": 1, "architecture": "x86_64", "aliases": [],
                                   "properties": [:], "public": false, "uploaded_at": "2026-12-01T00:00:00Z", "type": "container"]
        if let lastUsed { json["last_used_at"] = lastUsed }
        return try JSONDecoder().decode(Image.self, from: try JSONSerialization.data(withJSONObject: json))
    }

    @Test func onlyTheGatewaysOwnUnusedImagesGoAfterTheGracePeriodAndOldJournalRows() async throws {
        let store = try GatewayStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UUID().uuidString).sqlite").path)
        let fp = { (c: Character) in String(repeating: c, count: 64) }
        let t0 = Date()
        // a: downloaded, unused, old  -> pruned;  b: downloaded, an instance uses it -> kept;
        // c: downloaded, used recently -> kept;  d: the owner's image (never downloaded by the gateway) -> kept.
        try await store.recordDownloadedImage(fp("a"), vendor: "acme", at: t0.addingTimeInterval(-7200))
        try await store.recordDownloadedImage(fp("b"), vendor: "acme", at: t0.addingTimeInterval(-7200))
        try await store.recordDownloadedImage(fp("c"), vendor: "globex", at: t0.addingTimeInterval(-7200))
        try await store.recordDownloadedImage(fp("e"), vendor: "globex", at: t0.addingTimeInterval(-7200))  // gone from LXD already
        let recent = t0.addingTimeInterval(-60).formatted(.iso8601)
        let inventory = Inventory(images: [try Self.image(fp("a")), try Self.image(fp("b")), try Self.image(fp("c"), lastUsed: recent),
                                           try Self.image(fp("d"))],
                                  instances: [try FakeHost.makeInstance(InstancesPost(name: "iotgw-acme", source: .image(fingerprint: fp("b")),
                                                                                      config: ["volatile.base_image": fp("b")]))])
        try await store.journal(vendor: "acme", step: "create iotgw-acme", status: "done")
        let pruner = Pruner(inventory: inventory, store: store, graceSeconds: 3600, logger: Logger(label: "test"), now: { t0 })
        #expect(try await pruner.prune() == [fp("a")])
        #expect(Set(inventory.images.withLock { $0 }.map(\.fingerprint)) == [fp("b"), fp("c"), fp("d")])
        #expect(Set(try await store.downloadedImages().keys) == [fp("b"), fp("c")])
        #expect(try await store.journal(vendor: "acme").count == 1, "a fresh journal row stays")

        let later = Pruner(inventory: inventory, store: store, graceSeconds: 3600, logger: Logger(label: "test"),
                           now: { t0.addingTimeInterval(Pruner.journalDays * 86_400 + 7200) })
        #expect(try await later.prune() == [fp("c")], "c's grace ran out; b is still in use; d is the owner's")
        #expect(try await store.journal(vendor: "acme").isEmpty, "journal rows older than \(Pruner.journalDays) days go")
    }
}
