// lxd-bench: is our LXDClient at least as fast as the lxc CLI? Two modes: `lifecycle` (the
// default, LifecycleCommand.swift, run through scripts/bench-lxd) times the container life cycle;
// `delivery` (DeliveryCommand.swift, run through scripts/bench-delivery) times pushing app payloads;
// `reconcile` (ReconcileCommand.swift, run through scripts/bench-reconcile) times the gateway core's
// no-op reconcile passes against the real LXD.
import ArgumentParser
import Dispatch
import Foundation
import Synchronization

@main
struct LXDBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lxd-bench",
        abstract: "Is our LXDClient at least as fast as the lxc CLI?",
        discussion: """
            Without a mode, runs lifecycle: `lxd-bench --count N ...` is `lxd-bench lifecycle --count N ...`. \
            Run through scripts/bench-lxd (lifecycle), scripts/bench-delivery (delivery) and \
            scripts/bench-reconcile (reconcile).
            """,
        subcommands: [LifecycleCommand.self, DeliveryCommand.self, ReconcileCommand.self],
        defaultSubcommand: LifecycleCommand.self)
}

/// Unbuffered progress and errors on stderr, so stdout stays the table (or the JSON).
func stderrLine(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// How work run by ``runInterruptibly(as:_:cleanup:)`` ended.
enum BenchOutcome<T> {
    case finished(T)
    case interrupted
    case failed(any Error)
}

/// Runs `work` in a task that the first SIGINT/SIGTERM cancels, then `cleanup` in the calling task,
/// which is never cancelled, so cleanup runs after an interrupt or a failure too. Messages go to
/// stderr as `<name>: ...`. Returns how the work ended and whether cleanup failed.
func runInterruptibly<T: Sendable>(as name: String, _ work: @escaping @Sendable () async throws -> T,
                                   cleanup: () async throws -> Void) async -> (outcome: BenchOutcome<T>, cleanupFailed: Bool) {
    // A handle the signal handler can cancel; awaited right below, so it never outlives this scope.
    // Not a background service.
    let task = Task { try await work() }
    let interrupts = InterruptHandler { signal in
        stderrLine("\(name): \(signal == SIGINT ? "interrupted" : "terminated"), cleaning up (again to abort)")
        task.cancel()
    }
    let result = await task.result

    var cleanupFailed = false
    do {
        try await cleanup()
    } catch {
        stderrLine("\(name): cleanup: \(error)")
        cleanupFailed = true
    }
    interrupts.disarm()

    switch result {
    case .success(let value):
        return (.finished(value), cleanupFailed)
    case .failure(let e) where e is CancellationError || task.isCancelled:
        return (.interrupted, cleanupFailed)
    case .failure(let e):
        return (.failed(e), cleanupFailed)
    }
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
