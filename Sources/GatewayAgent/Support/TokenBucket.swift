import Foundation

/// At most `capacity` at once, refilled at `perSecond`: a budget for what someone else decides the rate of.
struct TokenBucket: Sendable {
    let capacity: Double
    let perSecond: Double
    private var tokens: Double
    private var refilledAt: Date

    init(capacity: Double, perSecond: Double, now: Date) {
        self.capacity = max(1, capacity)
        self.perSecond = max(0, perSecond)
        tokens = self.capacity
        refilledAt = now
    }

    /// Takes one token if there is one at `now`.
    mutating func take(now: Date) -> Bool {
        let elapsed = max(0, now.timeIntervalSince(refilledAt))
        tokens = min(capacity, tokens + elapsed * perSecond)
        refilledAt = max(refilledAt, now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
