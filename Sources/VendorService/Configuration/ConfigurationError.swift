/// Why a configuration file was refused. Matchable by `code`; `field` names the offending field
/// (`models[0].vendorID`) when there is one.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// The file could not be read.
        public static let unreadable = Code("unreadable")
        /// Not YAML, or a field is missing or of the wrong type.
        public static let malformed = Code("malformed")
        /// A field is present but its value is not allowed.
        public static let invalidField = Code("invalidField")
    }

    public var code: Code
    public var field: String?
    public var message: String
    /// The file, when the error came from loading one.
    public var path: String?

    public init(_ code: Code, field: String? = nil, _ message: String, path: String? = nil) {
        self.code = code
        self.field = field
        self.message = message
        self.path = path
    }

    public var description: String {
        var s = path.map { "\($0): " } ?? ""
        if let field { s += "\(field): " }
        return s + message
    }
}
