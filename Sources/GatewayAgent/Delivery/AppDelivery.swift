import Foundation
import InSpec
import Logging
import LXD

/// The outcome of delivering (or updating) a vendor's apps, as reported to the owner and the vendor.
public struct DeliveryReport: Sendable, Codable {
    public enum Result: String, Sendable, Codable { case applied, rolledBack = "rolled-back", failed }
    public var result: Result
    public var provisioner: String
    public var converge: ConvergeOutcome?
    /// Verdict per InSpec profile.
    public var validation: [String: Verdict]
    /// IDs of the controls that failed validation (what made it roll back).
    public var failingControls: [String]
    /// Every control's outcome, `profile/control-id` → `passed`, `failed` or `skipped`.
    public var controls: [String: String]?
    /// The snapshot taken before converging, and the one restored if any.
    public var snapshot: String?
    public var restoredSnapshot: String?
    public var message: String
    /// The owner's hardening converge that ran before the vendor's (nil when the owner turned it off).
    public var hardening: ConvergeOutcome? = nil
    /// Where the time went, in order: `bundle` (fetching and checking the vendor's signed bootstrap
    /// bundle), `snapshot`, `hardening`, `bootstrap` (the vendor's tool's files pushed), `converge`,
    /// `validation`, then `commit` or `restore`.
    public var phases: [DeliveryPhase]? = nil
    /// When the delivery started (the bundle was asked for), so a caller can tell how long the plan
    /// took to arrive.
    public var startedAt: Date? = nil
}

/// One phase of a delivery and how long it took.
public struct DeliveryPhase: Sendable, Codable, Equatable {
    public var name: String
    public var seconds: Double

    public init(name: String, seconds: Double) {
        self.name = name
        self.seconds = seconds
    }
}

/// Times the phases of one delivery on a monotonic clock.
struct PhaseTimer {
    private(set) var phases: [DeliveryPhase] = []
    let clock = ContinuousClock()

    mutating func time<T>(_ name: String, _ body: () async throws -> T) async rethrows -> T {
        let start = clock.now
        defer { record(name, since: start) }
        return try await body()
    }

    private mutating func record(_ name: String, since start: ContinuousClock.Instant) {
        let d = clock.now - start
        phases.append(DeliveryPhase(name: name, seconds: d / .seconds(1)))
    }
}

/// Called as a delivery moves from phase to phase; the worker makes each phase durable before the
/// delivery goes on, so a crash at any point is repaired from the last phase recorded.
public typealias DeliveryJournal = @Sendable (DeliveryTransaction.Phase) async throws -> Void

/// Transactional app delivery: snapshot, converge, validate, then keep or roll back.
public struct AppDelivery: Sendable {
    let lxd: LXDClient
    let logger: Logger
    /// Snapshots of the gateway's own kept per container (older ones are deleted), counting the one a
    /// delivery takes: each can pin up to the container's whole disk cap on the pool (btrfs caps a snapshot
    /// apart from its container), so a vendor pins at most `keepSnapshots + 1` times its `diskMiB`.
    public var keepSnapshots = 1
    /// `production` validates only when the converge changed something.
    public var environment = "production"
    public static let snapshotPrefix = "iotgw-"

    public init(lxd: LXDClient, logger: Logger) {
        self.lxd = lxd
        self.logger = logger
    }

    /// The name of the snapshot a delivery started at `now` takes.
    public static func snapshotName(at now: Date) -> String { snapshotPrefix + String(Int(now.timeIntervalSince1970 * 1000)) }

    /// One transaction. `lock` serializes the container changes (snapshot, restore) with the vendor's
    /// other container work; `journal` is told each phase before it starts. `hardening`, the owner's,
    /// converges before the vendor's own tool, inside the same snapshot: if it fails, nothing of the
    /// vendor's runs and the container goes back.
    public func deliver(_ container: String, provisioner: some Provisioner, hardening: HardeningRun? = nil, validator: InSpecValidator,
                        profiles: [String], snapshot: String? = nil, lock: AsyncMutex = AsyncMutex(), journal: DeliveryJournal = { _ in },
                        now: Date = Date()) async throws -> DeliveryReport {
        let snapshot = snapshot ?? Self.snapshotName(at: now)
        var timer = PhaseTimer()
        try await journal(.snapshotting)
        try await timer.time("snapshot") {
            try await lock.withLock {
                // Room for the new one first: a delivery never holds more than keepSnapshots of them.
                try await prune(container, keeping: snapshot, room: 1)
                try await lxd.createSnapshot(container, name: snapshot)
            }
        }
        try await journal(.converging)
        var report = DeliveryReport(result: .applied, provisioner: provisioner.name, converge: nil, validation: [:], failingControls: [],
                                    controls: nil, snapshot: snapshot, restoredSnapshot: nil, message: "")
        do {
            var hardenedChanges = 0
            if let hardening {
                let h = try await timer.time("hardening") { try await hardening.apply(container, lxd: lxd, validator: validator) }
                report.hardening = h
                hardenedChanges = h.changedResources
                guard h.succeeded else {
                    report.phases = timer.phases
                    return try await rollBack(container, to: snapshot, report, because: "owner's hardening: \(h.summary)", lock: lock,
                                              journal: journal)
                }
            }
            try await timer.time("bootstrap") { try await provisioner.bootstrap(container, lxd: lxd) }
            let outcome = try await timer.time("converge") { try await provisioner.converge(container, lxd: lxd) }
            report.converge = outcome
            guard outcome.succeeded else {
                report.phases = timer.phases
                return try await rollBack(container, to: snapshot, report, because: outcome.summary, lock: lock, journal: journal)
            }
            if validator.policy.shouldValidate(environment: environment, convergeChangedResources: outcome.changedResources + hardenedChanges) {
                let found = try await timer.time("validation") { try await validator.run(container, profiles: profiles, lxd: lxd) }
                report.validation = found.verdicts
                report.controls = found.controls
            }
            report.failingControls = report.validation.values.flatMap { $0.failingControls.map(\.id) }.sorted()
            if let blocking = report.validation.sorted(by: { $0.key < $1.key }).first(where: { $0.value.blocksGate }) {
                report.phases = timer.phases
                return try await rollBack(container, to: snapshot, report,
                                          because: "validation failed (\(blocking.key)): \(blocking.value.explanation)", lock: lock,
                                          journal: journal)
            }
            report.message = outcome.summary + (report.validation.isEmpty ? "; not validated" : "; validated")
                + (report.hardening.map { $0.summary.contains("already hardened") ? "; hardened (already)" : "; hardened (\($0.changedResources) changed)" } ?? "")
        } catch where error.isLXDOutage {
            // LXD died under the converge or validation: there is no verdict to roll back for, and no LXD to roll
            // back with. The transaction stays at `converging`; recovery restores the snapshot once LXD is back.
            throw error
        } catch {
            report.phases = timer.phases
            return try await rollBack(container, to: snapshot, report, because: error.safeDescription, lock: lock, journal: journal)
        }
        try await journal(.committing)
        try await timer.time("commit") { try await lock.withLock { try await prune(container) } }
        report.phases = timer.phases
        return report
    }

    func rollBack(_ container: String, to snapshot: String, _ report: DeliveryReport, because reason: String, lock: AsyncMutex,
                  journal: DeliveryJournal) async throws -> DeliveryReport {
        logger.warning("rolling back", metadata: ["lxd.instance": "\(container)", "lxd.snapshot": "\(snapshot)", "iotgw.reason": "\(reason)"])
        try await journal(.restoring)
        var timer = PhaseTimer()
        try await timer.time("restore") { try await restore(container, to: snapshot, lock: lock) }
        var r = report
        r.phases = (r.phases ?? []) + timer.phases
        r.result = r.converge == nil && r.validation.isEmpty ? .failed : .rolledBack
        r.restoredSnapshot = snapshot
        r.message = reason
        return r
    }

    /// Stops the container, restores the snapshot and starts it again; prunes the gateway's
    /// snapshots whether or not the restore worked (a failing restore must not pile snapshots up).
    public func restore(_ container: String, to snapshot: String, lock: AsyncMutex) async throws {
        try await lock.withLock {
            do {
                try await bring(container, running: false)
                try await lxd.restoreSnapshot(container, name: snapshot)
                try await bring(container, running: true)
            } catch {
                try? await prune(container, keeping: snapshot)
                throw error
            }
            try await prune(container)
        }
    }

    /// Stops (forcibly) or starts the container, and takes "it already is" for success: a restore retried
    /// after LXD's own stop timed out finds the container stopped by then, and must go on from there
    /// rather than fail at the stop for ever.
    func bring(_ container: String, running: Bool) async throws {
        do {
            try await lxd.setState(container, running ? .start : .stop, timeout: 10, force: !running)
        } catch let e as LXDError where e.code == .badRequest || e.code == .operationFailed {
            guard try await lxd.state(container).status == (running ? "Running" : "Stopped") else { throw e }
            logger.info("container already \(running ? "running" : "stopped")", metadata: ["lxd.instance": "\(container)"])
        }
    }

    /// After a crash, finishes an unfinished delivery from its recorded phase: a snapshot being taken
    /// is dropped (nothing changed yet), a converge or restore under way is rolled back to the
    /// snapshot, a commit is completed.
    public func recover(_ container: String, snapshot: String, phase: DeliveryTransaction.Phase, lock: AsyncMutex) async throws {
        switch phase {
        case .snapshotting:
            try await lock.withLock {
                do { try await lxd.deleteSnapshot(container, name: snapshot) } catch let e as LXDError where e.code == .notFound {}
            }
        case .converging, .restoring:
            try await restore(container, to: snapshot, lock: lock)
        case .committing:
            try await lock.withLock { try await prune(container) }
        }
    }

    /// Keeps the newest `keepSnapshots - room` of the gateway's snapshots (and `keeping`, if given).
    func prune(_ container: String, keeping: String? = nil, room: Int = 0) async throws {
        let mine = try await lxd.snapshots(container).filter { $0.name.hasPrefix(Self.snapshotPrefix) && $0.name != keeping }
        for s in mine.dropLast(max(keepSnapshots - room, 0)) { try await lxd.deleteSnapshot(container, name: s.name) }
    }
}
