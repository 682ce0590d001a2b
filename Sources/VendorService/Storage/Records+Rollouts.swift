import Foundation

// Groups and staged rollouts: one Codable struct per table, as in Records.swift.

/// `gateway_groups` with its members (`group_members`, primary key (group, gatewayID)): gateways a vendor
/// targets together ("beta", "canary"). A gateway may belong to several groups.
public struct GatewayGroup: Sendable, Codable, Equatable {
    /// Primary key; `Fields.name`.
    public var name: String
    public var createdAt: Date
    /// Gateway ids, sorted.
    public var members: [String]

    public init(name: String, createdAt: Date, members: [String] = []) {
        self.name = name
        self.createdAt = createdAt
        self.members = members
    }
}

/// `rollouts`: a release of one app delivered stage by stage (see ``RolloutService``).
///
/// The release it carries is *staged*: plans carry it only for the gateways the rollout pinned it to
/// (`gateway_pins`); every other gateway keeps the app's current release. Completing the rollout
/// promotes the release (it becomes the app's current release everywhere) unless it was limited to a
/// group; halting or aborting it unpins the gateways it reached, whose next plan carries the previous
/// release again.
public struct Rollout: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable, CaseIterable {
        /// Stages are being delivered and watched.
        case running
        /// Stopped by the operator, or by a failing stage with `onFailure: pause`: nothing moves until
        /// `resume` or `abort`. The gateways reached keep the release.
        case paused
        /// A stage failed: the gateways reached are being put back on the previous release.
        case halting
        /// A stage failed; every gateway reached is back on the previous release.
        case halted
        /// The operator aborted: the gateways reached are being put back on the previous release.
        case aborting
        /// Aborted; every gateway reached is back on the previous release.
        case aborted
        /// Every stage was healthy; the release is the app's current one (or, for a group, pinned to it).
        case completed

        /// Rollouts in these states still act on gateways (and block another rollout of the same app).
        public var isActive: Bool { ![.halted, .aborted, .completed].contains(self) }
        /// States that put gateways back on the previous release, and where they end.
        public var revertsTo: State? {
            switch self {
            case .halting: .halted
            case .aborting: .aborted
            default: nil
            }
        }
    }

    public enum OnFailure: String, Sendable, Codable, CaseIterable {
        /// Put the gateways reached back on the previous release and stop (the default).
        case revert
        /// Stop where it is and wait for the operator.
        case pause
    }

    /// Assigned by the store.
    public var id: Int64?
    public var app: String
    public var version: String
    public var runList: [String]
    /// The staged `app_releases` row.
    public var releaseID: Int64
    /// Only this group's gateways are targeted (nil: every gateway whose plan carries the app).
    public var groupName: String?
    /// The stage specifications as given (`canary`, `@beta`, `25%`, `100%`, `10`).
    public var stages: [String]
    /// A stage fails when more than this fraction of its reports are failures (`failed`, `rolled-back`).
    public var maxFailureRate: Double
    /// Reports a stage needs before its failure rate is judged (at most the stage's size).
    public var minReports: Int
    /// How long a stage may wait for its reports before the rollout pauses.
    public var stageTimeoutSeconds: Int
    public var onFailure: OnFailure
    public var state: State
    /// Index into `stages` of the stage being delivered (the last one once completed).
    public var stage: Int
    public var stageStartedAt: Date
    public var createdAt: Date
    public var updatedAt: Date
    /// Why the rollout is in its state (a failing stage's figures, say); empty when there is nothing to say.
    public var message: String

    public init(id: Int64? = nil, app: String, version: String, runList: [String], releaseID: Int64, groupName: String?, stages: [String],
                maxFailureRate: Double, minReports: Int, stageTimeoutSeconds: Int, onFailure: OnFailure, state: State = .running,
                stage: Int = 0, createdAt: Date, message: String = "") {
        self.id = id
        self.app = app
        self.version = version
        self.runList = runList
        self.releaseID = releaseID
        self.groupName = groupName
        self.stages = stages
        self.maxFailureRate = maxFailureRate
        self.minReports = minReports
        self.stageTimeoutSeconds = stageTimeoutSeconds
        self.onFailure = onFailure
        self.state = state
        self.stage = stage
        stageStartedAt = createdAt
        self.createdAt = createdAt
        updatedAt = createdAt
        self.message = message
    }
}

/// `rollout_targets`: one gateway of a rollout, the stage it belongs to and what it reported.
/// Primary key (rolloutID, gatewayID).
public struct RolloutTarget: Sendable, Codable, Equatable {
    public var rolloutID: Int64
    public var gatewayID: String
    /// Index into the rollout's stages.
    public var stage: Int
    /// The plan version that first carried the release to this gateway (nil: not reached yet).
    public var planVersion: Int?
    /// The first delivery outcome reported for that version or a later one: `delivered`, `failed` or
    /// `rolled-back` (nil: none yet).
    public var outcome: String?
    public var reportedAt: Date?
    /// Put back on the previous release by a halt or an abort.
    public var reverted: Bool

    public init(rolloutID: Int64, gatewayID: String, stage: Int, planVersion: Int? = nil, outcome: String? = nil,
                reportedAt: Date? = nil, reverted: Bool = false) {
        self.rolloutID = rolloutID
        self.gatewayID = gatewayID
        self.stage = stage
        self.planVersion = planVersion
        self.outcome = outcome
        self.reportedAt = reportedAt
        self.reverted = reverted
    }

    /// Report outcomes that judge a stage, and those of them that count as failures.
    public static let judgedOutcomes: Set<String> = ["delivered", "failed", "rolled-back"]
    public static let failureOutcomes: Set<String> = ["failed", "rolled-back"]

    public var failed: Bool { outcome.map(Self.failureOutcomes.contains) ?? false }
}
