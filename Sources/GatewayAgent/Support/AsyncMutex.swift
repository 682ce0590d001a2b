/// A lock held across suspension points (an actor alone is re-entered at every `await`). Waiters are
/// served in order. Used to keep one vendor's container changes (reconcile, snapshot, restore) from
/// interleaving; nothing else ever waits on it.
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
}
