/// A failure reading an InSpec report or building an InSpec command. Matchable by `code`.
///
/// ```swift
/// catch let e as InSpecError where e.code == .missingProfiles { ... }
/// ```
public struct InSpecError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// The bytes are not JSON at all (empty output, a Ruby stack trace, a truncated file).
        public static let notJSON = Code("notJSON")
        /// JSON, but not an object with a `profiles` array: not a `json` reporter output.
        public static let missingProfiles = Code("missingProfiles")
        /// JSON, but not an object with a `controls` array: not a `json-min` reporter output.
        public static let missingControls = Code("missingControls")
        /// A report whose shape is wrong in a place that matters (e.g. a control without `id`).
        public static let invalidReport = Code("invalidReport")
        /// An argument rejected before building a command line.
        public static let invalidArgument = Code("invalidArgument")
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "InSpec \(code): \(message)" }
}
