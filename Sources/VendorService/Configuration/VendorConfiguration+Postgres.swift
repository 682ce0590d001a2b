import Foundation

extension VendorConfiguration {
    /// The `postgres:` section: when present, `iot-daemon` keeps its state in PostgreSQL (``PostgresVendorStore``)
    /// instead of the SQLite file `database`. Any number of `iot-daemon serve` replicas may share one database.
    ///
    /// ```yaml
    /// postgres:
    ///   url: postgres://iotd@127.0.0.1:5432/iotd            # postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
    ///   passwordFile: /var/lib/iotgw-postgres/password      # optional: the password, instead of in the URL
    ///   schema: acme                                        # optional (default public): where the tables live
    ///   maxConnections: 20                                  # optional: the pool size of each process
    /// ```
    ///
    /// The connection is not encrypted (loopback or a private network); a relative `passwordFile` is resolved
    /// against the configuration file's folder.
    public struct PostgresSettings: Sendable, Codable, Equatable {
        public var url: String
        public var passwordFile: String?
        public var schema: String?
        public var maxConnections: Int?

        public init(url: String, passwordFile: String? = nil, schema: String? = nil, maxConnections: Int? = nil) {
            self.url = url
            self.passwordFile = passwordFile
            self.schema = schema
            self.maxConnections = maxConnections
        }

        enum CodingKeys: String, CodingKey { case url, passwordFile, schema, maxConnections }

        public static let defaultMaxConnections = 20

        /// Where and as whom to connect, from ``url``.
        public struct Endpoint: Sendable, Equatable {
            public var host: String
            public var port: Int
            public var user: String
            public var password: String?
            public var database: String
        }

        /// ``url`` taken apart; the database defaults to the user's name, the port to 5432.
        public var endpoint: Endpoint {
            get throws {
                guard let c = URLComponents(string: url), c.scheme == "postgres" || c.scheme == "postgresql",
                      let host = c.host, !host.isEmpty, let user = c.user, !user.isEmpty else {
                    throw ConfigurationError(.invalidField, field: "postgres.url", "must be postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
                }
                var database = c.path
                while database.hasPrefix("/") { database.removeFirst() }
                return Endpoint(host: host, port: c.port ?? 5432, user: c.user ?? user, password: c.password,
                                database: database.isEmpty ? user : database)
            }
        }

        /// The table schema, `public` unless set.
        public var schemaName: String { schema ?? "public" }

        /// Checks the section; throws a ``ConfigurationError`` naming the bad field.
        public func validate() throws {
            _ = try endpoint
            guard Self.isIdentifier(schemaName) else {
                throw ConfigurationError(.invalidField, field: "postgres.schema", "must match [a-z_][a-z0-9_]{0,62}")
            }
            if let maxConnections, !(1...1000).contains(maxConnections) {
                throw ConfigurationError(.invalidField, field: "postgres.maxConnections", "must be 1-1000")
            }
        }

        /// A lowercase SQL identifier that needs no quoting (the schema name is written into statements).
        static func isIdentifier(_ s: String) -> Bool {
            guard let first = s.utf8.first, s.utf8.count <= 63, first == UInt8(ascii: "_") || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first)
            else { return false }
            return s.utf8.allSatisfy { $0 == UInt8(ascii: "_") || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        }
    }
}
