import Crypto
import Foundation
import GatewayProtocol
import GRDB
import Logging
import PostgresNIO
import Testing
@testable import VendorService

/// The store backends the shared store suites run against.
enum Backend: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }
}

/// A store of `backend`, fresh for one test, with an enrolled gateway: a temp SQLite file, or a PostgreSQL
/// schema of its own (created, then dropped) so tests run in parallel on one server.
struct StoreHarness: Sendable {
    let backend: Backend
    let store: any VendorStore
    let configuration: VendorConfiguration
    let gateway: GatewayIdentity

    static func with<T: Sendable>(_ backend: Backend, _ body: (StoreHarness) async throws -> T) async throws -> T {
        try await withTemporaryFolder { folder in
            let configuration = makeConfiguration(folder: folder)
            let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            func run(_ store: any VendorStore) async throws -> T {
                try await store.enrollGateway(EnrolledGateway(id: gateway.id, publicKey: gateway.publicKey, enrolledAt: Harness.now))
                return try await body(StoreHarness(backend: backend, store: store, configuration: configuration, gateway: gateway))
            }
            switch backend {
            case .sqlite:
                return try await run(try SQLiteVendorStore(path: configuration.database, create: true))
            case .postgres:
                return try await TestPostgres.withFreshStore { store in try await run(store) }
            }
        }
    }

    func register(_ serial: String, model: String = "thermo-v1") async throws {
        let m = try #require(configuration.model(named: model))
        try await store.registerDevice(RegisteredDevice(serial: serial, vendorID: m.vendorID, productID: m.productID, model: m.name,
                                                        registeredAt: Harness.now))
    }

    /// The nonces left in the store's table, sorted (a look behind the protocol, to see pruning).
    func nonces() async throws -> [String] {
        switch store {
        case let sqlite as SQLiteVendorStore:
            return try await sqlite.pool.read { db in try RequestNonce.order(Column("nonce")).fetchAll(db) }.map(\.nonce)
        case let postgres as PostgresVendorStore:
            return try await postgres.read { db in
                var nonces: [String] = []
                for try await nonce in try await db.query("SELECT nonce FROM request_nonces ORDER BY nonce", logger: postgres.logger)
                    .decode(String.self) {
                    nonces.append(nonce)
                }
                return nonces
            }
        default:
            Issue.record("unknown store \(type(of: store))")
            return []
        }
    }
}

/// The PostgreSQL that `scripts/start-postgres` runs on loopback (`IOTGW_POSTGRES_URL` and
/// `IOTGW_POSTGRES_PASSWORD_FILE` point elsewhere).
enum TestPostgres {
    static let url = ProcessInfo.processInfo.environment["IOTGW_POSTGRES_URL"] ?? "postgres://iotd@127.0.0.1:5432/iotd"
    static let passwordFile = ProcessInfo.processInfo.environment["IOTGW_POSTGRES_PASSWORD_FILE"] ?? "/var/lib/iotgw-postgres/password"

    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    static var logger: Logger {
        var logger = Logger(label: "vendor-tests.postgres")
        logger.logLevel = .warning
        return logger
    }

    /// Settings for a fresh schema (`t_` and random hex).
    static func freshSettings() -> VendorConfiguration.PostgresSettings {
        let schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        return VendorConfiguration.PostgresSettings(url: url, passwordFile: passwordFile, schema: schema, maxConnections: 8)
    }

    /// A store on a fresh schema, dropped after `body`. Fails (never skips) when the server cannot be reached.
    static func withFreshStore<T: Sendable>(settings: VendorConfiguration.PostgresSettings = freshSettings(),
                                            _ body: (PostgresVendorStore) async throws -> T) async throws -> T {
        guard FileManager.default.isReadableFile(atPath: passwordFile) else {
            throw Unavailable(description: "no PostgreSQL password file \(passwordFile): run scripts/start-postgres")
        }
        return try await withReachable {
            try await PostgresVendorStore.withStore(settings: settings, create: true, logger: logger) { store in
                let result: Result<T, any Error>
                do { result = .success(try await body(store)) } catch { result = .failure(error) }
                try await store.client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(settings.schemaName) CASCADE"), logger: logger)
                return try result.get()
            }
        }
    }

    /// Errors that mean "no server" become ``Unavailable``, saying what to run.
    static func withReachable<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as PSQLError
            where error.code == .connectionError || (error.code == .server && error.serverInfo?[.sqlState] == "28P01") { // 28P01: bad password
            throw Unavailable(description: "PostgreSQL at \(url) refused or is not reachable (\(error)): run scripts/start-postgres")
        }
    }
}
