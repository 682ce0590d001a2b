import Foundation

/// The output of `inspec exec --reporter json:PATH` (InSpec's `lib/inspec/reporters/json.rb`,
/// schema `lib/inspec/schema/exec_json.rb` "Exec JSON Output").
///
/// Field names follow the upstream keys through explicit `CodingKeys`. Unknown keys are ignored
/// and missing optional keys decode as nil or empty, so reports from InSpec 1.x to 7.x all load;
/// only a missing `profiles` array (or non-JSON input) is an error. Decode with
/// ``decode(from:)`` to get an ``InSpecError`` instead of a raw `DecodingError`.
public struct InSpecReport: Sendable, Hashable, Codable {
    public var platform: Platform?
    /// Every profile that ran: the ones named on the command line and, after them, each of their
    /// dependencies (those carry ``Profile/parentProfile``).
    public var profiles: [Profile]
    public var statistics: Statistics?
    /// The InSpec version that wrote the report.
    public var version: String?
    /// Free-form data passed through from the configuration (`passthrough`), if any.
    public var passthrough: InSpecJSONValue?

    enum CodingKeys: String, CodingKey {
        case platform
        case profiles
        case statistics
        case version
        case passthrough
    }

    public init(platform: Platform? = nil, profiles: [Profile], statistics: Statistics? = nil,
                version: String? = nil, passthrough: InSpecJSONValue? = nil) {
        self.platform = platform
        self.profiles = profiles
        self.statistics = statistics
        self.version = version
        self.passthrough = passthrough
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        platform = c.lenient(Platform.self, forKey: .platform)
        profiles = try c.decode([Profile].self, forKey: .profiles)
        statistics = c.lenient(Statistics.self, forKey: .statistics)
        version = c.lenientString(forKey: .version)
        passthrough = c.lenient(InSpecJSONValue.self, forKey: .passthrough)
    }

    /// Decodes a `json` reporter output.
    ///
    /// - Throws: ``InSpecError`` with code `.notJSON` when `data` is not JSON, `.missingProfiles`
    ///   when it is not an object with a `profiles` array, `.invalidReport` when a profile or
    ///   control lacks a field verdicts need (such as a control's `id`).
    public static func decode(from data: Data) throws -> InSpecReport {
        try ReportDecoding.decode(
            InSpecReport.self, from: data, requiredArray: "profiles", missingCode: .missingProfiles, reporter: "json")
    }
}

extension InSpecReport {
    /// Where the profiles ran (`platform`: schema "Platform").
    public struct Platform: Sendable, Hashable, Codable {
        /// Platform name, e.g. `debian`.
        public var name: String?
        /// Platform release, e.g. `12.5`.
        public var release: String?
        /// `--target-id`, or `""` when none was given.
        public var targetID: String?

        enum CodingKeys: String, CodingKey {
            case name
            case release
            case targetID = "target_id"
        }

        public init(name: String? = nil, release: String? = nil, targetID: String? = nil) {
            self.name = name
            self.release = release
            self.targetID = targetID
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = c.lenientString(forKey: .name)
            release = c.lenientString(forKey: .release)
            targetID = c.lenientString(forKey: .targetID)
        }
    }

    /// Run statistics (`statistics`). The json reporter only writes `duration`; per-status counts
    /// must be computed from results (see ``InSpecReport/controlVerdicts()``).
    public struct Statistics: Sendable, Hashable, Codable {
        /// Seconds the whole run took.
        public var duration: Double?
        /// Per-status control totals, present only in some reporter variants (schema "Statistic Hash").
        public var controls: ControlStatistics?

        enum CodingKeys: String, CodingKey {
            case duration
            case controls
        }

        public init(duration: Double? = nil, controls: ControlStatistics? = nil) {
            self.duration = duration
            self.controls = controls
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            duration = c.lenient(Double.self, forKey: .duration)
            controls = c.lenient(ControlStatistics.self, forKey: .controls)
        }
    }

    /// `statistics.controls`: `{passed: {total}, skipped: {total}, failed: {total}}`.
    public struct ControlStatistics: Sendable, Hashable, Codable {
        public struct Total: Sendable, Hashable, Codable {
            public var total: Int
            public init(total: Int) { self.total = total }
        }

        public var passed: Total?
        public var skipped: Total?
        public var failed: Total?

        enum CodingKeys: String, CodingKey {
            case passed
            case skipped
            case failed
        }

        public init(passed: Total? = nil, skipped: Total? = nil, failed: Total? = nil) {
            self.passed = passed
            self.skipped = skipped
            self.failed = failed
        }
    }
}
