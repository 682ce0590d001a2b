import Logging

/// Calls `body` with the store a configuration names: PostgreSQL when it has a `postgres` section (its
/// connection pool runs for the duration of `body`, migrations applied first), else the SQLite file `database`.
/// Every tool that opens a vendor's store (`iot-daemon`, `iotgw-fleetsim`) goes through here, so they all see
/// the same data the same way.
/// - Parameter create: create the database (SQLite file, PostgreSQL schema) when missing, as `iot-daemon init`
///   does; otherwise a missing one throws ``StoreError/Code/missingDatabase``.
public func withVendorStore<T: Sendable>(_ configuration: VendorConfiguration, create: Bool, logger: Logger,
                                         _ body: (any VendorStore) async throws -> T) async throws -> T {
    if let postgres = configuration.postgres {
        return try await PostgresVendorStore.withStore(settings: postgres, create: create, logger: logger) { store in try await body(store) }
    }
    return try await body(try SQLiteVendorStore(path: configuration.database, create: create))
}
