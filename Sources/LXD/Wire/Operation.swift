/// An LXD background operation (`definitions.LXDOperation`).
public struct LXDOperation: Sendable, Decodable {
    public var id: String
    public var `class`: String
    public var description: String
    public var status: String
    /// Numeric status: 103 running, 200 success, 400 failure, 401 cancelled (use this, not `status`).
    public var statusCode: Int
    public var resources: [String: [String]]?
    public var metadata: JSONValue?
    public var mayCancel: Bool
    public var err: String

    enum CodingKeys: String, CodingKey {
        case id, `class`, description, status, resources, metadata, err
        case statusCode = "status_code"
        case mayCancel = "may_cancel"
    }

    /// Whether the operation reached a final state.
    public var isFinal: Bool { [200, 400, 401].contains(statusCode) }
}
