import Foundation
import GatewayProtocol
import Logging

/// Staged rollouts of an app release: to a canary group first, then to growing shares of the fleet,
/// watching the gateways' delivery reports and stopping by itself when a stage fails.
///
/// State lives in the store only (``Rollout``, ``RolloutTarget``, the pins of staged releases), and
/// ``drive(logger:)`` is a reconcile pass: it reaches the targets of the current stage that are not reached
/// yet, judges the stage, and moves the rollout on, or puts the gateways reached back on the previous
/// release. Every step is idempotent and every state change a compare-and-set, so a daemon restart resumes
/// where it stopped and any number of replicas may drive the same rollouts.
public struct RolloutService: Sendable {
    let provisioning: ProvisioningService
    let store: any VendorStore
    let now: @Sendable () -> Date

    public init(provisioning: ProvisioningService, now: (@Sendable () -> Date)? = nil) {
        self.provisioning = provisioning
        store = provisioning.store
        self.now = now ?? provisioning.now
    }

    /// What `rollout start` asks for.
    public struct Request: Sendable {
        public var app: String
        public var version: String
        /// nil: the app's current run list.
        public var runList: [String]?
        public var stages: [String]
        public var maxFailureRate: Double
        public var minReports: Int
        public var stageTimeoutSeconds: Int
        public var onFailure: Rollout.OnFailure
        public var group: String?

        public init(app: String, version: String, runList: [String]?, stages: [String], maxFailureRate: Double, minReports: Int,
                    stageTimeoutSeconds: Int = 3600, onFailure: Rollout.OnFailure = .revert, group: String? = nil) {
            self.app = app
            self.version = version
            self.runList = runList
            self.stages = stages
            self.maxFailureRate = maxFailureRate
            self.minReports = minReports
            self.stageTimeoutSeconds = stageTimeoutSeconds
            self.onFailure = onFailure
            self.group = group
        }
    }

    /// A rollout with its stages' figures, as `rollout status` shows it.
    public struct Status: Sendable, Encodable, Equatable {
        public struct Stage: Sendable, Encodable, Equatable {
            public var name: String
            public var health: RolloutStages.Health
        }

        public var rollout: Rollout
        public var stages: [Stage]
    }

    // MARK: Starting

    /// Starts a rollout: checks the request, picks the targets (every gateway whose plan carries the app,
    /// or the members of `group` among them), assigns them to stages, records the staged release, the
    /// rollout and its targets in one transaction, then drives it once (the first stage's gateways get
    /// their new plans now).
    /// - Throws: ``ConfigurationError`` for a bad request (nothing recorded); ``StoreError/Code/conflict``
    ///   when a rollout of the app is active.
    public func start(_ request: Request, logger: Logger) async throws -> Status {
        let baseline = try provisioning.checkRelease(app: request.app, version: request.version, runList: request.runList)
        guard (0...1).contains(request.maxFailureRate) else {
            throw ConfigurationError(.invalidField, field: "maxFailureRate", "must be between 0% and 100%")
        }
        guard (1...1_000_000).contains(request.minReports) else {
            throw ConfigurationError(.invalidField, field: "minReports", "must be at least 1")
        }
        guard (1...(30 * 86_400)).contains(request.stageTimeoutSeconds) else {
            throw ConfigurationError(.invalidField, field: "stageTimeout", "must be between 1 second and 30 days")
        }
        if let group = request.group, !Fields.name.isValid(group) {
            throw ConfigurationError(.invalidField, field: "group", "\(Fields.quote(group)) must be \(Fields.name.form)")
        }
        let specs = try RolloutStages.parse(request.stages)

        let current = AppCatalog.effective(baseline: provisioning.composer.apps, releases: try await store.appReleases().filter { !$0.staged })
            .first { $0.name == request.app } ?? baseline
        let runList = request.runList ?? current.runList
        guard request.version != current.version || runList != current.runList else {
            throw ConfigurationError(.invalidField, field: "version", "\(request.app) \(request.version) with this run list is already current")
        }

        let groups = Dictionary(uniqueKeysWithValues: try await store.groups().map { ($0.name, Set($0.members)) })
        var targets: [String] = []
        for stored in try await store.plans() {
            guard let plan = try? stored.decodedPlan(), plan.apps.contains(where: { $0.name == request.app }) else { continue }
            targets.append(stored.gatewayID)
        }
        if let group = request.group {
            guard let members = groups[group] else { throw ConfigurationError(.invalidField, field: "group", "group \(group) does not exist") }
            targets = targets.filter(members.contains)
        }
        guard !targets.isEmpty else {
            throw ConfigurationError(.invalidField, field: "app", "no gateway\(request.group.map { " of group \($0)" } ?? "") runs \(request.app)")
        }
        let at = now()
        let stageOf = try RolloutStages.assign(targets, to: specs, groups: groups, seed: "\(request.app)@\(request.version)")
        let rollout = try await store.createRollout(
            Rollout(app: request.app, version: request.version, runList: runList, releaseID: 0, groupName: request.group,
                    stages: specs.map(\.description), maxFailureRate: request.maxFailureRate, minReports: request.minReports,
                    stageTimeoutSeconds: request.stageTimeoutSeconds, onFailure: request.onFailure, createdAt: at),
            release: AppRelease(app: request.app, version: request.version, runList: runList, publishedAt: at),
            targets: zip(targets, stageOf).map { RolloutTarget(rolloutID: 0, gatewayID: $0, stage: $1) })
        logger.info("rollout started", metadata: [
            "rollout.id": "\(rollout.id ?? 0)", "app.name": "\(rollout.app)", "app.version": "\(rollout.version)",
            "rollout.stages": "\(rollout.stages.joined(separator: ","))", "rollout.gateways": "\(targets.count)",
        ])
        try await drive(rolloutID: rollout.id!, logger: logger)
        return try await status(id: rollout.id!)
    }

    // MARK: Operator actions

    /// Pauses a running rollout: nothing moves until `resume`; the gateways reached keep the release.
    public func pause(id: Int64, logger: Logger) async throws -> Status {
        try await transition(id, from: [.running], to: .paused, message: "paused by the operator", logger: logger)
    }

    /// Resumes a paused rollout; its current stage's timeout starts again.
    public func resume(id: Int64, logger: Logger) async throws -> Status {
        try await transition(id, from: [.paused], to: .running, message: "", logger: logger)
    }

    /// Aborts a running or paused rollout: every gateway it reached is put back on the previous release now.
    public func abort(id: Int64, logger: Logger) async throws -> Status {
        try await transition(id, from: [.running, .paused], to: .aborting, message: "aborted by the operator", logger: logger)
    }

    private func transition(_ id: Int64, from: Set<Rollout.State>, to state: Rollout.State, message: String, logger: Logger) async throws -> Status {
        guard let rollout = try await store.rollout(id: id) else { throw StoreError(.notFound, "rollout \(id) does not exist") }
        guard try await store.transitionRollout(id: id, from: from, stage: nil, to: state, newStage: rollout.stage, message: message, at: now())
        else {
            let current = try await store.rollout(id: id)?.state ?? rollout.state
            throw StoreError(.conflict, "rollout \(id) is \(current.rawValue), not \(from.map(\.rawValue).sorted().joined(separator: " or "))")
        }
        logger.info("rollout \(state.rawValue)", metadata: ["rollout.id": "\(id)", "rollout.state": "\(state.rawValue)"])
        try await drive(rolloutID: id, logger: logger)
        return try await status(id: id)
    }

    // MARK: Status

    public func status(id: Int64) async throws -> Status {
        guard let rollout = try await store.rollout(id: id) else { throw StoreError(.notFound, "rollout \(id) does not exist") }
        return Self.status(rollout, targets: try await store.rolloutTargets(rolloutID: id))
    }

    /// Every rollout, oldest first.
    public func statuses() async throws -> [Status] {
        var statuses: [Status] = []
        for rollout in try await store.rollouts() {
            statuses.append(Self.status(rollout, targets: try await store.rolloutTargets(rolloutID: rollout.id!)))
        }
        return statuses
    }

    static func status(_ rollout: Rollout, targets: [RolloutTarget]) -> Status {
        let byStage = Dictionary(grouping: targets, by: \.stage)
        return Status(rollout: rollout, stages: rollout.stages.enumerated().map { index, name in
            Status.Stage(name: name, health: RolloutStages.Health(byStage[index, default: []]))
        })
    }

    // MARK: Driving

    /// One pass over every rollout that still acts on gateways. A rollout that fails is logged and left for
    /// the next pass; the others go on.
    public func drive(logger: Logger) async throws {
        for rollout in try await store.rollouts() where rollout.state == .running || rollout.state.revertsTo != nil {
            do {
                try await drive(rolloutID: rollout.id!, logger: logger)
                try await recordMetrics(rolloutID: rollout.id!)
            } catch {
                logger.warning("rollout not driven", metadata: ["rollout.id": "\(rollout.id ?? 0)", "error.message": "\(error)"])
            }
        }
    }

    /// Sets the rollout's gauges (`iotd_rollout_stage`, `iotd_rollout_reports`) from the store, so every
    /// replica shows the same figures.
    func recordMetrics(rolloutID id: Int64) async throws {
        guard let r = try await store.rollout(id: id) else { return }
        provisioning.metrics.rolloutStage(id: "\(id)", app: r.app, stage: r.stage, state: r.state.rawValue)
        let targets = try await store.rolloutTargets(rolloutID: id)
        for outcome in [ProvisioningReport.Outcome.delivered, .failed, .rolledBack] {
            provisioning.metrics.rolloutReports(id: "\(id)", outcome: outcome, count: targets.filter { $0.outcome == outcome.rawValue }.count)
        }
    }

    /// One pass over one rollout: reaches, judges, moves on or reverts (see the type's documentation).
    public func drive(rolloutID id: Int64, logger: Logger) async throws {
        var logger = logger
        logger[metadataKey: "rollout.id"] = "\(id)"
        guard let rollout = try await store.rollout(id: id) else { return }
        var targets = try await store.rolloutTargets(rolloutID: id)

        if let final = rollout.state.revertsTo {
            for target in targets where target.planVersion != nil && !target.reverted {
                try await stage(target, of: rollout, pin: false, logger: logger)
            }
            if try await store.transitionRollout(id: id, from: [rollout.state], stage: nil, to: final, newStage: rollout.stage,
                                                 message: rollout.message, at: now()) {
                logger.notice("rollout \(final.rawValue)", metadata: ["rollout.message": "\(rollout.message)"])
            }
            return
        }
        guard rollout.state == .running else { return }

        var reached = false
        for target in targets where target.stage <= rollout.stage && target.planVersion == nil && !target.reverted {
            try await stage(target, of: rollout, pin: true, logger: logger)
            reached = true
        }
        if reached { targets = try await store.rolloutTargets(rolloutID: id) }

        let health = RolloutStages.Health(targets.filter { $0.stage == rollout.stage })
        let at = now()
        switch RolloutStages.verdict(health, rollout: rollout, now: at) {
        case .wait:
            return
        case .advance where rollout.stage + 1 < rollout.stages.count:
            if try await store.transitionRollout(id: id, from: [.running], stage: rollout.stage, to: .running, newStage: rollout.stage + 1,
                                                 message: "", at: at) {
                logger.info("rollout stage passed", metadata: [
                    "rollout.stage": "\(rollout.stages[rollout.stage])", "rollout.reported": "\(health.reported)",
                    "rollout.failed": "\(health.failed)",
                ])
                try await drive(rolloutID: id, logger: logger)
            }
        case .advance:
            let promote = rollout.groupName == nil
            let message = promote ? "\(rollout.app) \(rollout.version) is the current release" : "group \(rollout.groupName!) runs \(rollout.version)"
            if try await store.completeRollout(id: id, stage: rollout.stage, promote: promote, message: message, at: at) {
                logger.notice("rollout completed", metadata: ["app.name": "\(rollout.app)", "app.version": "\(rollout.version)"])
            }
        case .fail(let why):
            let next: Rollout.State = rollout.onFailure == .pause ? .paused : .halting
            if try await store.transitionRollout(id: id, from: [.running], stage: rollout.stage, to: next, newStage: rollout.stage,
                                                 message: why, at: at) {
                logger.warning("rollout stage failed", metadata: ["rollout.message": "\(why)", "rollout.state": "\(next.rawValue)"])
                if next == .halting { try await drive(rolloutID: id, logger: logger) }
            }
        case .timedOut(let why):
            if try await store.transitionRollout(id: id, from: [.running], stage: rollout.stage, to: .paused, newStage: rollout.stage,
                                                 message: why, at: at) {
                logger.warning("rollout stage timed out", metadata: ["rollout.message": "\(why)"])
            }
        }
    }

    /// Pins (or unpins) the release for one target and lets the provisioner follow its new plan.
    private func stage(_ target: RolloutTarget, of rollout: Rollout, pin: Bool, logger: Logger) async throws {
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(target.gatewayID)"
        let issue = provisioning.issuer(gatewayID: target.gatewayID, gatewayVersion: 0)
        guard let (composed, _) = try await store.stageTarget(rolloutID: rollout.id!, gatewayID: target.gatewayID, pin: pin, issue: issue)
        else { return }
        logger.debug(pin ? "rollout reached gateway" : "rollout reverted gateway", metadata: ["plan.version": "\(composed.plan.version)"])
        await provisioning.issued(composed, logger: logger)
    }
}
