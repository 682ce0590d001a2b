// lxd-bench: is our LXDClient at least as fast as the lxc CLI for the container life cycle?
// See `Options.usage`; run through scripts/bench-lxd. `lxd-bench delivery` (Delivery.swift, run
// through scripts/bench-delivery) times pushing app payloads instead.
import Dispatch
import Foundation
import Synchronization
import LXD
import Logging

@main
enum LXDBench {
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "delivery" {
            exit(await DeliveryBench.main(Array(arguments.dropFirst())))
        }
        let options: Options
        do {
            options = try Options.parse(arguments)
        } catch {
            stderrLine("lxd-bench: \(error)\n\(Options.usage)")
            exit(2)
        }
        if options.help {
            print(Options.usage)
            return
        }
        exit(await run(options))
    }

    /// Runs the benchmark and returns the exit status (see `Options.usage`).
    static func run(_ options: Options) async -> Int32 {
        var logger = Logger(label: "lxd-bench")
        logger.logLevel = options.verbose ? .debug : .warning

        let client: LXDClient
        do {
            client = try LXDClient(socketPath: options.socket, logger: logger)
        } catch {
            stderrLine("lxd-bench: \(error)")
            return 3
        }
        guard let lxcPath = CommandRunner.locate(options.lxc ?? "lxc") else {
            stderrLine("lxd-bench: lxc not found (\(options.lxc ?? "PATH")); install lxd-client or pass --lxc")
            return 3
        }
        // Cleanup deletes every t-bench-* instance, so two runs at once would destroy each other.
        guard let lock = RunLock(path: "/run/lock/lxd-bench.lock") else {
            stderrLine("lxd-bench: another lxd-bench is running (lock /run/lock/lxd-bench.lock)")
            return 3
        }
        defer { lock.release() }
        let payload: String
        do {
            payload = try makePayload()
        } catch {
            stderrLine("lxd-bench: cannot write the 1 MiB payload: \(error)")
            return 3
        }
        defer { try? FileManager.default.removeItem(atPath: payload) }

        let bench = Benchmark(
            lxd: client,
            clientDriver: ClientDriver(client: client, image: options.image, payloadPath: payload),
            cliDriver: CLIDriver(lxc: CommandRunner(executable: lxcPath), image: options.image, payloadPath: payload),
            count: options.count, rounds: options.rounds, warmup: options.warmup,
            runID: String(UInt32.random(in: 0...UInt32.max), radix: 36), logger: logger)

        // A handle the SIGINT/SIGTERM handler can cancel; awaited right below, so it never outlives this
        // scope, and cleanup then runs in the (never cancelled) main task. Not a background service.
        let work = Task { () throws -> [RoundSample] in
            do {
                _ = try await client.imageAlias(options.image)
            } catch let e as LXDError where e.code == .notFound {
                throw BenchError(message: "image alias \(options.image) not found in LXD (scripts/build-image busybox builds iotgw-busybox)")
            }
            let removed = try await bench.removeLeftovers()
            if removed > 0 { stderrLine("lxd-bench: deleted \(removed) t-bench-* leftovers of an earlier run") }
            return try await bench.run { stderrLine("lxd-bench: \($0)") }
        }
        let interrupts = InterruptHandler { signal in
            stderrLine("lxd-bench: \(signal == SIGINT ? "interrupted" : "terminated"), cleaning up (again to abort)")
            work.cancel()
        }
        let outcome = await work.result

        // Runs in the main task, which is never cancelled, so cleanup works after an interrupt too.
        var cleanupFailed = false
        do {
            _ = try await bench.removeLeftovers()
        } catch {
            stderrLine("lxd-bench: cleanup: \(error)")
            cleanupFailed = true
        }
        interrupts.disarm()

        let samples: [RoundSample]
        switch outcome {
        case .success(let s):
            samples = s
        case .failure(let e) where e is CancellationError || work.isCancelled:
            return 130
        case .failure(let e):
            stderrLine("lxd-bench: FAILED: \(e)")
            return 3
        }
        let report = Report(samples: samples, count: options.count, rounds: options.rounds, margin: options.margin)
        if options.json {
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

/// Unbuffered progress and errors on stderr, so stdout stays the table (or the JSON).
func stderrLine(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// SIGINT/SIGTERM: the first one calls `onSignal` (which cancels the work so cleanup can run);
/// a second one exits at once.
final class InterruptHandler {
    private let sources: [any DispatchSourceSignal]

    init(_ onSignal: @escaping @Sendable (Int32) -> Void) {
        let seen = Counter()
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)  // the dispatch source needs the default action off
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if seen.next() > 1 { exit(130) }
                onSignal(sig)
            }
            source.resume()
            return source
        }
    }

    /// Stops listening and restores the default actions.
    func disarm() {
        for s in sources { s.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}

/// An exclusive `flock` on a file, held until `release()` or process exit (the kernel drops it).
struct RunLock {
    private let fd: Int32

    /// Takes the lock without waiting; nil if another process holds it.
    init?(path: String) {
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                 withIntermediateDirectories: true)
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        self.fd = fd
    }

    func release() { close(fd) }
}

/// A thread-safe counter of signals seen.
final class Counter: Sendable {
    private let value = Mutex(0)
    func next() -> Int { value.withLock { $0 += 1; return $0 } }
}
