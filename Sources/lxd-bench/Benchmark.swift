import Foundation
import LXD
import Logging

/// Times of one driver over one round: per phase, each container's duration in milliseconds.
struct RoundSample: Codable, Sendable {
    var driver: DriverKind
    var round: Int
    /// Milliseconds per container, in container order, for each phase (in `Phase.allCases` order).
    var phases: [PhaseTimes]

    struct PhaseTimes: Codable, Sendable {
        var phase: Phase
        var perContainerMs: [Double]
        var totalMs: Double { perContainerMs.reduce(0, +) }
    }

    func times(_ phase: Phase) -> PhaseTimes? { phases.first { $0.phase == phase } }
}

/// Runs the rounds: each driver takes N containers through every phase, sequentially.
struct Benchmark: Sendable {
    static let namePrefix = "t-bench-"
    static let remotePath = "/tmp/x"

    /// Used for the untimed cleanup only.
    let lxd: LXDClient
    let clientDriver: Driver
    let cliDriver: Driver
    let count: Int
    let rounds: Int
    let warmup: Int
    let runID: String
    let logger: Logger

    /// Driver order of round `r`: client,cli / cli,client / client,cli ... so a slow drift of the
    /// host (page cache, btrfs, LXD's database) weighs on both sides alike.
    static func schedule(round: Int) -> [DriverKind] {
        round.isMultiple(of: 2) ? [.client, .cli] : [.cli, .client]
    }

    func containerName(_ kind: DriverKind, round: String, index: Int) -> String {
        "\(Self.namePrefix)\(runID)-\(kind.tag)\(round)-\(index)"
    }

    func driver(_ kind: DriverKind) -> Driver {
        switch kind {
        case .client: clientDriver
        case .cli: cliDriver
        }
    }

    /// Warm-up rounds (one container, untimed), then the measured rounds.
    func run(progress: @Sendable (String) -> Void) async throws -> [RoundSample] {
        for w in 0..<warmup {
            for kind in Self.schedule(round: w) {
                progress("warm-up \(w + 1)/\(warmup): \(kind.rawValue)")
                _ = try await cycle(driver(kind), names: [containerName(kind, round: "w\(w)", index: 0)], round: -1)
            }
        }
        var samples: [RoundSample] = []
        for r in 0..<rounds {
            for kind in Self.schedule(round: r) {
                progress("round \(r + 1)/\(rounds): \(kind.rawValue), \(count) containers")
                let names = (0..<count).map { containerName(kind, round: "r\(r)", index: $0) }
                samples.append(try await cycle(driver(kind), names: names, round: r))
            }
        }
        return samples
    }

    /// Takes `names` through every phase in order, one container at a time.
    func cycle(_ driver: Driver, names: [String], round: Int) async throws -> RoundSample {
        let clock = ContinuousClock()
        var phases: [RoundSample.PhaseTimes] = []
        for phase in Phase.allCases {
            var times: [Double] = []
            for name in names {
                try Task.checkCancellation()
                let start = clock.now
                do {
                    try await driver.perform(phase, on: name)
                } catch let e as CancellationError {
                    throw e
                } catch {
                    throw BenchError(message: "\(driver.kind.rawValue) \(phase.rawValue) \(name): \(error)")
                }
                times.append(Self.milliseconds(start.duration(to: clock.now)))
            }
            logger.debug("phase done", metadata: [
                "bench.driver": "\(driver.kind.rawValue)", "bench.phase": "\(phase.rawValue)",
                "bench.ms": "\(times.reduce(0, +))",
            ])
            phases.append(.init(phase: phase, perContainerMs: times))
        }
        return RoundSample(driver: driver.kind, round: round, phases: phases)
    }

    static func milliseconds(_ d: Duration) -> Double {
        d / .milliseconds(1)
    }

    /// Force-deletes every `t-bench-*` instance. Retries: an instance whose create or stop was
    /// interrupted may still be locked by its LXD operation for a moment.
    func removeLeftovers(attempts: Int = 5) async throws -> Int {
        try await Self.removeInstances(prefix: Self.namePrefix, lxd: lxd, logger: logger, attempts: attempts)
    }

    /// Force-deletes every instance whose name starts with `prefix` (see `removeLeftovers`).
    static func removeInstances(prefix: String, lxd: LXDClient, logger: Logger, attempts: Int = 5) async throws -> Int {
        var removed = 0
        for attempt in 1...attempts {
            let names = try await lxd.listInstances().map(\.name).filter { $0.hasPrefix(prefix) }
            var failures: [String] = []
            for name in names {
                do {
                    try await lxd.forceDeleteInstance(name)
                    removed += 1
                } catch {
                    failures.append("\(name): \(error)")
                }
            }
            if failures.isEmpty { return removed }
            guard attempt < attempts else {
                throw BenchError(message: "cannot delete leftovers: \(failures.joined(separator: "; "))")
            }
            logger.debug("leftover delete retry", metadata: ["bench.failures": "\(failures)"])
            try await Task.sleep(for: .seconds(1))
        }
        return removed
    }
}
