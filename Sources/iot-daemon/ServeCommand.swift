import ArgumentParser
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import VendorService

/// Runs the HTTP server until SIGTERM or SIGINT, then shuts down gracefully.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Serve gateways (until SIGTERM/SIGINT).")

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "iot-daemon")
        let configuration = try options.load()
        if SigningKeyFile.isReadableByOthers(path: configuration.signingKey) {
            logger.warning("signing key is readable by group or others", metadata: ["key.path": "\(configuration.signingKey)"])
        }
        // The store (for PostgreSQL: its connection pool) outlives the service group: it stops after the
        // server has drained.
        // One registry for the process, owned here: the app counts into it, the metrics listener renders it,
        // and libraries that speak swift-metrics land in it too (the one global, set only in the executable).
        let metrics = VendorMetrics()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        try await options.withStore(configuration, logger: logger) { store in
            let provisioning = try ProvisioningService.configured(by: configuration, store: store, logger: logger, metrics: metrics)
            let app = buildApplication(configuration: configuration, service: provisioning, logger: logger)
            if let chef = configuration.chef {
                if SigningKeyFile.isReadableByOthers(path: chef.adminKey) {
                    logger.warning("chef admin key is readable by group or others", metadata: ["key.path": "\(chef.adminKey)"])
                }
                if configuration.postgres == nil, SigningKeyFile.isReadableByOthers(path: configuration.database) {
                    logger.warning("database holding chef client keys is readable by group or others",
                                   metadata: ["database": "\(configuration.database)"])
                }
            }
            logger.info("iot-daemon starting", metadata: [
                "vendor": "\(configuration.vendor)", "listen": "\(configuration.listen.host):\(configuration.listen.port)",
                "metrics.listen": "\(configuration.metrics.map { "\($0.host):\($0.port)" } ?? "off")",
                "database": "\(storeDescription(configuration))", "chef.server": "\(configuration.chef?.serverURL ?? "none")",
            ])
            var services: [any Service] = [app, RolloutDriver(rollouts: RolloutService(provisioning: provisioning), logger: logger)]
            if let listen = configuration.metrics {
                if !["127.0.0.1", "::1", "localhost"].contains(listen.host) {
                    logger.warning("metrics listener is not on loopback: anyone who reaches it sees fleet size and traffic",
                                   metadata: ["metrics.listen": "\(listen.host):\(listen.port)"])
                }
                services.append(buildMetricsApplication(listen: listen, metrics: metrics, logger: logger))
            }
            if let fleet = configuration.fleet {
                services.append(FleetService(configuration: configuration, settings: fleet, store: store, logger: logger))
            }
            let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await group.run()
        }
        logger.info("iot-daemon stopped")
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
