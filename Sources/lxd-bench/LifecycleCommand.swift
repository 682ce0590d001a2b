import ArgumentParser
import Foundation
import LXD
import Logging

/// `lxd-bench [lifecycle]`: create, start, exec, push, stop and delete of N containers, through
/// LXDClient and through the lxc CLI, side by side.
struct LifecycleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifecycle",
        abstract: "Time the container life cycle through LXDClient and through the lxc CLI (the default mode).",
        discussion: """
            Times create, start, exec, push (1 MiB), stop (forced) and delete of N containers, done \
            sequentially once through LXDClient ("client") and once through the lxc CLI ("cli") per round. \
            Rounds alternate the order (client,cli / cli,client / ...); the table shows the median over rounds \
            of each phase's total and the ratio client/cli. A phase fails when its ratio exceeds 1 + the margin \
            and the 95% bootstrap interval of the ratio lies above 1.

            Exit status: 0 client not slower in any phase, 1 client slower in some phase, 3 benchmark failed \
            (or another run holds /run/lock/lxd-bench.lock), 64 usage error, 130 interrupted. Containers are \
            named t-bench-*; leftovers of that prefix are deleted at start and at exit, also after a failure \
            or Ctrl-C.
            """)

    @Option(parsing: .unconditional, help: ArgumentHelp("Containers per driver and round (1...200).", valueName: "N"))
    var count: Int

    @Option(parsing: .unconditional, help: ArgumentHelp("Measured rounds (1...50).", valueName: "R"))
    var rounds = 3

    @Option(parsing: .unconditional,
            help: ArgumentHelp("Untimed rounds of one container per driver before measuring (0...10).", valueName: "W"))
    var warmup = 1

    @OptionGroup var common: CommonOptions

    func validate() throws {
        try requireInRange(count, 1...200, option: "--count")
        try requireInRange(rounds, 1...50, option: "--rounds")
        try requireInRange(warmup, 0...10, option: "--warmup")
    }

    func run() async throws {
        let status = await benchmark()
        if status != 0 { throw ExitCode(status) }
    }

    /// Runs the benchmark and returns the exit status (see the discussion above).
    func benchmark() async -> Int32 {
        guard let (logger, client, lxcPath) = common.open(as: "lxd-bench") else { return 3 }
        // Cleanup deletes every t-bench-* instance, so two runs at once would destroy each other.
        guard let lock = RunLock(path: "/run/lock/lxd-bench.lock") else {
            stderrLine("lxd-bench: another lxd-bench is running (lock /run/lock/lxd-bench.lock)")
            return 3
        }
        defer { lock.release() }
        let payload: String
        do {
            payload = try Self.makePayload()
        } catch {
            stderrLine("lxd-bench: cannot write the 1 MiB payload: \(error)")
            return 3
        }
        defer { try? FileManager.default.removeItem(atPath: payload) }

        let bench = Benchmark(
            lxd: client,
            clientDriver: ClientDriver(client: client, image: common.image, payloadPath: payload),
            cliDriver: CLIDriver(lxc: CommandRunner(executable: lxcPath), image: common.image, payloadPath: payload),
            count: count, rounds: rounds, warmup: warmup,
            runID: String(UInt32.random(in: 0...UInt32.max), radix: 36), logger: logger)

        let (outcome, cleanupFailed) = await runInterruptibly(as: "lxd-bench", {
            do {
                _ = try await client.imageAlias(common.image)
            } catch let e as LXDError where e.code == .notFound {
                throw BenchError(message: "image alias \(common.image) not found in LXD (scripts/build-image busybox builds iotgw-busybox)")
            }
            let removed = try await bench.removeLeftovers()
            if removed > 0 { stderrLine("lxd-bench: deleted \(removed) t-bench-* leftovers of an earlier run") }
            return try await bench.run { stderrLine("lxd-bench: \($0)") }
        }, cleanup: {
            _ = try await bench.removeLeftovers()
        })

        let samples: [RoundSample]
        switch outcome {
        case .finished(let s):
            samples = s
        case .interrupted:
            return 130
        case .failed(let e):
            stderrLine("lxd-bench: FAILED: \(e)")
            return 3
        }
        let report = Report(samples: samples, count: count, rounds: rounds, margin: common.margin)
        if common.json {
            do {
                print(try report.json())
            } catch {
                stderrLine("lxd-bench: cannot encode the report: \(error)")
                return 3
            }
        } else {
            print(report.table())
        }
        if cleanupFailed { return 3 }
        return report.passed ? 0 : 1
    }

    /// A 1 MiB file of random bytes, mode 0644, in the temporary directory.
    static func makePayload() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lxd-bench-\(getpid()).bin").path
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<(1 << 20) / 8).flatMap { _ in withUnsafeBytes(of: rng.next() as UInt64) { Array($0) } }
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o644]) else {
            throw BenchError(message: "cannot create \(path)")
        }
        return path
    }
}
