extension InSpecReport {
    /// One entry of a profile's `controls[]` (schema "Exec JSON Control").
    public struct Control: Sendable, Hashable, Codable {
        /// The control ID: the string after `control` in the profile, or
        /// `(generated from FILE:LINE HASH)` for a bare `describe` outside any control.
        public var id: String
        public var title: String?
        public var desc: String?
        public var descriptions: [ControlDescription]
        /// Severity from 0.0 to 1.0 (InSpec converts `none`/`low`/`medium`/`high`/`critical`).
        public var impact: Double?
        public var refs: [InSpecJSONValue]
        public var tags: [String: InSpecJSONValue]
        public var code: String?
        public var sourceLocation: SourceLocation?
        public var waiverData: InSpecJSONValue?
        /// One entry per `it`/`its` expectation that ran; empty when nothing ran.
        public var results: [ControlResult]
        /// Only with `--enhanced-outcomes`: `passed|failed|error|not_applicable|not_reviewed`.
        /// Informational; verdicts are computed from ``results``.
        public var status: String?

        enum CodingKeys: String, CodingKey {
            case id
            case title
            case desc
            case descriptions
            case impact
            case refs
            case tags
            case code
            case sourceLocation = "source_location"
            case waiverData = "waiver_data"
            case results
            case status
        }

        public init(id: String, title: String? = nil, desc: String? = nil, impact: Double? = nil,
                    tags: [String: InSpecJSONValue] = [:], results: [ControlResult] = []) {
            self.id = id
            self.title = title
            self.desc = desc
            self.descriptions = []
            self.impact = impact
            self.refs = []
            self.tags = tags
            self.results = results
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            title = c.lenientString(forKey: .title)
            desc = c.lenientString(forKey: .desc)
            descriptions = c.lenientArray(ControlDescription.self, forKey: .descriptions)
            impact = c.lenient(Double.self, forKey: .impact)
            refs = c.lenientArray(InSpecJSONValue.self, forKey: .refs)
            tags = c.lenient([String: InSpecJSONValue].self, forKey: .tags) ?? [:]
            code = c.lenientString(forKey: .code)
            sourceLocation = c.lenient(SourceLocation.self, forKey: .sourceLocation)
            waiverData = c.lenient(InSpecJSONValue.self, forKey: .waiverData)
            // Strict: a malformed result must not silently turn a failure into "no tests".
            results = try c.decodeIfPresent([ControlResult].self, forKey: .results) ?? []
            status = c.lenientString(forKey: .status)
        }

        /// True for a control InSpec generated for a `describe` outside any `control` block.
        public var isAnonymous: Bool { id.hasPrefix("(generated from ") }
    }

    /// One entry of `descriptions[]` (schema "Control Description"), e.g. `{label: "fix", data: ...}`.
    public struct ControlDescription: Sendable, Hashable, Codable {
        public var label: String
        public var data: String

        enum CodingKeys: String, CodingKey {
            case label
            case data
        }

        public init(label: String, data: String) {
            self.label = label
            self.data = data
        }
    }

    /// `source_location` (schema "Source Location").
    public struct SourceLocation: Sendable, Hashable, Codable {
        public var ref: String?
        public var line: Int?

        enum CodingKeys: String, CodingKey {
            case ref
            case line
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            ref = c.lenientString(forKey: .ref)
            line = c.lenient(Int.self, forKey: .line)
        }
    }

    /// One entry of a control's `results[]` (schema "Control Result"): one expectation.
    public struct ControlResult: Sendable, Hashable, Codable {
        /// Missing `status` decodes as `.other("")`, which verdicts count as an error.
        public var status: ResultStatus
        /// What was tested, e.g. `File /etc/hosts mode should eq 420`.
        public var codeDesc: String
        /// Seconds.
        public var runTime: Double?
        /// As InSpec wrote it (format varies by version: `2018-01-05 11:43:04 -0500`, ISO 8601).
        public var startTime: String?
        public var resource: String?
        /// Why the expectation failed.
        public var message: String?
        public var skipMessage: String?
        /// The exception class, for `error` results.
        public var exception: String?
        public var backtrace: [String]?
        public var resourceClass: String?
        public var resourceParams: String?
        public var resourceID: String?
        public var resourceTitle: String?

        enum CodingKeys: String, CodingKey {
            case status
            case codeDesc = "code_desc"
            case runTime = "run_time"
            case startTime = "start_time"
            case resource
            case message
            case skipMessage = "skip_message"
            case exception
            case backtrace
            case resourceClass = "resource_class"
            case resourceParams = "resource_params"
            case resourceID = "resource_id"
            case resourceTitle = "resource_title"
        }

        public init(status: ResultStatus, codeDesc: String, message: String? = nil, skipMessage: String? = nil,
                    exception: String? = nil) {
            self.status = status
            self.codeDesc = codeDesc
            self.message = message
            self.skipMessage = skipMessage
            self.exception = exception
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            status = c.lenient(ResultStatus.self, forKey: .status) ?? .other("")
            codeDesc = c.lenientString(forKey: .codeDesc) ?? ""
            runTime = c.lenient(Double.self, forKey: .runTime)
            startTime = c.lenientString(forKey: .startTime)
            resource = c.lenientString(forKey: .resource)
            message = c.lenientString(forKey: .message)
            skipMessage = c.lenientString(forKey: .skipMessage)
            exception = c.lenientString(forKey: .exception)
            backtrace = c.lenient([String].self, forKey: .backtrace)
            resourceClass = c.lenientString(forKey: .resourceClass)
            resourceParams = c.lenientString(forKey: .resourceParams)
            resourceID = c.lenientString(forKey: .resourceID)
            resourceTitle = c.lenientString(forKey: .resourceTitle)
        }
    }
}
