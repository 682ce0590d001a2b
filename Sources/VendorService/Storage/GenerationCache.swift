import Synchronization

/// A replica's copy of the ``PlanGeneration`` counts its session polls read.
///
/// - **PostgreSQL:** kept true by notifications. The generation triggers notify every change of a gateway's
///   count or the catalog's on one channel per schema (``PostgresVendorStore/generationChannel``), and
///   ``PostgresVendorStore`` listens on it. The copy is used only while that listener is live (`LISTEN`
///   acknowledged, the connection answering its heartbeat); going live or losing it empties the copy. A
///   change committed by another replica or the CLI is seen once its notice arrives, not by a poll answered
///   in between. This replica's own writes empty the copy as they commit (``invalidateAll()``).
/// - **SQLite:** every poll first asks the database whether anyone committed since (``follow(version:)``).
///
/// Either way a read's answer is kept only when nothing was invalidated while it ran (the epoch it started
/// under is still current), so a notice that overtakes a slower read is not undone by it.
final class GenerationCache: Sendable {
    private struct State {
        var live = false
        var epoch: UInt64 = 0
        var catalog: Int64?
        var gateways: [String: Int64] = [:]
        var version: Int64?

        mutating func reset(live: Bool? = nil) {
            epoch &+= 1
            catalog = nil
            gateways.removeAll(keepingCapacity: false)
            if let live { self.live = live }
        }
    }
    private let state = Mutex(State())
    /// At most this many gateways are remembered (past it the copy is emptied: a few MiB at most).
    let capacity: Int

    init(capacity: Int = 100_000) { self.capacity = max(1, capacity) }

    /// The gateway's generation, if the copy is live and holds it and the catalog's count.
    func cached(_ gatewayID: String) -> PlanGeneration? {
        state.withLock { state in
            guard state.live, let catalog = state.catalog, let gateway = state.gateways[gatewayID] else { return nil }
            return PlanGeneration(gateway: gateway, catalog: catalog)
        }
    }

    /// The epoch a read starting now may keep its answer under (nil while not live: nothing is kept).
    func epoch() -> UInt64? { state.withLock { $0.live ? $0.epoch : nil } }

    /// Keeps a read's answer, if no notice arrived since `epoch` (counts only grow: the larger is kept).
    func keep(_ generation: PlanGeneration, for gatewayID: String, readAt epoch: UInt64) {
        state.withLock { state in
            guard state.live, state.epoch == epoch else { return }
            if state.gateways[gatewayID] == nil, state.gateways.count >= capacity { state.gateways.removeAll() }
            state.gateways[gatewayID] = max(state.gateways[gatewayID] ?? .min, generation.gateway)
            state.catalog = max(state.catalog ?? .min, generation.catalog)
        }
    }

    /// A notice: the payload is the gateway whose count changed, or empty for the catalog's.
    func notice(_ payload: String) {
        state.withLock { state in
            state.epoch &+= 1
            if payload.isEmpty { state.catalog = nil } else { state.gateways[payload] = nil }
        }
    }

    /// This replica wrote: whatever it wrote is read again.
    func invalidateAll() { state.withLock { $0.reset() } }

    /// The database's change counter as read after a poll arrived: another value than the copy's empties it.
    func follow(version: Int64) {
        state.withLock { state in
            guard !state.live || state.version != version else { return }
            state.reset(live: true)
            state.version = version
        }
    }

    /// The listener went live (its `LISTEN` acknowledged) or was lost.
    func setLive(_ live: Bool) { state.withLock { $0.reset(live: live) } }

    var isLive: Bool { state.withLock { $0.live } }
    var count: Int { state.withLock { $0.gateways.count } }
}
