/// `GET /1.0/profiles/<name>` (`definitions.Profile`).
public struct Profile: Sendable, Decodable {
    public var name: String
    public var description: String
    public var config: [String: String]
    public var devices: [String: Device]
    /// Instances using this profile (URLs).
    public var usedBy: [String]?

    enum CodingKeys: String, CodingKey {
        case name, description, config, devices
        case usedBy = "used_by"
    }

    public var put: ProfilePut { ProfilePut(description: description, config: config, devices: devices) }
}

/// `PUT /1.0/profiles/<name>` (`definitions.ProfilePut`); also the shape of a profile YAML in `profiles/`.
public struct ProfilePut: Sendable, Codable, Equatable {
    public var description: String
    public var config: [String: String]
    public var devices: [String: Device]

    public init(description: String = "", config: [String: String] = [:], devices: [String: Device] = [:]) {
        self.description = description
        self.config = config
        self.devices = devices
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
        config = try c.decodeIfPresent([String: String].self, forKey: .config) ?? [:]
        devices = try c.decodeIfPresent([String: Device].self, forKey: .devices) ?? [:]
    }

    enum CodingKeys: String, CodingKey { case description, config, devices }
}

/// `POST /1.0/profiles` (`definitions.ProfilesPost`).
struct ProfilesPost: Encodable {
    var name: String
    var description: String
    var config: [String: String]
    var devices: [String: Device]
}
