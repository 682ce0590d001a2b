import Foundation
import GRDB

/// A device the gateway has seen, keyed by its udev syspath.
public struct DeviceRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "devices"

    public enum State: String, Codable, Sendable {
        /// No trusted vendor claims it: recorded and ignored.
        case unknown
        /// Asking the vendor's daemon (retried with backoff while unreachable).
        case announcing
        /// Waiting for the owner's decision.
        case awaitingApproval = "awaiting-approval"
        /// Inside the vendor's container.
        case attached
        /// Approved but not yet in the container (LXD unreachable, container being created...).
        case attaching
        /// Unplugged; the container stays.
        case detached
        /// The owner or the policy said no.
        case denied
        /// The vendor or the plan was refused (not genuine, bad signature, over caps...).
        case rejected
    }

    public var syspath: String
    public var subsystem: String
    public var devnode: String?
    public var vendorID: String?
    public var productID: String?
    public var serial: String?
    public var manufacturer: String?
    public var product: String?
    public var busPath: String?
    /// The trusted vendor that claims it, if any.
    public var vendor: String?
    public var present: Bool
    public var state: State
    public var lastError: String?
    public var attempts: Int
    public var nextAttemptAt: Date?
    public var updatedAt: Date
}

/// When a stored retry time is due. The store keeps times to the millisecond, and Foundation's
/// `DateFormatter` rounds: a time written as "now" with a 0.9 ms fraction reads back 0.1 ms later than
/// it was. Compared strictly, that "now" is not yet due in a pass started within that fraction, and the
/// work waits a whole tick. A stored time is therefore due when it is at most one millisecond ahead.
public enum StoredTime {
    public static let resolution: TimeInterval = 0.001

    /// `nil` (no wait) is always due.
    public static func isDue(_ time: Date?, at now: Date) -> Bool {
        guard let time else { return true }
        return time.timeIntervalSince(now) <= resolution
    }
}

/// A plan received from a vendor, with the owner's decision on it. A pending one is an approval.
public struct PlanRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "plans"

    public enum Decision: String, Codable, Sendable {
        case pending, approved, denied
        /// A newer plan from the same vendor replaced it before a decision.
        case superseded
    }

    public var id: Int64?
    public var vendor: String
    public var version: Int
    /// The signed plan exactly as received (kept to re-verify and to show the owner).
    public var signedJSON: Data
    public var payloadSHA256: String
    public var decision: Decision
    /// `owner`, `policy:auto`, `policy:deny`, `covered` (nothing new asked).
    public var decidedBy: String?
    public var receivedAt: Date
    public var decidedAt: Date?

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// Per-vendor progress: which plan is approved and which one LXD reflects.
public struct VendorStateRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "vendor_state"

    public var vendor: String
    /// Highest plan version ever accepted (never goes back).
    public var lastVersion: Int
    public var approvedPlanID: Int64?
    /// The approved plan version last applied to LXD completely.
    public var appliedVersion: Int?
    public var container: String?
    public var lastError: String?
    public var updatedAt: Date
    /// The plan version whose apps were last delivered (converged, validated, kept or rolled back).
    public var deliveredVersion: Int?
    /// The last delivery as JSON (`DeliveryReport`).
    public var lastDelivery: String?
    public var lastSyncAt: Date?
    /// Why the vendor's last plan or answer was refused (already escaped), and when.
    public var rejection: String?
    public var rejectedAt: Date?
    public var reconcileAttempts: Int = 0
    public var nextReconcileAt: Date?
    public var deliveryAttempts: Int = 0
    public var nextDeliveryAt: Date?
    /// `redeliver` commands from the vendor not yet answered by a delivery that ended with a verdict.
    public var redeliveryRequests: Int = 0
}

/// A delivery under way: written before the container changes, so that after a crash the daemon
/// restores the snapshot taken before converging and tries again.
public struct DeliveryTransaction: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "deliveries"

    public enum Phase: String, Codable, Sendable {
        /// Taking the snapshot (the container is unchanged).
        case snapshotting
        /// Bootstrapping, converging and validating (the container may be half-changed).
        case converging
        /// Keeping the result: pruning old snapshots.
        case committing
        /// Restoring the snapshot.
        case restoring
    }

    public var vendor: String
    public var planVersion: Int
    public var snapshot: String
    public var phase: Phase
    public var startedAt: Date
    public var updatedAt: Date

    public init(vendor: String, planVersion: Int, snapshot: String, phase: Phase, startedAt: Date, updatedAt: Date) {
        self.vendor = vendor
        self.planVersion = planVersion
        self.snapshot = snapshot
        self.phase = phase
        self.startedAt = startedAt
        self.updatedAt = updatedAt
    }
}

/// One step the provisioner took: written `started` before acting and `done`/`failed` after.
public struct JournalRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "journal"

    public var id: Int64?
    public var at: Date
    public var vendor: String
    public var step: String
    public var status: String
    public var detail: String?

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row per vendor while its container is being rebuilt on a new image (``VendorWorker/rebuild``), and
/// after a failed rebuild until its retry is due. Written before each phase starts, so that after a crash the
/// worker knows whether the candidate can be thrown away (anything before `switching`) or the switch must be
/// finished (the old container may already be stopped or renamed).
public struct RebuildTransaction: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "rebuilds"

    public enum Phase: String, Codable, Sendable {
        /// Fetching the image and creating the candidate beside the old container (the old one is untouched).
        case creating
        /// Delivering and validating the apps in the candidate (the old one is untouched).
        case delivering
        /// Stopping the old container, renaming both, passing the devices to the new one: only ever finished.
        case switching
        /// The rebuild failed before the switch; the candidate is gone, the retry waits for `nextAttemptAt`.
        case failed
    }

    public var vendor: String
    public var planVersion: Int
    /// The image the new container is made from.
    public var fingerprint: String
    public var phase: Phase
    public var attempts: Int
    public var nextAttemptAt: Date?
    public var lastError: String?
    public var updatedAt: Date

    public init(vendor: String, planVersion: Int, fingerprint: String, phase: Phase, attempts: Int = 0, nextAttemptAt: Date? = nil,
                lastError: String? = nil, updatedAt: Date) {
        self.vendor = vendor
        self.planVersion = planVersion
        self.fingerprint = fingerprint
        self.phase = phase
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastError = lastError
        self.updatedAt = updatedAt
    }
}
