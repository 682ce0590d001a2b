import Hummingbird
import Logging

/// The metrics listener: `GET /metrics` in the Prometheus text format (0.0.4), and nothing else. It runs
/// on its own address (`metrics: {host, port}` in the configuration, loopback by default) so that the
/// public listener, which faces gateways on the internet, never reveals fleet size or traffic.
/// Run it in the same `ServiceGroup` as the public application.
public func buildMetricsApplication(listen: VendorConfiguration.Listen, metrics: VendorMetrics, logger: Logger)
    -> some ApplicationProtocol
{
    Application(
        router: buildMetricsRouter(metrics: metrics),
        configuration: ApplicationConfiguration(address: .hostname(listen.host, port: listen.port), serverName: "iot-daemon-metrics"),
        logger: logger
    )
}

/// `GET /metrics` → 200 with every series of `metrics`; anything else 404.
func buildMetricsRouter(metrics: VendorMetrics) -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.get("/metrics") { _, _ in prometheusResponse(metrics.exposition()) }
    return router
}

/// The Prometheus text exposition as a response.
func prometheusResponse(_ bytes: [UInt8]) -> Response {
    Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
             body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
}
