import Crypto
import Foundation
import GatewayProtocol
import Logging
import Synchronization
import Testing
@testable import VendorService

/// A clock tests move by hand.
final class ManualClock: Sendable {
    private let value: Mutex<Date>
    init(_ start: Date = Harness.now) { value = Mutex(start) }
    var now: Date { value.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { value.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

/// A vendor with `count` gateways that each announced one thermo device (their plans carry thermo-agent
/// 1.0.0), on one store backend.
struct Fleet: Sendable {
    let store: any VendorStore
    let provisioning: ProvisioningService
    let rollouts: RolloutService
    let gateways: [String]
    let clock: ManualClock

    static func with(_ backend: Backend, gateways count: Int, _ body: (Fleet) async throws -> Void) async throws {
        try await StoreHarness.with(backend) { h in
            let clock = ManualClock()
            let signer = try SigningKeyFile.loadOrCreate(path: h.configuration.signingKey).signer
            let provisioning = ProvisioningService(configuration: h.configuration, store: h.store, signer: signer, now: { clock.now })
            var ids = [h.gateway.id]
            for _ in 1..<count {
                let g = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
                try await h.store.enrollGateway(EnrolledGateway(id: g.id, publicKey: g.publicKey, enrolledAt: Harness.now))
                ids.append(g.id)
            }
            for (i, id) in ids.enumerated() {
                let serial = "FT\(i)"
                try await h.register(serial)
                _ = try await provisioning.announce(
                    Announcement(gatewayID: id, device: DeviceIdentity(vendorID: "0403", productID: "6001", serial: serial, subsystem: "tty"),
                                 currentPlanVersion: 0),
                    from: try #require(try await h.store.gateway(id: id)), logger: Harness.logger)
            }
            try await body(Fleet(store: h.store, provisioning: provisioning, rollouts: RolloutService(provisioning: provisioning),
                                 gateways: ids.sorted(), clock: clock))
        }
    }

    func plan(_ id: String) async throws -> (version: Int, thermo: String?) {
        let stored = try #require(try await store.plan(gatewayID: id))
        return (stored.version, try stored.decodedPlan().apps.first { $0.name == "thermo-agent" }?.version)
    }

    func plans() async throws -> [String: (version: Int, thermo: String?)] {
        var all: [String: (version: Int, thermo: String?)] = [:]
        for id in gateways { all[id] = try await plan(id) }
        return all
    }

    /// The gateway reports `outcome` for its current plan, as it would after delivering it.
    func report(_ id: String, _ outcome: ProvisioningReport.Outcome) async throws {
        let version = try await plan(id).version
        let delivery = DeliverySummary(result: outcome.rawValue, provisioner: "chef", convergeSummary: nil, controls: [:], failingControls: [],
                                       restoredSnapshot: nil, message: "")
        try await provisioning.report(ProvisioningReport(gatewayID: id, vendor: "acme", planVersion: version, outcome: outcome, delivery: delivery),
                                      from: try #require(try await store.gateway(id: id)), logger: Harness.logger)
    }

    func request(stages: [String], maxFailureRate: Double = 0.1, minReports: Int = 2, onFailure: Rollout.OnFailure = .revert,
                 group: String? = nil, version: String = "1.1.0") -> RolloutService.Request {
        RolloutService.Request(app: "thermo-agent", version: version, runList: ["recipe[thermo_agent@1.1.0]"], stages: stages,
                               maxFailureRate: maxFailureRate, minReports: minReports, stageTimeoutSeconds: 600, onFailure: onFailure, group: group)
    }

    func targets(_ status: RolloutService.Status, stage: Int) async throws -> [String] {
        try await store.rolloutTargets(rolloutID: status.rollout.id!).filter { $0.stage == stage }.map(\.gatewayID)
    }
}

@Suite("Groups and staged rollouts, on SQLite and PostgreSQL")
struct RolloutTests {
    @Test(arguments: Backend.allCases) func groupsHoldEnrolledGatewaysOnly(_ backend: Backend) async throws {
        try await Fleet.with(backend, gateways: 3) { f in
            try await f.store.createGroup(name: "beta", at: Harness.now)
            try await f.store.createGroup(name: "beta", at: Harness.now)
            try await f.store.addToGroup(name: "beta", gatewayIDs: [f.gateways[0], f.gateways[1]])
            try await f.store.addToGroup(name: "beta", gatewayIDs: [f.gateways[1]])
            // An unknown gateway: nothing of the call is kept.
            await #expect(throws: StoreError.self) {
                try await f.store.addToGroup(name: "beta", gatewayIDs: [f.gateways[2], "gw-00000000000000ff"])
            }
            await #expect(throws: StoreError.self) { try await f.store.addToGroup(name: "nope", gatewayIDs: [f.gateways[0]]) }
            #expect(try await f.store.groups() == [GatewayGroup(name: "beta", createdAt: Harness.now, members: [f.gateways[0], f.gateways[1]])])
            try await f.store.removeFromGroup(name: "beta", gatewayIDs: [f.gateways[0], f.gateways[2]])
            try await f.store.createGroup(name: "canary", at: Harness.now)
            try await f.store.addToGroup(name: "canary", gatewayIDs: [f.gateways[1]])
            #expect(try await f.store.groups().map(\.members) == [[f.gateways[1]], [f.gateways[1]]])
        }
    }

    @Test(arguments: Backend.allCases) func aHealthyRolloutGoesStageByStageAndPromotesTheRelease(_ backend: Backend) async throws {
        try await Fleet.with(backend, gateways: 8) { f in
            try await f.store.createGroup(name: "canary", at: Harness.now)
            try await f.store.addToGroup(name: "canary", gatewayIDs: [f.gateways[3], f.gateways[5]])
            let before = try await f.plans()

            var status = try await f.rollouts.start(f.request(stages: ["canary", "50%", "100%"]), logger: Harness.logger)
            #expect(status.stages.map(\.health.gateways) == [2, 2, 4])
            #expect(try await f.targets(status, stage: 0) == [f.gateways[3], f.gateways[5]])
            // Only the canaries' plans carry the release.
            for id in f.gateways {
                let plan = try await f.plan(id)
                let canary = id == f.gateways[3] || id == f.gateways[5]
                #expect(plan.thermo == (canary ? "1.1.0" : "1.0.0"))
                #expect(plan.version == before[id]!.version + (canary ? 1 : 0))
            }
            // Until the canaries report, nothing moves.
            try await f.rollouts.drive(logger: Harness.logger)
            #expect(try await f.rollouts.status(id: status.rollout.id!).rollout.stage == 0)
            try await f.report(f.gateways[3], .applied)   // not a delivery outcome: does not count
            try await f.report(f.gateways[3], .delivered)
            try await f.report(f.gateways[5], .delivered)
            try await f.rollouts.drive(logger: Harness.logger)
            status = try await f.rollouts.status(id: status.rollout.id!)
            #expect(status.rollout.stage == 1)
            #expect(status.stages[0].health == RolloutStages.Health([
                RolloutTarget(rolloutID: 0, gatewayID: "a", stage: 0, planVersion: 2, outcome: "delivered"),
                RolloutTarget(rolloutID: 0, gatewayID: "b", stage: 0, planVersion: 2, outcome: "delivered"),
            ]))
            #expect(status.stages[1].health.reached == 2)
            #expect(status.stages[2].health.reached == 0)

            for stage in 1...2 {
                for id in try await f.targets(status, stage: stage) { try await f.report(id, .delivered) }
                try await f.rollouts.drive(logger: Harness.logger)
                status = try await f.rollouts.status(id: status.rollout.id!)
            }
            #expect(status.rollout.state == .completed)
            #expect(status.stages.map(\.health.reported) == [2, 2, 4])
            let metrics = String(decoding: f.provisioning.metrics.exposition(), as: UTF8.self)
            #expect(metrics.contains(#"iotd_rollout_stage{rollout="\#(status.rollout.id!)",app="thermo-agent",state="completed"} 2"#), "\(metrics)")
            #expect(metrics.contains(#"iotd_rollout_reports{rollout="\#(status.rollout.id!)",outcome="delivered"} 8"#), "\(metrics)")
            // Promoted: every plan carries 1.1.0, and a fresh composition does not change them again.
            let after = try await f.plans()
            #expect(after.values.allSatisfy { $0.thermo == "1.1.0" })
            for id in f.gateways { _ = try await f.provisioning.reissue(gatewayID: id, gatewayVersion: 0) }
            #expect(try await f.plans().mapValues(\.version) == after.mapValues(\.version))
            #expect(try await f.store.appReleases().last?.staged == false)
        }
    }

    @Test(arguments: Backend.allCases) func aFailingCanaryHaltsAndRevertsTouchingNoOtherGateway(_ backend: Backend) async throws {
        try await Fleet.with(backend, gateways: 10) { f in
            try await f.store.createGroup(name: "canary", at: Harness.now)
            try await f.store.addToGroup(name: "canary", gatewayIDs: Array(f.gateways.prefix(3)))
            let before = try await f.plans()
            let status = try await f.rollouts.start(f.request(stages: ["canary", "100%"], maxFailureRate: 0.2, minReports: 3),
                                                    logger: Harness.logger)
            let canary = try await f.targets(status, stage: 0)
            #expect(canary == Array(f.gateways.prefix(3)))
            try await f.report(canary[0], .delivered)
            try await f.report(canary[1], .rolledBack)
            // 1 of 2 failed, but 3 reports are needed... except that one failure of three gateways is already
            // more than 20% of the stage: it fails now.
            try await f.rollouts.drive(logger: Harness.logger)
            let halted = try await f.rollouts.status(id: status.rollout.id!)
            #expect(halted.rollout.state == .halted)
            #expect(halted.rollout.message.contains("1 of 2 reports failed"))
            #expect(halted.stages[0].health.reverted == 3)
            #expect(halted.stages[1].health.reached == 0)
            for id in f.gateways {
                let plan = try await f.plan(id)
                #expect(plan.thermo == "1.0.0")
                // Canaries got the release and then the previous one back; the others were never touched.
                #expect(plan.version == before[id]!.version + (canary.contains(id) ? 2 : 0))
            }
            // A late report changes nothing, and the release was never promoted.
            try await f.report(canary[2], .delivered)
            #expect(try await f.rollouts.status(id: status.rollout.id!).stages[0].health.reported == 2)
            #expect(try await f.store.appReleases().last?.staged == true)
            // Over: another rollout of the app may start, and publish-app works again.
            _ = try await f.provisioning.publish(app: "thermo-agent", version: "1.0.1", runList: nil, logger: Harness.logger)
        }
    }

    @Test(arguments: Backend.allCases) func pauseResumeAbortAndTimeout(_ backend: Backend) async throws {
        try await Fleet.with(backend, gateways: 4) { f in
            let status = try await f.rollouts.start(f.request(stages: ["1", "100%"], minReports: 1, onFailure: .pause), logger: Harness.logger)
            let id = status.rollout.id!
            // One rollout per app at a time; publish-app waits for it too.
            await #expect(throws: StoreError.self) {
                _ = try await f.rollouts.start(f.request(stages: ["100%"], version: "1.2.0"), logger: Harness.logger)
            }
            await #expect(throws: StoreError.self) {
                _ = try await f.provisioning.publish(app: "thermo-agent", version: "1.2.0", runList: nil, logger: Harness.logger)
            }
            #expect(try await f.rollouts.pause(id: id, logger: Harness.logger).rollout.state == .paused)
            await #expect(throws: StoreError.self) { _ = try await f.rollouts.pause(id: id, logger: Harness.logger) }
            let first = try await f.targets(status, stage: 0)[0]
            try await f.report(first, .delivered)
            try await f.rollouts.drive(logger: Harness.logger)
            #expect(try await f.rollouts.status(id: id).rollout.stage == 0)   // paused: the report is kept, nothing moves
            #expect(try await f.rollouts.resume(id: id, logger: Harness.logger).rollout.stage == 1)

            // Stage 2 waits; past the timeout without reports, it pauses and says why.
            f.clock.advance(601)
            try await f.rollouts.drive(logger: Harness.logger)
            let timedOut = try await f.rollouts.status(id: id)
            #expect(timedOut.rollout.state == .paused)
            #expect(timedOut.rollout.message.contains("0 of 3 gateways reported within 600s"))

            let aborted = try await f.rollouts.abort(id: id, logger: Harness.logger)
            #expect(aborted.rollout.state == .aborted)
            #expect(aborted.stages.map(\.health.reverted) == [1, 3])
            #expect(try await f.plans().values.allSatisfy { $0.thermo == "1.0.0" })
        }
    }

    @Test(arguments: Backend.allCases) func badRequestsRecordNothing(_ backend: Backend) async throws {
        try await Fleet.with(backend, gateways: 2) { f in
            let bad: [RolloutService.Request] = [
                f.request(stages: ["canary", "100%"]),                       // no canary group
                f.request(stages: ["50%"]),                                   // does not reach every gateway
                f.request(stages: ["150%"]),
                f.request(stages: ["100%"], maxFailureRate: 2),
                f.request(stages: ["100%"], group: "beta"),                   // no such group
                f.request(stages: ["100%"], version: "1.0.0 ; rm"),
                RolloutService.Request(app: "nope", version: "1", runList: nil, stages: ["100%"], maxFailureRate: 0.1, minReports: 1),
                RolloutService.Request(app: "thermo-agent", version: "1.0.0", runList: nil, stages: ["100%"], maxFailureRate: 0.1,
                                       minReports: 1),                        // already current
            ]
            for request in bad {
                await #expect(throws: ConfigurationError.self) { _ = try await f.rollouts.start(request, logger: Harness.logger) }
            }
            let rollouts = try await f.store.rollouts(), releases = try await f.store.appReleases()
            #expect(rollouts.isEmpty)
            #expect(releases.isEmpty)
        }
    }

    @Test(arguments: Backend.allCases) func aRestartedOrSecondDriverResumesWithoutDoingAnythingTwice(_ backend: Backend) async throws {
        try await Fleet.with(backend, gateways: 6) { f in
            let status = try await f.rollouts.start(f.request(stages: ["2", "100%"], minReports: 2), logger: Harness.logger)
            for id in try await f.targets(status, stage: 0) { try await f.report(id, .delivered) }
            let versions = try await f.plans().mapValues(\.version)
            // Two replicas (two services on one store) drive at once: the stage advances once, each gateway of
            // the next stage gets exactly one new plan version.
            let second = RolloutService(provisioning: f.provisioning)
            async let a: Void = f.rollouts.drive(logger: Harness.logger)
            async let b: Void = second.drive(logger: Harness.logger)
            _ = try await (a, b)
            try await second.drive(logger: Harness.logger)
            let now = try await f.rollouts.status(id: status.rollout.id!)
            #expect(now.rollout.stage == 1)
            let stage1 = Set(try await f.targets(status, stage: 1))
            for (id, version) in try await f.plans().mapValues(\.version) {
                #expect(version == versions[id]! + (stage1.contains(id) ? 1 : 0))
            }
        }
    }
}
