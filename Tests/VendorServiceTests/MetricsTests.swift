import Foundation
import GatewayProtocol
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Prometheus
import Testing
@testable import VendorService

/// One series of a Prometheus text exposition: `name{k="v",...} value`.
struct Series: Equatable, CustomStringConvertible {
    var name: String
    var labels: [String: String]
    var value: Double
    var description: String { "\(name)\(labels.sorted { $0.key < $1.key }) \(value)" }
    /// Name and labels: what makes a series (its value aside).
    var key: String { "\(name)\(labels.sorted { $0.key < $1.key })" }

    /// Every series in `text` (comments skipped). Label values here never hold `,` or `"`.
    static func parse(_ text: String) -> [Series] {
        text.split(separator: "\n").compactMap { line -> Series? in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                return nil
            }
            let head = line[..<space]
            guard let open = head.firstIndex(of: "{") else { return Series(name: String(head), labels: [:], value: value) }
            var labels: [String: String] = [:]
            for pair in head[head.index(after: open)..<head.index(before: head.endIndex)].split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2 else { continue }
                labels[String(kv[0])] = String(kv[1].dropFirst().dropLast())
            }
            return Series(name: String(head[..<open]), labels: labels, value: value)
        }
    }
}

extension [Series] {
    /// The value of the one series with this name and exactly these labels, if any.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        first { $0.name == name && $0.labels == labels }?.value
    }
}

@Suite("Metrics")
struct MetricsTests {
    /// Scrapes `GET /metrics` from the metrics listener's router, as Prometheus does.
    static func scrape(_ metrics: VendorMetrics) async throws -> [Series] {
        let app = Application(router: buildMetricsRouter(metrics: metrics))
        return try await app.test(.router) { client in
            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
            return Series.parse(String(buffer: response.body))
        }
    }

    @Test func requestsPlansAndReportsAreCountedWithTheirLabels() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let metrics = VendorMetrics()
            try await h.app(metrics: metrics).test(.router) { client in
                try #expect(await client.execute(uri: "/v1/health", method: .get).status == .ok)
                try #expect(await HTTPTests.announce(client, h, serial: "FT1").status == .ok)
                // The same device again: the very same signed plan, nothing newly signed.
                try #expect(await HTTPTests.announce(client, h, serial: "FT1", currentPlanVersion: 1).status == .ok)
                let report = ProvisioningReport(gatewayID: h.gateway.id, vendor: "acme", planVersion: 1, outcome: .rolledBack,
                                                container: "iotgw-acme", addresses: [], attachedDevices: ["FT1"])
                try #expect(await signedPost(client, h, "/v1/report", report).status == .noContent)
                // Unsigned: refused before anything is parsed, still counted under its route.
                try #expect(await client.execute(uri: "/v1/plan", method: .post, body: ByteBuffer(string: "{}")).status == .unauthorized)
            }
            let series = try await Self.scrape(metrics)
            let requests = "iotd_http_requests_total"
            #expect(series.value(requests, ["route": "/v1/health", "method": "GET", "status": "200"]) == 1)
            #expect(series.value(requests, ["route": "/v1/announce", "method": "POST", "status": "200"]) == 2)
            #expect(series.value(requests, ["route": "/v1/report", "method": "POST", "status": "204"]) == 1)
            #expect(series.value(requests, ["route": "/v1/plan", "method": "POST", "status": "401"]) == 1)
            let latency = "iotd_http_request_duration_seconds"
            #expect(series.value(latency + "_count", ["route": "/v1/announce", "method": "POST"]) == 2)
            #expect(series.value(latency + "_bucket", ["route": "/v1/announce", "method": "POST", "le": "+Inf"]) == 2)
            #expect(series.contains { $0.name == latency + "_bucket" && $0.labels["le"] == "0.005" })
            #expect(series.value("iotd_plans_signed_total") == 1)
            #expect(series.value("iotd_reports_received_total", ["outcome": "rolled-back"]) == 1)
            #expect(series.value("iotd_reports_received_total", ["outcome": "applied"]) == nil)
        }
    }

    @Test func unknownPathsAndMethodsAddNoSeries() async throws {
        try await Harness.with { h in
            let metrics = VendorMetrics()
            try await h.app(metrics: metrics).test(.router) { client in
                try #expect(await client.execute(uri: "/nothing", method: .get).status == .notFound)
                let before = metrics.exposition()
                for i in 0..<20 {
                    try #expect(await client.execute(uri: "/garbage-\(i)/\(UUID().uuidString)", method: .get).status == .notFound)
                    try #expect(await client.execute(uri: "/v1/health/\(i)", method: .get).status == .notFound)
                }
                // A route's path with a method it does not have is not that route either.
                try #expect(await client.execute(uri: "/v1/health", method: try #require(.init("BREW"))).status == .notFound)
                // The public listener has no /metrics.
                try #expect(await client.execute(uri: "/metrics", method: .get).status == .notFound)
                let series = Series.parse(String(decoding: metrics.exposition(), as: UTF8.self))
                // The only new series: the one folded `other` method (a counter and its histogram).
                let known = Set(Series.parse(String(decoding: before, as: UTF8.self)).map(\.key))
                let added = series.filter { !known.contains($0.key) }
                #expect(!added.isEmpty && added.allSatisfy { $0.labels["route"] == "unmatched" && $0.labels["method"] == "other" })
                #expect(series.value("iotd_http_requests_total", ["route": "unmatched", "method": "GET", "status": "404"]) == 42)
                #expect(series.value("iotd_http_requests_total", ["route": "unmatched", "method": "other", "status": "404"]) == 1)
                #expect(!series.contains { $0.labels.values.contains { $0.contains("garbage") || $0.contains("BREW") || $0.hasPrefix("/v1/health/") } })
            }
        }
    }

    @Test func eachApplicationCountsInItsOwnRegistry() async throws {
        try await Harness.with { h in
            let (first, second) = (VendorMetrics(), VendorMetrics())
            try await h.app(metrics: first).test(.router) { client in
                _ = try await client.execute(uri: "/v1/health", method: .get)
            }
            try await h.app(metrics: second).test(.router) { _ in }
            #expect(Series.parse(String(decoding: first.exposition(), as: UTF8.self))
                .value("iotd_http_requests_total", ["route": "/v1/health", "method": "GET", "status": "200"]) == 1)
            #expect(!Series.parse(String(decoding: second.exposition(), as: UTF8.self)).contains { $0.name == "iotd_http_requests_total" })
        }
    }

    @Test func aRolloutHasOneStageSeriesAndItsReportCounts() async throws {
        let metrics = VendorMetrics()
        metrics.rolloutStage(id: "r1", app: "thermo-agent", stage: 0, state: "running")
        metrics.rolloutReports(id: "r1", outcome: .delivered, count: 3)
        metrics.rolloutReports(id: "r1", outcome: .failed, count: 1)
        metrics.rolloutStage(id: "r1", app: "thermo-agent", stage: 1, state: "halted")
        var series = try await Self.scrape(metrics)
        #expect(series.filter { $0.name == "iotd_rollout_stage" }
            == [Series(name: "iotd_rollout_stage", labels: ["rollout": "r1", "app": "thermo-agent", "state": "halted"], value: 1)])
        #expect(series.value("iotd_rollout_reports", ["rollout": "r1", "outcome": "delivered"]) == 3)
        #expect(series.value("iotd_rollout_reports", ["rollout": "r1", "outcome": "failed"]) == 1)

        metrics.rolloutRemoved(id: "r1")
        series = try await Self.scrape(metrics)
        #expect(!series.contains { $0.name.hasPrefix("iotd_rollout") })
    }

    @Test func onlyTheMostRecentRolloutsKeepSeries() async throws {
        let metrics = VendorMetrics()
        for i in 0..<(VendorMetrics.maxRollouts + 5) {
            metrics.rolloutStage(id: "r\(i)", app: "thermo-agent", stage: 0, state: "running")
            metrics.rolloutReports(id: "r\(i)", outcome: .delivered, count: i)
        }
        let series = try await Self.scrape(metrics)
        let ids = Set(series.filter { $0.name.hasPrefix("iotd_rollout") }.compactMap { $0.labels["rollout"] })
        #expect(ids.count == VendorMetrics.maxRollouts)
        #expect(!ids.contains("r0") && ids.contains("r\(VendorMetrics.maxRollouts + 4)"))
    }

    @Test func theMetricsListenerServesOnlyMetricsOverTCP() async throws {
        let metrics = VendorMetrics()
        metrics.reportReceived(.delivered)
        let app = buildMetricsApplication(listen: .init(host: "127.0.0.1", port: 0), metrics: metrics, logger: Harness.logger)
        try await app.test(.live) { client in
            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(String(buffer: response.body).contains("iotd_reports_received_total{outcome=\"delivered\"} 1"))
            try #expect(await client.execute(uri: "/v1/health", method: .get).status == .notFound)
            try #expect(await client.execute(uri: "/metrics", method: .post).status == .notFound)
        }
    }

    @Test func metricsListenerIsOffByDefaultAndNeedsItsOwnPort() throws {
        #expect(try VendorConfiguration.parse(yaml: ConfigurationTests.example).metrics == nil)
        let on = try VendorConfiguration.parse(yaml: ConfigurationTests.example + "\nmetrics: {host: 127.0.0.1, port: 9470}")
        #expect(on.metrics == .init(host: "127.0.0.1", port: 9470))
        let clash = ConfigurationTests.refusal(ConfigurationTests.example + "\nmetrics: {host: 127.0.0.1, port: 8470}")
        #expect(clash?.field == "metrics.port")
    }
}
