import Foundation
import LXD
import Synchronization

/// Whether LXD answers, as the gateway last saw it; shared by the agent and every vendor worker.
///
/// LXD going away (killed, restarting, upgraded) is not a failure of any vendor's work: a lane whose
/// LXD call fails with an outage (``LXD/LXDError/isOutage``) marks LXD down here and leaves its work
/// as it stands (its journal and its delivery transaction say where it stopped), recording no error,
/// no failed or rolled-back outcome and no retry. While LXD is down, the agent probes it with backoff
/// (``probeDue(at:)``) and the workers' ticks leave LXD work alone; when it answers again the agent
/// wakes every worker, which finishes what was left. The owner sees `lxd: down since …` meanwhile.
public final class LXDAvailability: Sendable {
    struct State {
        /// Since when LXD is away, and what said so first.
        var downSince: Date?
        var reason: String?
        /// Probes that failed since it went down, and when the next is due.
        var failedProbes = 0
        var nextProbe: Date?
        /// LXD's process id when it last answered: a new one means it restarted, even unseen.
        var pid: Int?
        /// When it last answered a probe, and whether one is wanted before the quiet interval is over.
        var answeredAt: Date?
        var probeRequested = false
    }

    /// What a successful probe found.
    public enum Seen: Equatable, Sendable {
        /// Up, as before.
        case steady
        /// Back after an outage or with a new pid: work left waiting must be picked up.
        case back(downFor: TimeInterval?)
    }

    private let state = Mutex(State())
    let backoff: Backoff

    public init(backoff: Backoff) { self.backoff = backoff }

    /// Since when LXD is down (nil: it answered last time anyone asked).
    public var downSince: Date? { state.withLock { $0.downSince } }
    public var isDown: Bool { downSince != nil }
    public var reason: String? { state.withLock { $0.reason } }

    /// An LXD call failed because LXD is away. Returns true when this is news (LXD was up until now).
    @discardableResult
    public func markDown(_ reason: String, at now: Date) -> Bool {
        state.withLock { s in
            guard s.downSince == nil else { return false }
            s.downSince = now
            s.reason = reason
            s.failedProbes = 0
            // The first probe soon: a restart usually takes seconds.
            s.nextProbe = now.addingTimeInterval(backoff.delay(afterAttempts: 1))
            return true
        }
    }

    /// Whether the agent should probe LXD now (a `GET /1.0`, to notice a new pid). While LXD is down: when
    /// the backoff says so, never in a busy loop. While it is up: at every tick, unless LXD's events stream
    /// is followed (`eventsLive`); then only when asked (``requestProbe()``). LXD ending or restarting ends
    /// that stream (its process's connections close), and so does LXD falling silent after pinging it
    /// (``LXD/LXDClient/withEvents(_:_:)``); following it again asks for a probe. An idle daemon then runs no
    /// HTTP exchange with LXD at all, whose code its idle trim would otherwise read back (6 MB every minute
    /// with the probe "in case" this replaced).
    public func probeDue(at now: Date, eventsLive: Bool = false) -> Bool {
        state.withLock { s in
            if s.downSince != nil { return (s.nextProbe ?? .distantPast) <= now }
            return !eventsLive || s.probeRequested || s.answeredAt == nil
        }
    }

    /// LXD may have restarted unseen (its events stream was followed again): probe at the next tick.
    public func requestProbe() { state.withLock { $0.probeRequested = true } }

    /// A probe failed: LXD is down (since now if it was not yet), next probe later.
    public func probeFailed(_ reason: String, at now: Date) {
        state.withLock { s in
            if s.downSince == nil {
                s.downSince = now
                s.reason = reason
                s.failedProbes = 0
            }
            s.failedProbes += 1
            s.nextProbe = backoff.next(afterAttempts: s.failedProbes, now: now)
        }
    }

    /// A probe succeeded, LXD runs as `pid`.
    public func probeSucceeded(pid: Int, at now: Date) -> Seen {
        state.withLock { s in
            let downFor = s.downSince.map { now.timeIntervalSince($0) }
            let restarted = s.downSince != nil || (s.pid != nil && s.pid != pid)
            s = State(pid: pid, answeredAt: now)
            return restarted ? .back(downFor: downFor) : .steady
        }
    }

    /// For the owner: `up`, or `down since <time> (<reason>)`.
    public func describe(since formatter: (Date) -> String = { ISO8601DateFormatter().string(from: $0) }) -> String? {
        down(formatter)?.description
    }

    /// Since when LXD is down and ``describe(since:)``'s words for it, read together (two reads could
    /// straddle the moment it is marked down: a status saying "down:" with a time, or "up" with none).
    public func down(_ formatter: (Date) -> String = { ISO8601DateFormatter().string(from: $0) }) -> (since: Date, description: String)? {
        state.withLock { s in
            s.downSince.map { ($0, "down since \(formatter($0))" + (s.reason.map { " (\($0))" } ?? "")) }
        }
    }
}

extension Error {
    /// LXD was away during the call (see ``LXD/LXDError/isOutage``).
    var isLXDOutage: Bool { (self as? LXDError)?.isOutage == true }
}
