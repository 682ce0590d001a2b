/// LXD's response envelope (`api.ResponseRaw`): every field is always present.
struct ResponseEnvelope<Metadata: Decodable>: Decodable {
    var type: String
    var status: String
    var statusCode: Int
    var operation: String
    var errorCode: Int
    var error: String
    var metadata: Metadata?

    enum CodingKeys: String, CodingKey {
        case type, status, operation, error, metadata
        case statusCode = "status_code"
        case errorCode = "error_code"
    }
}

/// Decodes only the error part of an envelope, whatever the metadata is.
struct ErrorEnvelope: Decodable {
    var type: String?
    var errorCode: Int?
    var error: String?

    enum CodingKeys: String, CodingKey {
        case type, error
        case errorCode = "error_code"
    }
}

/// A placeholder for metadata the caller does not read.
struct Ignored: Decodable {
    init(from decoder: any Decoder) throws {}
}
