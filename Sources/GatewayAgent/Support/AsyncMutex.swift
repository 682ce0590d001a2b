import Synchronization

/// A lock held across suspension points (an actor alone is re-entered at every `await`). Waiters are
/// served in order. Used to keep one vendor's container changes (reconcile, snapshot, restore) from
/// interleaving, and container creations from overlapping where LXD needs it; nothing else ever waits on it.
public actor AsyncMutex {
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init() {}

    private func lock() async {
        guard held else {
            held = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    private func unlock() {
        if waiters.isEmpty {
            held = false
        } else {
            // Stays held: ownership passes straight to the next waiter.
            waiters.removeFirst().resume()
        }
    }

    /// Runs `body` once no other `withLock` on this mutex is running.
    public nonisolated func withLock<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        await lock()
        do {
            let result = try await body()
            await unlock()
            return result
        } catch {
            await unlock()
            throw error
        }
    }

    /// As ``withLock(_:)``, but `body` may let the lock go before it is over, by calling the `release` it is
    /// given (later calls do nothing): the rest of `body` runs unlocked, beside the next holder.
    public nonisolated func withLock<T: Sendable>(
        releasingEarly body: @Sendable (_ release: @escaping @Sendable () async -> Void) async throws -> T
    ) async throws -> T {
        await lock()
        let held = Mutex(true)
        let release: @Sendable () async -> Void = {
            guard held.withLock({ h in defer { h = false }; return h }) else { return }
            await self.unlock()
        }
        do {
            let result = try await body(release)
            await release()
            return result
        } catch {
            await release()
            throw error
        }
    }
}
