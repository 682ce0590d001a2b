import GatewayProtocol
import Prometheus
import Synchronization

/// The gateway's own Prometheus metrics, for the owner (`GET /v1/metrics` on the control socket,
/// `iot-gateway metrics`). The registry belongs to the agent's environment: no process-global state.
///
/// Small by design (the gateway aims at a small idle footprint): series are made on first use, and every
/// label has a bounded set of values: `vendor` is a vendor id from the owner's configuration (anything
/// else is `other`); the other labels are fixed words or the gateway's own error codes. Nothing a vendor
/// or a device sends (serials, topics, a vendor's own refusal code, message text) is ever a label.
///
/// Families:
/// - `iotgw_udev_events_total{kind}`: `added`, `removed`, `sweep`;
/// - `iotgw_approvals_total{vendor,decision,by}`: `approved`/`denied` by the `owner` or the `policy`;
///   `iotgw_approvals_pending` (at scrape time);
/// - `iotgw_containers_created_total{vendor}`, `iotgw_device_attaches_total{vendor}`, `iotgw_device_detaches_total{vendor}`;
/// - `iotgw_deliveries_total{vendor,result}`: `delivered`, `rolled-back`, `failed`;
/// - `iotgw_plans_accepted_total{vendor}`, `iotgw_plans_refused_total{vendor,reason}` (the gateway's error
///   code, `vendorRefused` when the vendor's daemon said no, or `other`);
/// - `iotgw_reports_queued{vendor}`: reports waiting for the vendor; `iotgw_lane_busy{vendor,lane}`: 1
///   while a worker lane (`exchange`, `reconcile`, `delivery`) runs a pass;
/// - `iotgw_fleet_messages_received_total{vendor,kind}` (`plan`, `command`, `unexpected`),
///   `iotgw_fleet_messages_published_total{vendor,kind}` (`status`, `result`, `logs`),
///   `iotgw_fleet_connected{vendor}`.
public final class GatewayMetrics: Sendable {
    /// The registry the control socket renders.
    public let registry: PrometheusCollectorRegistry
    /// The vendor ids that may appear as labels: the owner's configuration.
    let vendors: Set<String>
    /// Each series' handle once made: the registry's make (name and help checked, labels sorted, a lookup
    /// under its lock) ran at every lane pass, twice, and kept that code resident in an idle gateway.
    /// Bounded by the labels' bounded values.
    private let counters = Mutex<[String: Counter]>([:])
    private let gauges = Mutex<[String: Gauge]>([:])

    /// - Parameter vendors: the configured vendor ids; any other id is labelled `other`.
    public init(vendors: some Sequence<String>, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.vendors = Set(vendors)
        self.registry = registry
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }

    // MARK: Recording

    public enum UdevEvent: String, Sendable { case added, removed, sweep }
    public enum DeliveryResult: String, Sendable { case delivered, rolledBack = "rolled-back", failed }
    public enum Lane: String, Sendable { case exchange, reconcile, delivery }
    public enum FleetIn: String, Sendable { case plan, command, unexpected, overBudget = "over-budget" }
    public enum FleetOut: String, Sendable { case status, result, logs }

    func udevEvent(_ kind: UdevEvent) {
        counter("iotgw_udev_events", "udev events handled, by kind.", [("kind", kind.rawValue)]).increment()
    }

    /// `by`: the plan record's `decidedBy` (`owner`, or the policy's name).
    func approval(vendor: String, approved: Bool, by: String?) {
        counter("iotgw_approvals", "Plan approvals decided, by decision and by whom (owner or policy).",
                [("vendor", label(vendor)), ("decision", approved ? "approved" : "denied"), ("by", by == "owner" ? "owner" : "policy")])
            .increment()
    }

    func containerCreated(vendor: String) {
        counter("iotgw_containers_created", "Vendor containers created.", [("vendor", label(vendor))]).increment()
    }

    func deviceAttached(vendor: String, count: Int = 1) {
        counter("iotgw_device_attaches", "Devices passed into a vendor container.", [("vendor", label(vendor))]).increment(by: Int64(count))
    }

    func deviceDetached(vendor: String) {
        counter("iotgw_device_detaches", "Devices removed from a vendor container.", [("vendor", label(vendor))]).increment()
    }

    func delivery(vendor: String, _ result: DeliveryResult) {
        counter("iotgw_deliveries", "App deliveries finished, by result.", [("vendor", label(vendor)), ("result", result.rawValue)])
            .increment()
    }

    func planAccepted(vendor: String) {
        counter("iotgw_plans_accepted", "Signed plans that passed every check and were recorded.", [("vendor", label(vendor))])
            .increment()
    }

    func planRefused(vendor: String, because error: any Error) {
        counter("iotgw_plans_refused", "Plans refused, by the gateway's reason code.",
                [("vendor", label(vendor)), ("reason", Self.reason(error))]).increment()
    }

    func reportsQueued(vendor: String, _ count: Int) {
        gauge("iotgw_reports_queued", "Reports waiting to be sent to the vendor.", [("vendor", label(vendor))]).set(Double(count))
    }

    func lane(vendor: String, _ lane: Lane, busy: Bool) {
        gauge("iotgw_lane_busy", "1 while a vendor worker's lane runs a pass.", [("vendor", label(vendor)), ("lane", lane.rawValue)])
            .set(to: busy ? 1.0 : 0.0)
    }

    func fleetReceived(vendor: String, _ kind: FleetIn) {
        counter("iotgw_fleet_messages_received", "Messages from the vendor's broker, by kind.",
                [("vendor", label(vendor)), ("kind", kind.rawValue)]).increment()
    }

    func fleetPublished(vendor: String, _ kind: FleetOut) {
        counter("iotgw_fleet_messages_published", "Messages published to the vendor's broker, by kind.",
                [("vendor", label(vendor)), ("kind", kind.rawValue)]).increment()
    }

    /// Point-in-time values the control socket sets just before rendering.
    func pendingApprovals(_ count: Int) {
        registry.makeGauge(descriptor: .init(metricName: "iotgw_approvals_pending", unitName: "", helpText: "Approvals waiting for the owner."))
            .set(Double(count))
    }

    func fleetConnected(vendor: String, _ connected: Bool) {
        gauge("iotgw_fleet_connected", "1 while the vendor's fleet channel is connected.", [("vendor", label(vendor))]).set(to: connected ? 1.0 : 0.0)
    }

    // MARK: Labels

    /// A configured vendor id, or `other`.
    func label(_ vendor: String) -> String { vendors.contains(vendor) ? vendor : "other" }

    /// The gateway's own code for a refusal: its `GatewayError` or `ProtocolError` code (a fixed set,
    /// made by this code), `vendorRefused` when the vendor's daemon answered with an error (its code is the
    /// vendor's text, never a label), `vendorUnreachable`, or `other`.
    static func reason(_ error: any Error) -> String {
        let code: String
        switch error {
        case let e as GatewayError: code = e.code.description
        case let e as ProtocolError: code = e.code.description
        case let e as VendorError: return e.isRetryable ? "vendorUnreachable" : "vendorRefused"
        default: return "other"
        }
        // Belt and braces: codes are short identifiers; anything else is not one of ours.
        return code.count <= 32 && code.allSatisfy({ $0.isASCII && $0.isLetter }) ? code : "other"
    }

    private func counter(_ name: String, _ help: String, _ labels: [(String, String)]) -> Counter {
        Self.handle(counters, Self.series(name, labels)) {
            registry.makeCounter(descriptor: .init(metricName: name, unitName: "total", helpText: help), labels: labels)
        }
    }

    private func gauge(_ name: String, _ help: String, _ labels: [(String, String)]) -> Gauge {
        Self.handle(gauges, Self.series(name, labels)) {
            registry.makeGauge(descriptor: .init(metricName: name, unitName: "", helpText: help), labels: labels)
        }
    }

    private static func series(_ name: String, _ labels: [(String, String)]) -> String {
        labels.reduce(into: name) { $0 += "\u{0}" + $1.0 + "\u{0}" + $1.1 }
    }

    private static func handle<Handle: Sendable>(_ handles: borrowing Mutex<[String: Handle]>, _ key: String, make: () -> Handle) -> Handle {
        if let made = handles.withLock({ $0[key] }) { return made }
        let made = make()
        handles.withLock { $0[key] = made }
        return made
    }
}
