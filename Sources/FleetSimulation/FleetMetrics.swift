import Foundation
import GatewayProtocol
import Synchronization

/// Everything a run counted, shared by every simulated gateway (one lock, held for a few assignments).
final class FleetRecorder: Sendable {
    struct Counts {
        var latencies: [Route: [Double]] = [:]
        var errors: [String: Int] = [:]
        var plansVerified = 0
        var newVersions = 0
        var versionRegressions = 0
        var bootstrapsVerified = 0
        var bootstrapsSuperseded = 0
        var reports: [String: Int] = [:]
        var fleet = FleetSummary.ChannelFigures()
    }

    let counts = Mutex(Counts())

    /// A request answered (whatever its status), with its latency.
    func answered(_ route: Route, latency: Duration) {
        let ms = latency / .milliseconds(1)
        counts.withLock { $0.latencies[route, default: []].append(ms) }
    }

    /// An error, by kind: `route: code`.
    func error(_ route: Route, _ code: String) { error(route.rawValue, code) }

    /// An error off the HTTP routes (`mqtt.connect`, `mqtt.status`, ...): `what: code`.
    func error(_ what: String, _ code: String) {
        counts.withLock { $0.errors["\(what): \(code)", default: 0] += 1 }
    }

    func update(_ body: (inout Counts) -> Void) { counts.withLock { body(&$0) } }

    func summary(gateways: Int, elapsed: Duration, fleetChannel: Bool = false) -> FleetSummary {
        let seconds = max(elapsed / .seconds(1), 1e-9)
        return counts.withLock { c in
            var routes: [String: FleetSummary.RouteFigures] = [:]
            var all: [Double] = []
            for (route, samples) in c.latencies {
                routes[route.rawValue] = .init(samples, seconds: seconds)
                all += samples
            }
            return FleetSummary(
                gateways: gateways, seconds: seconds, requests: all.count, requestsPerSecond: Double(all.count) / seconds,
                p50ms: FleetSummary.percentile(all, 0.50), p99ms: FleetSummary.percentile(all, 0.99), routes: routes,
                errors: c.errors, errorCount: c.errors.values.reduce(0, +), plansVerified: c.plansVerified, newVersions: c.newVersions,
                versionRegressions: c.versionRegressions, bootstrapsVerified: c.bootstrapsVerified,
                bootstrapsSuperseded: c.bootstrapsSuperseded, reports: c.reports, fleet: fleetChannel ? c.fleet : nil
            )
        }
    }
}

/// What a run or a load measured; `--json` prints it as is.
public struct FleetSummary: Sendable, Codable, Equatable {
    public struct RouteFigures: Sendable, Codable, Equatable {
        public var requests: Int
        public var requestsPerSecond: Double
        public var p50ms: Double
        public var p99ms: Double

        init(_ samples: [Double], seconds: Double) {
            requests = samples.count
            requestsPerSecond = Double(samples.count) / seconds
            p50ms = FleetSummary.percentile(samples, 0.50)
            p99ms = FleetSummary.percentile(samples, 0.99)
        }
    }

    public var gateways: Int
    public var seconds: Double
    /// Requests answered (any status), all routes.
    public var requests: Int
    public var requestsPerSecond: Double
    public var p50ms: Double
    public var p99ms: Double
    /// By route name: `announce`, `plan`, `bootstrap`, `report`, `health`.
    public var routes: [String: RouteFigures]
    /// By kind, `route: code` (an API error code, `http<status>`, `transport`, `verify.<protocol code>`).
    public var errors: [String: Int]
    public var errorCount: Int
    /// Signed plans that passed `PlanValidator` (signature, vendor, gateway, expiry, fields, version).
    public var plansVerified: Int
    /// Of those, plans with a version above the one the gateway held.
    public var newVersions: Int
    /// Plans refused for going back in version, or reusing one with other content (must be 0).
    public var versionRegressions: Int
    /// Signed bootstrap bundles that passed `BundleValidator`.
    public var bootstrapsVerified: Int
    /// Bootstraps answered `planVersionMismatch`: the plan moved on in between (the gateway polls again).
    public var bootstrapsSuperseded: Int
    /// Reports accepted, by outcome.
    public var reports: [String: Int]
    /// What the gateways did on the fleet channel (MQTT), when they used it.
    public var fleet: ChannelFigures?

    public struct ChannelFigures: Sendable, Codable, Equatable {
        /// Gateways that connected to the broker (at least once).
        public var connected = 0
        /// Connections made again after one ended.
        public var reconnects = 0
        /// Plans that arrived on the plan topic and verified (also counted in ``FleetSummary/plansVerified``).
        public var plansPushed = 0
        /// Of those, plans newer than the one held: delivered because they were pushed, before any poll.
        public var newVersionsPushed = 0
        /// Pushed plans older than one the gateway already polled (the retained message not yet replaced): ignored.
        public var stalePushes = 0
        /// Signed statuses the broker acknowledged.
        public var statusesPublished = 0
    }

    /// Nearest-rank percentile of `samples` (0 when empty).
    static func percentile(_ samples: [Double], _ p: Double) -> Double {
        guard !samples.isEmpty else { return 0 }
        let sorted = samples.sorted()
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    /// The summary as a person reads it.
    public var text: String {
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        var lines = ["gateways: \(gateways)  seconds: \(f(seconds))  requests: \(requests)  requests/s: \(f(requestsPerSecond))  "
            + "p50: \(String(format: "%.2f", p50ms)) ms  p99: \(String(format: "%.2f", p99ms)) ms"]
        for route in Route.allCases {
            guard let r = routes[route.rawValue] else { continue }
            lines.append("  \(route.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) requests: \(r.requests)  requests/s: "
                + "\(f(r.requestsPerSecond))  p50: \(String(format: "%.2f", r.p50ms)) ms  p99: \(String(format: "%.2f", r.p99ms)) ms")
        }
        lines.append("plans verified: \(plansVerified)  new versions: \(newVersions)  version regressions: \(versionRegressions)")
        lines.append("bootstraps verified: \(bootstrapsVerified)  superseded: \(bootstrapsSuperseded)")
        if let c = fleet {
            lines.append("fleet channel: \(c.connected) connected (\(c.reconnects) reconnects)  plans pushed: \(c.plansPushed) "
                + "(\(c.newVersionsPushed) new, \(c.stalePushes) stale)  statuses published: \(c.statusesPublished)")
        }
        lines.append("reports: " + (reports.isEmpty ? "none" : reports.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))
        lines.append("errors: \(errorCount)" + (errors.isEmpty ? "" : " (" + errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            .joined(separator: ", ") + ")"))
        return lines.joined(separator: "\n")
    }
}
