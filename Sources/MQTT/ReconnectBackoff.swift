/// The delays between reconnect attempts: exponential from the lower bound to the upper one, with
/// jitter so that a fleet that lost its broker at the same moment does not come back in lockstep.
struct ReconnectBackoff: Sendable, Equatable {
    var bounds: ClosedRange<Duration>

    /// The delay before the next attempt after `failures` consecutive failed attempts (0 after the
    /// first failure): `d = min(upper, lower * 2^failures)`, scaled by `jitter` (0...1) into
    /// `d/2 ... d` and never below the lower bound.
    func delay(afterFailures failures: Int, jitter: Double) -> Duration {
        let lower = bounds.lowerBound.seconds
        let upper = bounds.upperBound.seconds
        let exponent = Double(min(max(failures, 0), 62))
        let full = min(upper, lower * (exponent < 62 ? Double(1 << Int(exponent)) : .infinity))
        let jittered = full * (0.5 + 0.5 * min(max(jitter, 0), 1))
        return .seconds(max(lower, jittered))
    }
}

extension Duration {
    var seconds: Double {
        self / .seconds(1)
    }
}
