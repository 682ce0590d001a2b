/// The `status` of one result (`primitives.rb` STATUS: `passed|failed|skipped|error`).
/// Anything else is kept as ``other(_:)`` and treated like an error by verdicts.
public enum ResultStatus: Sendable, Hashable, Codable, CustomStringConvertible {
    case passed
    case failed
    case skipped
    /// The expectation raised (e.g. a resource could not be queried); see ``InSpecReport/ControlResult/exception``.
    case error
    case other(String)

    public init(rawValue: String) {
        switch rawValue {
        case "passed": self = .passed
        case "failed": self = .failed
        case "skipped": self = .skipped
        case "error": self = .error
        default: self = .other(rawValue)
        }
    }

    public var rawValue: String {
        switch self {
        case .passed: "passed"
        case .failed: "failed"
        case .skipped: "skipped"
        case .error: "error"
        case .other(let s): s
        }
    }

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
