import Foundation

/// Exponential backoff: `first`, doubling per failed attempt, capped at `max`. Pure, so schedules
/// are unit-tested without waiting.
public struct Backoff: Sendable, Equatable {
    public var first: TimeInterval
    public var max: TimeInterval

    public init(first: TimeInterval, max: TimeInterval) {
        self.first = first
        self.max = Swift.max(first, max)
    }

    /// The delay after `attempts` failures in a row (1 = the first failure).
    public func delay(afterAttempts attempts: Int) -> TimeInterval {
        guard attempts > 0 else { return 0 }
        return Swift.min(max, first * pow(2, Double(Swift.min(attempts - 1, 30))))
    }

    /// When to try again after `attempts` failures, counted from `now`.
    public func next(afterAttempts attempts: Int, now: Date) -> Date { now.addingTimeInterval(delay(afterAttempts: attempts)) }
}
