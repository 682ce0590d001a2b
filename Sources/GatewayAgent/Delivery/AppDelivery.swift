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
}

/// Transactional app delivery: snapshot, converge, validate, then keep or roll back.
public struct AppDelivery: Sendable {
    let lxd: LXDClient
    let logger: Logger
    /// Snapshots of the gateway's own kept per container (older ones are deleted).
    public var keepSnapshots = 3
    /// `production` validates only when the converge changed something.
    public var environment = "production"
    public static let snapshotPrefix = "iotgw-"

    public init(lxd: LXDClient, logger: Logger) {
        self.lxd = lxd
        self.logger = logger
    }

    public func deliver(_ container: String, provisioner: some Provisioner, validator: InSpecValidator,
                        profiles: [String], now: Date = Date()) async throws -> DeliveryReport {
        let snapshot = Self.snapshotPrefix + String(Int(now.timeIntervalSince1970 * 1000))
        try await lxd.createSnapshot(container, name: snapshot)
        var report = DeliveryReport(result: .applied, provisioner: provisioner.name, converge: nil, validation: [:], failingControls: [],
                                    controls: nil, snapshot: snapshot, restoredSnapshot: nil, message: "")
        do {
            try await provisioner.bootstrap(container, lxd: lxd)
            let outcome = try await provisioner.converge(container, lxd: lxd)
            report.converge = outcome
            guard outcome.succeeded else {
                return try await rollBack(container, to: snapshot, report, because: outcome.summary)
            }
            if validator.policy.shouldValidate(environment: environment, convergeChangedResources: outcome.changedResources) {
                let found = try await validator.run(container, profiles: profiles, lxd: lxd)
                report.validation = found.verdicts
                report.controls = found.controls
            }
            report.failingControls = report.validation.values.flatMap { $0.failingControls.map(\.id) }.sorted()
            if let blocking = report.validation.sorted(by: { $0.key < $1.key }).first(where: { $0.value.blocksGate }) {
                return try await rollBack(container, to: snapshot, report,
                                          because: "validation failed (\(blocking.key)): \(blocking.value.explanation)")
            }
            report.message = outcome.summary + (report.validation.isEmpty ? "; not validated" : "; validated")
            try await prune(container)
            return report
        } catch {
            return try await rollBack(container, to: snapshot, report, because: "\(error)")
        }
    }

    func rollBack(_ container: String, to snapshot: String, _ report: DeliveryReport, because reason: String) async throws -> DeliveryReport {
        logger.warning("rolling back", metadata: ["lxd.instance": "\(container)", "lxd.snapshot": "\(snapshot)", "iotgw.reason": "\(reason)"])
        var r = report
        try await lxd.stop(container, timeout: 10, force: true)
        try await lxd.restoreSnapshot(container, name: snapshot)
        try await lxd.start(container)
        r.result = r.converge == nil && r.validation.isEmpty ? .failed : .rolledBack
        r.restoredSnapshot = snapshot
        r.message = reason
        try await prune(container)
        return r
    }

    /// Keeps the newest `keepSnapshots` of the gateway's snapshots.
    func prune(_ container: String) async throws {
        let mine = try await lxd.snapshots(container).filter { $0.name.hasPrefix(Self.snapshotPrefix) }
        for s in mine.dropLast(keepSnapshots) { try await lxd.deleteSnapshot(container, name: s.name) }
    }
}
