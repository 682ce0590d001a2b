/// A Chef node as `GET/PUT/POST /nodes` exchange it: `Chef::Node#for_json` in `lib/chef/node.rb`.
///
/// Request bodies are written in Chef's key order (`name`, `chef_environment`, `json_class`,
/// `automatic`, `normal`, `chef_type`, `default`, `override`, `run_list`, then
/// `policy_name`/`policy_group` only when set), which is also what knife bootstrap sends.
public struct ChefNode: Codable, Sendable, Equatable {
    public var name: String
    public var chefEnvironment: String
    public var jsonClass: String
    public var automatic: [String: ChefJSONValue]
    /// Attributes set on the node itself; first-boot attributes and `tags` live here.
    public var normal: [String: ChefJSONValue]
    public var chefType: String
    public var `default`: [String: ChefJSONValue]
    public var override: [String: ChefJSONValue]
    /// Entries like `recipe[base]`, `role[web]`.
    public var runList: [String]
    public var policyName: String?
    public var policyGroup: String?

    enum CodingKeys: String, CodingKey {
        case name
        case chefEnvironment = "chef_environment"
        case jsonClass = "json_class"
        case automatic, normal
        case chefType = "chef_type"
        case `default`, override
        case runList = "run_list"
        case policyName = "policy_name"
        case policyGroup = "policy_group"
    }

    /// A new node as knife bootstrap creates it.
    /// - Parameters:
    ///   - normal: first-boot attributes (`--json-attributes`).
    ///   - tags: stored as `normal.tags`, like `knife bootstrap --tags`.
    public init(name: String, runList: [String] = [], environment: String = "_default",
                normal: [String: ChefJSONValue] = [:], tags: [String] = [],
                policyName: String? = nil, policyGroup: String? = nil) {
        self.name = name
        self.chefEnvironment = environment
        self.jsonClass = "Chef::Node"
        self.automatic = [:]
        self.normal = normal
        self.chefType = "node"
        self.default = [:]
        self.override = [:]
        self.runList = runList
        self.policyName = policyName
        self.policyGroup = policyGroup
        if !tags.isEmpty { self.tags = tags }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        chefEnvironment = try c.decodeIfPresent(String.self, forKey: .chefEnvironment) ?? "_default"
        jsonClass = try c.decodeIfPresent(String.self, forKey: .jsonClass) ?? "Chef::Node"
        automatic = try c.decodeIfPresent([String: ChefJSONValue].self, forKey: .automatic) ?? [:]
        normal = try c.decodeIfPresent([String: ChefJSONValue].self, forKey: .normal) ?? [:]
        chefType = try c.decodeIfPresent(String.self, forKey: .chefType) ?? "node"
        self.default = try c.decodeIfPresent([String: ChefJSONValue].self, forKey: .default) ?? [:]
        override = try c.decodeIfPresent([String: ChefJSONValue].self, forKey: .override) ?? [:]
        runList = try c.decodeIfPresent([String].self, forKey: .runList) ?? []
        policyName = try c.decodeIfPresent(String.self, forKey: .policyName)
        policyGroup = try c.decodeIfPresent(String.self, forKey: .policyGroup)
    }

    /// `normal.tags` (what `knife tag` and `tag()` in recipes use).
    public var tags: [String] {
        get { normal["tags"]?.arrayValue?.compactMap(\.stringValue) ?? [] }
        set { normal["tags"] = .array(newValue.map { .string($0) }) }
    }

    /// The node as a compact JSON object in Chef's key order (nested keys sorted).
    func orderedJSON() throws -> String {
        var members: [(String, String)] = [
            ("name", try JSONText.encode(name)),
            ("chef_environment", try JSONText.encode(chefEnvironment)),
            ("json_class", try JSONText.encode(jsonClass)),
            ("automatic", try JSONText.encode(automatic)),
            ("normal", try JSONText.encode(normal)),
            ("chef_type", try JSONText.encode(chefType)),
            ("default", try JSONText.encode(self.default)),
            ("override", try JSONText.encode(override)),
            ("run_list", try JSONText.encode(runList)),
        ]
        if let policyName { members.append(("policy_name", try JSONText.encode(policyName))) }
        if let policyGroup { members.append(("policy_group", try JSONText.encode(policyGroup))) }
        return JSONText.object(members)
    }
}
