/// `GET /1.0/images/<fingerprint>` (`definitions.Image`).
public struct Image: Sendable, Decodable {
    public struct Alias: Sendable, Decodable, Hashable {
        public var name: String
        public var description: String
    }
    public var fingerprint: String
    public var filename: String
    public var size: Int64
    public var architecture: String
    public var aliases: [Alias]
    public var properties: [String: String]
    public var `public`: Bool
    public var uploadedAt: String
    /// When an instance was last created from it (LXD's zero time `0001-01-01...` if never).
    public var lastUsedAt: String?
    public var type: String

    enum CodingKeys: String, CodingKey {
        case fingerprint, filename, size, architecture, aliases, properties, `public`, type
        case uploadedAt = "uploaded_at"
        case lastUsedAt = "last_used_at"
    }
}

/// `GET /1.0/images/aliases/<name>` (`definitions.ImageAliasesEntry`).
public struct ImageAlias: Sendable, Decodable, Hashable {
    public var name: String
    public var description: String
    public var target: String
    public var type: String?
}

struct ImageAliasesPost: Encodable {
    var name: String
    var description: String
    var target: String
}
