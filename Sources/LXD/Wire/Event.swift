/// One message of `/1.0/events` (`api.Event`).
public struct Event: Sendable, Decodable {
    /// `lifecycle`, `operation` or `logging`.
    public var type: String
    public var timestamp: String
    public var project: String?
    public var location: String?
    public var metadata: JSONValue

    /// For lifecycle events: the action, e.g. `instance-started`.
    public var action: String? { metadata["action"]?.stringValue }
    /// For lifecycle events: the object's URL, e.g. `/1.0/instances/c1`.
    public var source: String? { metadata["source"]?.stringValue }
}

/// Event types that `/1.0/events?type=` accepts.
public enum EventType: String, Sendable {
    case lifecycle, operation, logging
}
