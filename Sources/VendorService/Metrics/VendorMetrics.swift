import Foundation
import GatewayProtocol
import Prometheus
import Synchronization

/// The daemon's Prometheus metrics, kept in a registry the application owns (no process-global state:
/// tests build many applications in one process, each with its own ``VendorMetrics``).
///
/// Every label value is either fixed here, a route template, a validated enum's raw value, or a name the
/// vendor's own operator chose (rollout ids, app names): nothing a gateway or a network peer sends ever
/// becomes a label, so no request can add a series.
///
/// Families (see README "Metrics"):
/// - `iotd_http_requests_total{route,method,status}`: every answered request; `route` is the matched
///   route's template (`/v1/plan`) or `unmatched`; `method` one of the standard methods or `other`.
/// - `iotd_http_request_duration_seconds{route,method}`: how long the handler took (buckets 1 ms to 10 s).
/// - `iotd_plans_signed_total`: plan versions signed (an unchanged plan re-sent is not counted).
/// - `iotd_reports_received_total{outcome}`: stored reports, by the report's validated outcome.
/// - `iotd_rollout_stage{rollout,app,state}` and `iotd_rollout_reports{rollout,outcome}`: set by the rollout
///   code through ``rolloutStage(id:app:stage:state:)`` and ``rolloutReports(id:outcome:count:)``.
public final class VendorMetrics: Sendable {
    /// The registry `GET /metrics` renders.
    public let registry: PrometheusCollectorRegistry

    /// At most this many rollouts have series at once; the least recently updated one is dropped first.
    public static let maxRollouts = 32

    /// Latency buckets: the routes answer in milliseconds (signing, one SQLite or PostgreSQL transaction);
    /// a bootstrap that registers a Chef node can take seconds.
    static let latencyBuckets: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// The methods that keep their name as a label; any other is `other`.
    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    /// The route label of a request that matched no route.
    public static let unmatchedRoute = "unmatched"

    let plansSigned: Counter
    /// The series each rollout has now, least recently updated first. Changed (and the registry's rollout
    /// series with it) only under this lock, so concurrent updates of one rollout never unregister its
    /// current series.
    private let rollouts = Mutex<[RolloutSeries]>([])

    private struct RolloutSeries {
        var id: String
        var stage: Gauge?
        var reports: [String: Gauge] = [:]
        var gauges: [Gauge] { (stage.map { [$0] } ?? []) + reports.values }
    }

    /// - Parameter registry: where the series go; a new, empty one by default.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        plansSigned = registry.makeCounter(descriptor: .init(
            metricName: "iotd_plans_signed", unitName: "total", helpText: "Plan versions signed for gateways."))
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }

    // MARK: Recorded by the daemon

    /// One answered request. `route` must be a route template (or ``unmatchedRoute``), never a raw path.
    func request(route: String, method: String, status: Int, duration: Duration) {
        let method = Self.knownMethods.contains(method) ? method : "other"
        registry.makeCounter(descriptor: .init(metricName: "iotd_http_requests", unitName: "total",
                                               helpText: "HTTP requests answered, by route template, method and status."),
                             labels: [("route", route), ("method", method), ("status", String(status))]).increment()
        registry.makeDurationHistogram(descriptor: .init(metricName: "iotd_http_request_duration", unitName: "seconds",
                                                         helpText: "Time to answer an HTTP request, by route template and method."),
                                       labels: [("route", route), ("method", method)], buckets: Self.latencyBuckets)
            .record(duration)
    }

    /// A new plan version was signed.
    func planSigned() { plansSigned.increment() }

    /// A gateway's report was stored.
    func reportReceived(_ outcome: ProvisioningReport.Outcome) {
        registry.makeCounter(descriptor: .init(metricName: "iotd_reports_received", unitName: "total",
                                               helpText: "Gateway reports stored, by outcome."),
                             labels: [("outcome", outcome.rawValue)]).increment()
    }

    // MARK: Rollouts (called by the rollout code)

    /// Sets a rollout's current stage: `iotd_rollout_stage{rollout=id,app=app,state=state} = stage`.
    ///
    /// A rollout has one stage series at a time: a new `state` (or `app`) replaces its previous series. Pass
    /// the rollout's own id, app name and a state from the rollout code's own enum (e.g. `running`, `paused`,
    /// `halted`, `completed`, `aborted`), never text from a request. At most ``maxRollouts`` rollouts are
    /// kept; the least recently updated one is dropped first. Call ``rolloutRemoved(id:)`` when a rollout
    /// no longer needs watching.
    ///
    /// - Parameter stage: the stage index, 0 for the first (canary) stage.
    public func rolloutStage(id: String, app: String, stage: Int, state: String) {
        updateRollout(id) { series in
            let gauge = registry.makeGauge(descriptor: Self.rolloutStageDescriptor,
                                           labels: [("rollout", Self.bounded(id)), ("app", Self.bounded(app)), ("state", Self.bounded(state))])
            if let old = series.stage, old !== gauge { registry.unregisterGauge(old) }
            gauge.set(Double(stage))
            series.stage = gauge
        }
    }

    /// Sets how many of a rollout's gateways reported `outcome` so far:
    /// `iotd_rollout_reports{rollout=id,outcome=outcome} = count`. A gauge, set from the stored count, so
    /// every replica shows the same number.
    public func rolloutReports(id: String, outcome: ProvisioningReport.Outcome, count: Int) {
        updateRollout(id) { series in
            let gauge = registry.makeGauge(descriptor: Self.rolloutReportsDescriptor,
                                           labels: [("rollout", Self.bounded(id)), ("outcome", outcome.rawValue)])
            gauge.set(Double(count))
            series.reports[outcome.rawValue] = gauge
        }
    }

    /// Drops every series of a rollout (finished and no longer watched, or deleted).
    public func rolloutRemoved(id: String) {
        rollouts.withLock { list in
            guard let index = list.firstIndex(where: { $0.id == id }) else { return }
            list.remove(at: index).gauges.forEach(registry.unregisterGauge)
        }
    }

    /// Runs `change` on the rollout's series (new ones start empty), makes it the most recently updated,
    /// and drops the least recently updated rollouts past ``maxRollouts``.
    private func updateRollout(_ id: String, _ change: (inout RolloutSeries) -> Void) {
        rollouts.withLock { list in
            var series = list.firstIndex(where: { $0.id == id }).map { list.remove(at: $0) } ?? RolloutSeries(id: id)
            change(&series)
            list.append(series)
            while list.count > Self.maxRollouts {
                list.removeFirst().gauges.forEach(registry.unregisterGauge)
            }
        }
    }

    private static var rolloutStageDescriptor: MetricNameDescriptor {
        MetricNameDescriptor(
            metricName: "iotd_rollout_stage", unitName: "",
            helpText: "Current stage index (0 = first) of a staged rollout, labelled with its app and state.")
    }
    private static var rolloutReportsDescriptor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "iotd_rollout_reports", unitName: "",
                             helpText: "Reports received from a rollout's gateways, by outcome.")
    }

    /// Label values from the rollout code: shown, so kept short (the registry escapes them).
    private static func bounded(_ value: String) -> String { String(value.prefix(64)) }
}
