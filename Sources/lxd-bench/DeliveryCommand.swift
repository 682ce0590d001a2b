import ArgumentParser
import Foundation
import LXD
import Logging

/// `lxd-bench delivery`: pushing app payloads into one running container, through LXDClient and
/// through `lxc file push`, side by side (DeliveryBenchmark in Delivery.swift).
struct DeliveryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delivery",
        abstract: "Time pushing app payloads into a container through LXDClient and through lxc file push.",
        discussion: """
            Creates and starts one container t-bench-delivery-<id>, writes one payload of random bytes per size \
            (/var/tmp/lxd-bench-delivery-<pid>-<n>MiB.bin, mode 0644) and, for each size, pushes it to \
            /root/payload-<n> in alternating rounds (client,cli / cli,client / ...):

              client  LXDClient.pushFile(..., attributes: 0:0 0644)
                      (a streamed POST .../files)
              cli     lxc file push FILE CONTAINER/root/payload-<n>
                      (one process per push)

            Before the timed rounds each driver pushes each size once untimed into a deleted path; that copy \
            is checked inside the container (size, mode, owner, sha256sum against the host's). Every timed push \
            overwrites the file; the host's dirty pages are flushed (sync) before each one, untimed. The table \
            shows per size the median ms, MiB/s, and the ratio client/cli. A size fails when its ratio exceeds \
            1 + the margin and the 95% bootstrap interval of the ratio of medians lies above 1; fewer than 5 \
            rounds can never fail.

            Exit status: 0 within the target at every size, 1 client slower beyond the target at some size, \
            3 benchmark failed (or another lxd-bench holds /run/lock/lxd-bench.lock), 64 usage error, \
            130 interrupted. The container and the payload files are removed at exit, also after a failure or \
            Ctrl-C; t-bench-delivery-* leftovers are deleted at start.
            """)

    @Option(parsing: .unconditional,
            help: ArgumentHelp("Payload sizes in MiB, comma-separated and distinct, each 1...1024.", valueName: "LIST"))
    var sizes = SizeList([1, 10, 100])

    @Option(parsing: .unconditional, help: ArgumentHelp("Timed pushes per size and driver (1...50).", valueName: "R"))
    var rounds = 5

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard !sizes.mebibytes.isEmpty, sizes.mebibytes.allSatisfy({ (1...1024).contains($0) }),
              Set(sizes.mebibytes).count == sizes.mebibytes.count
        else {
            throw ValidationError("--sizes needs distinct MiB counts in 1...1024, comma-separated (e.g. 1,10,100)")
        }
        try requireInRange(rounds, 1...50, option: "--rounds")
    }

    func run() async throws {
        let status = await benchmark()
        if status != 0 { throw ExitCode(status) }
    }

    /// Setup, run, cleanup, verdict (the same structure as `LifecycleCommand.benchmark`); returns
    /// the exit status (see the discussion above).
    func benchmark() async -> Int32 {
        func fail(_ message: String) -> Int32 {
            stderrLine("lxd-bench delivery: \(message)")
            return 3
        }
        guard let (logger, client, lxcPath) = common.open(as: "lxd-bench delivery") else { return 3 }
        guard let sha256Path = CommandRunner.locate("sha256sum") else { return fail("sha256sum not found on PATH") }
        // The default mode deletes every t-bench-* instance: never run both at once.
        guard let lock = RunLock(path: "/run/lock/lxd-bench.lock") else {
            return fail("another lxd-bench is running (lock /run/lock/lxd-bench.lock)")
        }
        defer { lock.release() }
        // Payloads of runs that were killed; under the lock no live run owns any.
        DeliveryBenchmark.removePayloads(pid: nil)
        defer { DeliveryBenchmark.removePayloads(pid: getpid()) }

        let container = DeliveryBenchmark.namePrefix + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let bench = DeliveryBenchmark(client: client, lxc: CommandRunner(executable: lxcPath),
                                      sha256sum: CommandRunner(executable: sha256Path), container: container,
                                      image: common.image, sizesMiB: sizes.mebibytes, rounds: rounds,
                                      logger: logger)
        let (outcome, cleanupFailed) = await runInterruptibly(as: "lxd-bench delivery", {
            try await bench.run { stderrLine("lxd-bench delivery: \($0)") }
        }, cleanup: {
            _ = try await Benchmark.removeInstances(prefix: DeliveryBenchmark.namePrefix, lxd: client, logger: logger)
        })

        let result: (samples: [DeliverySample], checks: [DeliveryCheck])
        switch outcome {
        case .finished(let r):
            result = r
        case .interrupted:
            return 130
        case .failed(let e):
            return fail("FAILED: \(e)")
        }
        let report = DeliveryReport(samples: result.samples, checks: result.checks, sizesMiB: sizes.mebibytes,
                                    container: container, image: common.image, rounds: rounds,
                                    margin: common.margin)
        if common.json {
            do {
                print(try report.json())
            } catch {
                return fail("cannot encode the report: \(error)")
            }
        } else {
            print(report.table())
        }
        if cleanupFailed { return 3 }
        return report.passed ? 0 : 1
    }
}

/// `--sizes 1,10,100`: payload sizes in MiB (the rules are checked by `DeliveryCommand.validate()`).
struct SizeList: ExpressibleByArgument, Sendable {
    var mebibytes: [Int]

    init(_ mebibytes: [Int]) { self.mebibytes = mebibytes }

    init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
        let sizes = parts.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizes.isEmpty, sizes.count == parts.count else { return nil }
        mebibytes = sizes
    }

    var defaultValueDescription: String { mebibytes.map(String.init).joined(separator: ",") }
}
