import Foundation

/// The output of `inspec exec --reporter json-min:PATH`
/// (`lib/plugins/inspec-reporter-json-min/.../reporter.rb`).
///
/// Unlike the json reporter, `controls[]` holds **one entry per result**, not per control: a
/// control with three expectations appears three times. Group them with
/// ``InSpecMinReport/controlVerdicts()``.
public struct InSpecMinReport: Sendable, Hashable, Codable {
    public var controls: [Entry]
    public var statistics: InSpecReport.Statistics?
    public var version: String?

    enum CodingKeys: String, CodingKey {
        case controls
        case statistics
        case version
    }

    public init(controls: [Entry], statistics: InSpecReport.Statistics? = nil, version: String? = nil) {
        self.controls = controls
        self.statistics = statistics
        self.version = version
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        controls = try c.decode([Entry].self, forKey: .controls)
        statistics = c.lenient(InSpecReport.Statistics.self, forKey: .statistics)
        version = c.lenientString(forKey: .version)
    }

    /// Decodes a `json-min` reporter output.
    ///
    /// - Throws: ``InSpecError`` with code `.notJSON`, `.missingControls` (not an object with a
    ///   `controls` array) or `.invalidReport` (e.g. an entry without `id`).
    public static func decode(from data: Data) throws -> InSpecMinReport {
        try ReportDecoding.decode(
            InSpecMinReport.self, from: data, requiredArray: "controls", missingCode: .missingControls,
            reporter: "json-min")
    }
}

extension InSpecMinReport {
    /// One entry of json-min `controls[]`: one result of one control.
    public struct Entry: Sendable, Hashable, Codable {
        /// The control ID (shared by all results of that control).
        public var id: String
        /// The profile `name`.
        public var profileID: String?
        public var profileSHA256: String?
        public var status: ResultStatus
        public var codeDesc: String
        public var skipMessage: String?
        public var resource: String?
        public var message: String?
        public var exception: String?
        public var backtrace: [String]?

        enum CodingKeys: String, CodingKey {
            case id
            case profileID = "profile_id"
            case profileSHA256 = "profile_sha256"
            case status
            case codeDesc = "code_desc"
            case skipMessage = "skip_message"
            case resource
            case message
            case exception
            case backtrace
        }

        public init(id: String, profileID: String? = nil, status: ResultStatus, codeDesc: String,
                    message: String? = nil, skipMessage: String? = nil) {
            self.id = id
            self.profileID = profileID
            self.status = status
            self.codeDesc = codeDesc
            self.message = message
            self.skipMessage = skipMessage
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            profileID = c.lenientString(forKey: .profileID)
            profileSHA256 = c.lenientString(forKey: .profileSHA256)
            status = c.lenient(ResultStatus.self, forKey: .status) ?? .other("")
            codeDesc = c.lenientString(forKey: .codeDesc) ?? ""
            skipMessage = c.lenientString(forKey: .skipMessage)
            resource = c.lenientString(forKey: .resource)
            message = c.lenientString(forKey: .message)
            exception = c.lenientString(forKey: .exception)
            backtrace = c.lenient([String].self, forKey: .backtrace)
        }

        /// This entry as a json-reporter ``InSpecReport/ControlResult``.
        public var asResult: InSpecReport.ControlResult {
            var r = InSpecReport.ControlResult(status: status, codeDesc: codeDesc, message: message, skipMessage: skipMessage,
                                  exception: exception)
            r.resource = resource
            r.backtrace = backtrace
            return r
        }
    }
}
