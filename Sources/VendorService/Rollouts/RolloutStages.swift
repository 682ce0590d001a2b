import Crypto
import Foundation
import GatewayProtocol

/// How a rollout's targets are split into stages and when a stage is judged. Pure: no store, no clock.
public enum RolloutStages {
    /// One stage specification:
    /// - `canary`: the members of the group named `canary`;
    /// - `@NAME`: the members of group NAME;
    /// - `N%` (1-100): the targets up to N percent of all of them, counted from the first stage;
    /// - `N`: the targets up to N of them, counted the same way.
    public enum Spec: Sendable, Equatable, CustomStringConvertible {
        case group(String)
        case percent(Int)
        case count(Int)

        public init(parsing text: String) throws {
            if text == "canary" {
                self = .group("canary")
            } else if text.hasPrefix("@") {
                let name = String(text.dropFirst())
                guard Fields.name.isValid(name) else {
                    throw ConfigurationError(.invalidField, field: "stages", "\(Fields.quote(text)): a group stage is @ and \(Fields.name.form)")
                }
                self = .group(name)
            } else if text.hasSuffix("%"), let n = Int(text.dropLast()), (1...100).contains(n) {
                self = .percent(n)
            } else if let n = Int(text), n > 0 {
                self = .count(n)
            } else {
                throw ConfigurationError(.invalidField, field: "stages",
                                         "\(Fields.quote(text)) is not a stage: canary, @GROUP, a percentage 1%-100%, or a count of gateways")
            }
        }

        public var description: String {
            switch self {
            case .group("canary"): "canary"
            case .group(let name): "@" + name
            case .percent(let n): "\(n)%"
            case .count(let n): "\(n)"
            }
        }
    }

    /// At most this many stages: a rollout is a few steps, not a schedule.
    public static let maxStages = 10

    public static func parse(_ specs: [String]) throws -> [Spec] {
        guard (1...maxStages).contains(specs.count) else {
            throw ConfigurationError(.invalidField, field: "stages", "name 1-\(maxStages) stages, e.g. canary,25%,100%")
        }
        return try specs.map(Spec.init(parsing:))
    }

    /// Assigns every target to the first stage that takes it: a group stage takes its members not taken yet;
    /// a percentage or count stage takes, in a stable pseudo-random order (`seed`), targets until that many
    /// have been taken in all. Every target must be taken by the last stage, and a group stage must take at
    /// least one.
    /// - Returns: the stage index of each target, in the order of `targets`.
    public static func assign(_ targets: [String], to specs: [Spec], groups: [String: Set<String>], seed: String) throws -> [Int] {
        var stageOf: [String: Int] = [:]
        let order = targets.sorted { rank($0, seed) < rank($1, seed) }
        for (index, spec) in specs.enumerated() {
            switch spec {
            case .group(let name):
                guard let members = groups[name] else {
                    throw ConfigurationError(.invalidField, field: "stages", "stage \(spec): group \(name) does not exist")
                }
                let taken = order.filter { members.contains($0) && stageOf[$0] == nil }
                guard !taken.isEmpty else {
                    throw ConfigurationError(.invalidField, field: "stages", "stage \(spec): no gateway of group \(name) is a target")
                }
                for id in taken { stageOf[id] = index }
            case .percent, .count:
                let goal: Int
                if case .percent(let n) = spec { goal = (targets.count * n + 99) / 100 } else if case .count(let n) = spec {
                    goal = min(n, targets.count)
                } else { goal = 0 }
                var remaining = goal - stageOf.count
                for id in order where remaining > 0 && stageOf[id] == nil {
                    stageOf[id] = index
                    remaining -= 1
                }
            }
        }
        let missed = targets.count - stageOf.count
        guard missed == 0 else {
            throw ConfigurationError(.invalidField, field: "stages",
                                     "the stages reach \(stageOf.count) of \(targets.count) gateways: end with 100%")
        }
        return targets.map { stageOf[$0]! }
    }

    private static func rank(_ id: String, _ seed: String) -> String {
        SHA256.hash(data: Data((seed + "\u{0}" + id).utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// A stage's figures.
    public struct Health: Sendable, Equatable, Codable {
        /// Gateways in the stage.
        public var gateways: Int
        /// Of them, those whose plan carries the release.
        public var reached: Int
        /// Of them, those that reported a delivery outcome.
        public var reported: Int
        public var failed: Int
        public var reverted: Int

        public init(_ targets: some Sequence<RolloutTarget>) {
            gateways = 0; reached = 0; reported = 0; failed = 0; reverted = 0
            for t in targets {
                gateways += 1
                if t.planVersion != nil { reached += 1 }
                if t.outcome != nil { reported += 1 }
                if t.failed { failed += 1 }
                if t.reverted { reverted += 1 }
            }
        }

        public var failureRate: Double { reported == 0 ? 0 : Double(failed) / Double(reported) }
    }

    public enum Verdict: Sendable, Equatable {
        /// Reports are still coming.
        case wait
        /// The stage is healthy: go on.
        case advance
        /// More failures than the rollout allows (why).
        case fail(String)
        /// The stage waited longer than the rollout's stage timeout without enough reports (why).
        case timedOut(String)
    }

    /// Judges a stage: it fails as soon as at least `minReports` (at most the stage's size) reports are in
    /// and more than `maxFailureRate` of them are failures, or as soon as the failures alone exceed that
    /// rate of the whole stage; it is healthy when every gateway reported, or when the timeout passed with
    /// enough reports; without enough reports by the timeout it has timed out.
    public static func verdict(_ health: Health, rollout: Rollout, now: Date) -> Verdict {
        guard health.gateways > 0 else { return .advance }
        let needed = max(1, min(rollout.minReports, health.gateways))
        let figures = "\(health.failed) of \(health.reported) reports failed (\(percent(health.failureRate)))"
            + ", more than \(percent(rollout.maxFailureRate)) allowed"
        if health.reported >= needed, health.failureRate > rollout.maxFailureRate { return .fail("stage \(rollout.stage + 1): " + figures) }
        if Double(health.failed) / Double(health.gateways) > rollout.maxFailureRate { return .fail("stage \(rollout.stage + 1): " + figures) }
        if health.reported == health.gateways { return .advance }
        guard now.timeIntervalSince(rollout.stageStartedAt) >= Double(rollout.stageTimeoutSeconds) else { return .wait }
        if health.reported >= needed { return .advance }
        return .timedOut("stage \(rollout.stage + 1): \(health.reported) of \(health.gateways) gateways reported within "
            + "\(rollout.stageTimeoutSeconds)s (\(needed) needed)")
    }

    public static func percent(_ rate: Double) -> String {
        let p = rate * 100
        return p == p.rounded() ? "\(Int(p))%" : String(format: "%.1f%%", p)
    }
}
