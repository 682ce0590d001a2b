import ArgumentParser
import VendorService

/// `--config`, shared by every command.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's configuration file (YAML).")
    var config: String

    func load() throws -> VendorConfiguration {
        try VendorConfiguration.load(from: config)
    }

    /// Opens the database of an initialized daemon (`init` creates it).
    func openStore(_ configuration: VendorConfiguration) throws -> SQLiteVendorStore {
        try SQLiteVendorStore(path: configuration.database, create: false)
    }
}

/// `--json`, shared by the listings.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print a JSON array instead of a table.")
    var json = false
}
