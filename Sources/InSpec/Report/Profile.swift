extension InSpecReport {
    /// One entry of `profiles[]` (schema "Exec JSON Profile").
    public struct Profile: Sendable, Hashable, Codable {
        /// The profile's `name` from `inspec.yml`; nil for a bare `.rb` file run without metadata.
        public var name: String?
        public var version: String?
        public var sha256: String?
        public var title: String?
        public var maintainer: String?
        public var summary: String?
        public var license: String?
        public var copyright: String?
        public var copyrightEmail: String?
        public var supports: [InSpecJSONValue]
        /// The inputs (called attributes before InSpec 4).
        public var attributes: [InSpecJSONValue]
        /// Set on dependency profiles: the `name` of the profile that depends on this one.
        public var parentProfile: String?
        public var depends: [Dependency]
        public var groups: [ControlGroup]
        public var controls: [Control]
        /// `loaded`, `failed` (could not be loaded; see ``statusMessage``) or `skipped`
        /// (platform not supported). Missing in InSpec 1.x and 2.x reports.
        public var status: String?
        /// Why the profile failed or was skipped.
        public var statusMessage: String?
        /// Deprecated upstream in favour of `status_message`; still written by some versions.
        public var skipMessage: String?
        public var waiverData: InSpecJSONValue?

        enum CodingKeys: String, CodingKey {
            case name
            case version
            case sha256
            case title
            case maintainer
            case summary
            case license
            case copyright
            case copyrightEmail = "copyright_email"
            case supports
            case attributes
            case parentProfile = "parent_profile"
            case depends
            case groups
            case controls
            case status
            case statusMessage = "status_message"
            case skipMessage = "skip_message"
            case waiverData = "waiver_data"
        }

        /// Profile `status` values written by InSpec ≥ 3.
        public enum LoadStatus {
            public static let loaded = "loaded"
            public static let failed = "failed"
            public static let skipped = "skipped"
        }

        public init(name: String?, version: String? = nil, sha256: String? = nil, title: String? = nil,
                    parentProfile: String? = nil, depends: [Dependency] = [], controls: [Control] = [],
                    status: String? = nil, statusMessage: String? = nil) {
            self.name = name
            self.version = version
            self.sha256 = sha256
            self.title = title
            self.supports = []
            self.attributes = []
            self.parentProfile = parentProfile
            self.depends = depends
            self.groups = []
            self.controls = controls
            self.status = status
            self.statusMessage = statusMessage
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = c.lenientString(forKey: .name)
            version = c.lenientString(forKey: .version)
            sha256 = c.lenientString(forKey: .sha256)
            title = c.lenientString(forKey: .title)
            maintainer = c.lenientString(forKey: .maintainer)
            summary = c.lenientString(forKey: .summary)
            license = c.lenientString(forKey: .license)
            copyright = c.lenientString(forKey: .copyright)
            copyrightEmail = c.lenientString(forKey: .copyrightEmail)
            supports = c.lenientArray(InSpecJSONValue.self, forKey: .supports)
            attributes = c.lenientArray(InSpecJSONValue.self, forKey: .attributes)
            parentProfile = c.lenientString(forKey: .parentProfile)
            depends = c.lenientArray(Dependency.self, forKey: .depends)
            groups = c.lenientArray(ControlGroup.self, forKey: .groups)
            // Strict: a malformed control must not vanish from the verdict. Missing or null means none.
            controls = try c.decodeIfPresent([Control].self, forKey: .controls) ?? []
            status = c.lenientString(forKey: .status)
            statusMessage = c.lenientString(forKey: .statusMessage)
            skipMessage = c.lenientString(forKey: .skipMessage)
            waiverData = c.lenient(InSpecJSONValue.self, forKey: .waiverData)
        }

        /// True for a dependency profile (it has a ``parentProfile``).
        public var isDependency: Bool { parentProfile != nil }
    }

    /// One entry of a profile's `depends[]` (schema "Dependency"): where a dependency came from.
    public struct Dependency: Sendable, Hashable, Codable {
        public var name: String?
        public var url: String?
        public var path: String?
        public var git: String?
        public var branch: String?
        public var tag: String?
        public var commit: String?
        public var version: String?
        public var supermarket: String?
        public var compliance: String?
        public var status: String?
        public var statusMessage: String?
        public var skipMessage: String?

        enum CodingKeys: String, CodingKey {
            case name
            case url
            case path
            case git
            case branch
            case tag
            case commit
            case version
            case supermarket
            case compliance
            case status
            case statusMessage = "status_message"
            case skipMessage = "skip_message"
        }

        public init(name: String? = nil, url: String? = nil, path: String? = nil) {
            self.name = name
            self.url = url
            self.path = path
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = c.lenientString(forKey: .name)
            url = c.lenientString(forKey: .url)
            path = c.lenientString(forKey: .path)
            git = c.lenientString(forKey: .git)
            branch = c.lenientString(forKey: .branch)
            tag = c.lenientString(forKey: .tag)
            commit = c.lenientString(forKey: .commit)
            version = c.lenientString(forKey: .version)
            supermarket = c.lenientString(forKey: .supermarket)
            compliance = c.lenientString(forKey: .compliance)
            status = c.lenientString(forKey: .status)
            statusMessage = c.lenientString(forKey: .statusMessage)
            skipMessage = c.lenientString(forKey: .skipMessage)
        }
    }

    /// One entry of a profile's `groups[]` (schema "Control Group"): the controls of one file.
    public struct ControlGroup: Sendable, Hashable, Codable {
        public var id: String?
        public var title: String?
        public var controls: [String]

        enum CodingKeys: String, CodingKey {
            case id
            case title
            case controls
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = c.lenientString(forKey: .id)
            title = c.lenientString(forKey: .title)
            controls = c.lenientArray(String.self, forKey: .controls)
        }
    }
}
