import ArgumentParser
import Logging
import VendorService

/// `--config`, shared by every command.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's configuration file (YAML).")
    var config: String

    func load() throws -> VendorConfiguration {
        try VendorConfiguration.load(from: config)
    }

    /// Opens the store of an initialized daemon (`init` creates it) for `body`; see ``withVendorStore(_:create:logger:_:)``.
    func withStore<T: Sendable>(_ configuration: VendorConfiguration, logger: Logger = quietLogger,
                                _ body: (any VendorStore) async throws -> T) async throws -> T {
        try await withVendorStore(configuration, create: false, logger: logger, body)
    }
}

/// Warnings only: the store's logger for commands that print their own output.
let quietLogger: Logger = {
    var logger = Logger(label: "iot-daemon")
    logger.logLevel = .warning
    return logger
}()

/// Where the configured store keeps its data, for messages and logs (never the password).
func storeDescription(_ configuration: VendorConfiguration) -> String {
    guard let postgres = configuration.postgres else { return configuration.database }
    guard let e = try? postgres.endpoint else { return "postgres" }
    return "postgres://\(e.user)@\(e.host):\(e.port)/\(e.database) (schema \(postgres.schemaName))"
}

/// `--json`, shared by the listings.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print a JSON array instead of a table.")
    var json = false
}
