/// A failure talking to a Chef server, or preparing a request for one. Matchable by `code`;
/// keeps what the server said (its `error` array) in `messages`.
///
/// ```swift
/// catch let e as ChefError where e.code == .notFound { ... }
/// ```
public struct ChefError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// 400: the server rejected the request body or a field in it.
        public static let badRequest = Code("badRequest")
        /// 401: the signature did not verify, the clock is off by more than the allowed slew, or
        /// the user/client is unknown.
        public static let unauthorized = Code("unauthorized")
        /// 403: the identity is known but may not do this (a validator creating a node, a client
        /// changing another client's node).
        public static let forbidden = Code("forbidden")
        /// 404: the object does not exist.
        public static let notFound = Code("notFound")
        /// 406: the server does not support the requested `X-Ops-Server-API-Version`.
        public static let notAcceptable = Code("notAcceptable")
        /// 409: the object already exists.
        public static let conflict = Code("conflict")
        /// 413: the request body is larger than the server accepts.
        public static let payloadTooLarge = Code("payloadTooLarge")
        /// 5xx or any other status this client does not expect.
        public static let server = Code("server")
        /// The server could not be reached (refused, DNS, TLS).
        public static let unreachable = Code("unreachable")
        /// The request did not finish within its timeout.
        public static let timeout = Code("timeout")
        /// The server answered with something this client could not decode.
        public static let invalidResponse = Code("invalidResponse")
        /// A private key could not be loaded (not PEM, not RSA, too small).
        public static let invalidKey = Code("invalidKey")
        /// An argument was rejected before any request was sent.
        public static let invalidArgument = Code("invalidArgument")
        /// Signing failed (the canonical request does not fit the key, or the crypto library failed).
        public static let signingFailed = Code("signingFailed")
    }

    public var code: Code
    /// The HTTP status behind the error; 0 when no response was received.
    public var status: Int
    /// What the server said (each entry of its `error` array), or a description of the local failure.
    public var messages: [String]

    public init(code: Code, status: Int = 0, messages: [String]) {
        self.code = code
        self.status = status
        self.messages = messages
    }

    public init(code: Code, status: Int = 0, message: String) {
        self.init(code: code, status: status, messages: [message])
    }

    /// All messages joined with "; ".
    public var message: String { messages.joined(separator: "; ") }

    public var description: String {
        status == 0 ? "Chef \(code): \(message)" : "Chef \(code) (\(status)): \(message)"
    }

    static func fromHTTP(status: Int, messages: [String]) -> ChefError {
        let code: Code
        switch status {
        case 400: code = .badRequest
        case 401: code = .unauthorized
        case 403: code = .forbidden
        case 404: code = .notFound
        case 406: code = .notAcceptable
        case 409: code = .conflict
        case 413: code = .payloadTooLarge
        default: code = .server
        }
        return ChefError(code: code, status: status, messages: messages)
    }
}
