import Foundation
import GatewayProtocol
import Logging
import LXD

/// The images LXD has and the instances using them. `LXDClient` is the real one.
public protocol ImageInventory: Sendable {
    func listImages() async throws -> [Image]
    func deleteImage(fingerprint: String) async throws
    /// Every instance, the owner's too: an image any instance was made from is never pruned.
    func listInstances(userFilter: [String: String]) async throws -> [Instance]
}

extension LXDClient: ImageInventory {}

/// Gives back what the gateway no longer needs: images it downloaded itself (never the owner's) that no
/// instance was made from and no vendor's current plan names, once `images.graceSeconds` passed since they
/// were imported or last used; and journal rows older than `journalDays`. Snapshots beyond
/// `delivery.keepSnapshots` are pruned by each delivery. Runs with the orphan check, and whenever
/// the disk guard is short of space.
public struct Pruner: Sendable {
    let inventory: any ImageInventory
    let store: GatewayStore
    let graceSeconds: Double
    let logger: Logger
    let now: @Sendable () -> Date
    /// Journal rows are kept this long.
    public static let journalDays = 30.0

    public init(inventory: any ImageInventory, store: GatewayStore, graceSeconds: Double, logger: Logger, now: @escaping @Sendable () -> Date) {
        self.inventory = inventory
        self.store = store
        self.graceSeconds = graceSeconds
        self.logger = logger
        self.now = now
    }

    /// One pass. - Returns: the images deleted.
    @discardableResult
    public func prune() async throws -> [String] {
        try await store.pruneJournal(before: now().addingTimeInterval(-Self.journalDays * 86_400))
        let downloaded = try await store.downloadedImages()
        guard !downloaded.isEmpty else { return [] }
        let images = Dictionary(try await inventory.listImages().map { ($0.fingerprint, $0) }, uniquingKeysWith: { a, _ in a })
        let used = Set(try await inventory.listInstances(userFilter: [:]).compactMap { $0.config["volatile.base_image"] })
        let named = try await namedByPlans()
        var deleted: [String] = []
        for (fp, importedAt) in downloaded.sorted(by: { $0.key < $1.key }) {
            guard let image = images[fp] else {
                try await store.forgetDownloadedImage(fp)  // deleted by someone else
                continue
            }
            let lastUsed = image.lastUsedAt.flatMap { try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse($0) }
            let since = max(importedAt, lastUsed ?? importedAt)
            guard !used.contains(fp), !named.contains(fp), now().timeIntervalSince(since) >= graceSeconds else { continue }
            do {
                try await inventory.deleteImage(fingerprint: fp)
                try await store.forgetDownloadedImage(fp)
                deleted.append(fp)
                logger.notice("unused downloaded image pruned", metadata: ["iotgw.image": "\(fp.prefix(12))"])
            } catch {
                logger.warning("image not pruned", metadata: ["iotgw.image": "\(fp.prefix(12))", "iotgw.error": "\(error.safeDescription)"])
            }
        }
        return deleted
    }

    /// Fingerprints of every vendor's approved plan and of plans waiting for the owner.
    func namedByPlans() async throws -> Set<String> {
        let pending = try await store.plans(decision: .pending).compactMap { try? GatewayAgent.decodePlan($0) }
        return Set((Array(try await GatewayAgent.approvedPlans(store).values) + pending).map { $0.container.image.fingerprint.lowercased() })
    }
}
