import Foundation
import Logging
import PostgresNIO

// Groups and staged rollouts on PostgreSQL. Rollout transitions and target staging lock the rollout's row
// (`FOR UPDATE`), so replicas driving the same rollout take turns: a stage advances once, and a gateway is
// never pinned again after a halt unpinned it.
extension PostgresVendorStore {
    // MARK: Groups

    public func createGroup(name: String, at: Date) async throws {
        try await write { db in
            try await db.query("INSERT INTO gateway_groups (name, created_at) VALUES (\(name), \(at)) ON CONFLICT (name) DO NOTHING",
                               logger: logger)
        }
    }

    static func lockGroup(_ db: PostgresConnection, name: String, logger: Logger) async throws {
        guard try await !db.query("SELECT name FROM gateway_groups WHERE name = \(name) FOR SHARE", logger: logger).collect().isEmpty else {
            throw StoreError(.notFound, "group \(name) does not exist")
        }
    }

    public func addToGroup(name: String, gatewayIDs: [String]) async throws {
        try await write { db in
            try await Self.lockGroup(db, name: name, logger: logger)
            for id in gatewayIDs {
                let inserted = try await db.query("""
                    INSERT INTO group_members (group_name, gateway_id) SELECT \(name), id FROM gateways WHERE id = \(id)
                    ON CONFLICT DO NOTHING RETURNING gateway_id
                    """, logger: logger).collect()
                if inserted.isEmpty, try await db.query("SELECT id FROM gateways WHERE id = \(id)", logger: logger).collect().isEmpty {
                    throw StoreError(.notFound, "gateway \(id) is not enrolled")
                }
            }
        }
    }

    public func removeFromGroup(name: String, gatewayIDs: [String]) async throws {
        try await write { db in
            try await Self.lockGroup(db, name: name, logger: logger)
            try await db.query("DELETE FROM group_members WHERE group_name = \(name) AND gateway_id = ANY(\(gatewayIDs))", logger: logger)
        }
    }

    public func groups() async throws -> [GatewayGroup] {
        try await read { db in
            var groups: [GatewayGroup] = []
            for try await (name, createdAt) in try await db.query("SELECT name, created_at FROM gateway_groups ORDER BY name", logger: logger)
                .decode((String, Date).self) {
                groups.append(GatewayGroup(name: name, createdAt: createdAt))
            }
            var members: [String: [String]] = [:]
            for try await (group, gateway) in try await db.query("SELECT group_name, gateway_id FROM group_members ORDER BY gateway_id",
                                                                 logger: logger).decode((String, String).self) {
                members[group, default: []].append(gateway)
            }
            return groups.map { var g = $0; g.members = members[g.name, default: []]; return g }
        }
    }

    // MARK: Rollouts

    static let rolloutColumns = """
        id, app, version, run_list, release_id, group_name, stages, max_failure_rate, min_reports, stage_timeout_seconds, on_failure, \
        state, stage, stage_started_at, created_at, updated_at, message
        """

    static func rollouts(_ db: PostgresConnection, id: Int64?, lock: Bool, logger: Logger) async throws -> [Rollout] {
        let rows = try await db.query(PostgresQuery(unsafeSQL: """
            SELECT \(rolloutColumns) FROM rollouts WHERE $1::bigint IS NULL OR id = $1::bigint ORDER BY id\(lock ? " FOR UPDATE" : "")
            """, binds: { var b = PostgresBindings(); b.append(id); return b }()), logger: logger)
        var rollouts: [Rollout] = []
        for try await row in rows {
            let r = row.makeRandomAccess()
            let decoder = JSONDecoder()
            guard let onFailure = Rollout.OnFailure(rawValue: try r["on_failure"].decode(String.self)),
                  let state = Rollout.State(rawValue: try r["state"].decode(String.self)) else {
                throw StoreError(.conflict, "rollout row has an unknown state or failure policy")
            }
            var rollout = Rollout(
                id: try r["id"].decode(Int64.self), app: try r["app"].decode(String.self), version: try r["version"].decode(String.self),
                runList: try decoder.decode([String].self, from: Data(try r["run_list"].decode(String.self).utf8)),
                releaseID: try r["release_id"].decode(Int64.self), groupName: try r["group_name"].decode(String?.self),
                stages: try decoder.decode([String].self, from: Data(try r["stages"].decode(String.self).utf8)),
                maxFailureRate: try r["max_failure_rate"].decode(Double.self), minReports: Int(try r["min_reports"].decode(Int64.self)),
                stageTimeoutSeconds: Int(try r["stage_timeout_seconds"].decode(Int64.self)), onFailure: onFailure, state: state,
                stage: Int(try r["stage"].decode(Int64.self)), createdAt: try r["created_at"].decode(Date.self),
                message: try r["message"].decode(String.self))
            rollout.stageStartedAt = try r["stage_started_at"].decode(Date.self)
            rollout.updatedAt = try r["updated_at"].decode(Date.self)
            rollouts.append(rollout)
        }
        return rollouts
    }

    public func createRollout(_ rollout: Rollout, release: AppRelease, targets: [RolloutTarget]) async throws -> Rollout {
        let encoder = JSONEncoder()
        let runList = String(decoding: try encoder.encode(rollout.runList), as: UTF8.self)
        let stages = String(decoding: try encoder.encode(rollout.stages), as: UTF8.self)
        let active = Rollout.State.allCases.filter(\.isActive).map(\.rawValue)
        return try await write { db in
            // One rollout per app at a time: serialize starts of the same app across replicas.
            try await db.query("SELECT pg_advisory_xact_lock(hashtext('iot-daemon-rollout:' || \(rollout.app)))", logger: logger)
            for try await (id, state) in try await db.query("""
                SELECT id, state FROM rollouts WHERE app = \(rollout.app) AND state = ANY(\(active)) LIMIT 1
                """, logger: logger).decode((Int64, String).self) {
                throw StoreError(.conflict, "rollout \(id) of \(rollout.app) is \(state): finish or abort it before starting another")
            }
            var release = release
            release.staged = true
            release = try await Self.insert(release, db, logger: logger)
            var rollout = rollout
            rollout.releaseID = release.id!
            for try await id in try await db.query("""
                INSERT INTO rollouts (app, version, run_list, release_id, group_name, stages, max_failure_rate, min_reports,
                                      stage_timeout_seconds, on_failure, state, stage, stage_started_at, created_at, updated_at, message)
                VALUES (\(rollout.app), \(rollout.version), \(runList), \(rollout.releaseID), \(rollout.groupName), \(stages),
                        \(rollout.maxFailureRate), \(Int64(rollout.minReports)), \(Int64(rollout.stageTimeoutSeconds)),
                        \(rollout.onFailure.rawValue), \(rollout.state.rawValue), \(Int64(rollout.stage)), \(rollout.stageStartedAt),
                        \(rollout.createdAt), \(rollout.updatedAt), \(rollout.message))
                RETURNING id
                """, logger: logger).decode(Int64.self) {
                rollout.id = id
            }
            let id = rollout.id!
            // One statement for all targets: a rollout over thousands of gateways starts in one round trip.
            try await db.query("""
                INSERT INTO rollout_targets (rollout_id, gateway_id, stage, reverted)
                SELECT \(id), t.gateway_id, t.stage, false FROM unnest(\(targets.map(\.gatewayID)), \(targets.map { Int64($0.stage) }))
                    AS t(gateway_id, stage)
                """, logger: logger)
            return rollout
        }
    }

    public func rollouts() async throws -> [Rollout] {
        try await read { db in try await Self.rollouts(db, id: nil, lock: false, logger: logger) }
    }

    public func rollout(id: Int64) async throws -> Rollout? {
        try await read { db in try await Self.rollouts(db, id: id, lock: false, logger: logger).first }
    }

    public func rolloutTargets(rolloutID: Int64) async throws -> [RolloutTarget] {
        try await read { db in
            let rows = try await db.query("""
                SELECT gateway_id, stage, plan_version, outcome, reported_at, reverted FROM rollout_targets
                WHERE rollout_id = \(rolloutID) ORDER BY stage, gateway_id
                """, logger: logger)
            var targets: [RolloutTarget] = []
            for try await (gatewayID, stage, planVersion, outcome, reportedAt, reverted)
                in rows.decode((String, Int64, Int64?, String?, Date?, Bool).self) {
                targets.append(RolloutTarget(rolloutID: rolloutID, gatewayID: gatewayID, stage: Int(stage), planVersion: planVersion.map(Int.init),
                                             outcome: outcome, reportedAt: reportedAt, reverted: reverted))
            }
            return targets
        }
    }

    public func transitionRollout(id: Int64, from: Set<Rollout.State>, stage: Int?, to state: Rollout.State, newStage: Int, message: String,
                                  at: Date) async throws -> Bool {
        try await write { db in
            guard let rollout = try await Self.rollouts(db, id: id, lock: true, logger: logger).first, from.contains(rollout.state),
                  stage == nil || rollout.stage == stage else { return false }
            let restart = newStage != rollout.stage || (rollout.state == .paused && state == .running)
            try await db.query("""
                UPDATE rollouts SET state = \(state.rawValue), stage = \(Int64(newStage)), message = \(message), updated_at = \(at),
                    stage_started_at = CASE WHEN \(restart) THEN \(at) ELSE stage_started_at END
                WHERE id = \(id)
                """, logger: logger)
            return true
        }
    }

    public func stageTarget<Issued: Sendable>(
        rolloutID: Int64, gatewayID: String, pin: Bool,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued? {
        try await write { db in
            // Rollout first, then gateway: the order every transaction here takes both locks in.
            guard let rollout = try await Self.rollouts(db, id: rolloutID, lock: true, logger: logger).first,
                  pin ? rollout.state == .running : rollout.state.revertsTo != nil,
                  try await !db.query("""
                      SELECT 1 FROM rollout_targets WHERE rollout_id = \(rolloutID) AND gateway_id = \(gatewayID)
                      """, logger: logger).collect().isEmpty,
                  try await Self.lockGateway(db, id: gatewayID, logger: logger),
                  try await !Self.plans(db, gatewayID: gatewayID, logger: logger).isEmpty
            else { return nil }
            if pin {
                try await db.query("""
                    INSERT INTO gateway_pins (gateway_id, app, release_id, rollout_id)
                    VALUES (\(gatewayID), \(rollout.app), \(rollout.releaseID), \(rolloutID))
                    ON CONFLICT (gateway_id, app) DO UPDATE SET release_id = EXCLUDED.release_id, rollout_id = EXCLUDED.rollout_id
                    """, logger: logger)
            } else {
                try await db.query("DELETE FROM gateway_pins WHERE gateway_id = \(gatewayID) AND rollout_id = \(rolloutID)", logger: logger)
            }
            let (plan, issued) = try issue(try await Self.planInputs(db, gatewayID: gatewayID, logger: logger))
            try await Self.save(plan, db, logger: logger)
            try await db.query("""
                UPDATE rollout_targets SET plan_version = CASE WHEN \(pin) THEN COALESCE(plan_version, \(plan.version)) ELSE plan_version END,
                    reverted = reverted OR NOT \(pin)
                WHERE rollout_id = \(rolloutID) AND gateway_id = \(gatewayID)
                """, logger: logger)
            return issued
        }
    }

    /// See ``VendorStore/addReport(_:)``.
    static func recordRolloutOutcome(_ db: PostgresConnection, _ report: StoredReport, logger: Logger) async throws {
        guard RolloutTarget.judgedOutcomes.contains(report.outcome) else { return }
        let active = Rollout.State.allCases.filter(\.isActive).map(\.rawValue)
        try await db.query("""
            UPDATE rollout_targets SET outcome = \(report.outcome), reported_at = \(report.receivedAt)
            WHERE gateway_id = \(report.gatewayID) AND plan_version IS NOT NULL AND plan_version <= \(report.planVersion)
                AND outcome IS NULL AND NOT reverted AND rollout_id IN (SELECT id FROM rollouts WHERE state = ANY(\(active)))
            """, logger: logger)
    }

    public func completeRollout(id: Int64, stage: Int, promote: Bool, message: String, at: Date) async throws -> Bool {
        try await write { db in
            guard let rollout = try await Self.rollouts(db, id: id, lock: true, logger: logger).first, rollout.state == .running,
                  rollout.stage == stage else { return false }
            if promote {
                try await db.query("UPDATE app_releases SET staged = false WHERE id = \(rollout.releaseID)", logger: logger)
                try await db.query("DELETE FROM gateway_pins WHERE rollout_id = \(id)", logger: logger)
            }
            try await db.query("""
                UPDATE rollouts SET state = \(Rollout.State.completed.rawValue), message = \(message), updated_at = \(at) WHERE id = \(id)
                """, logger: logger)
            return true
        }
    }
}
