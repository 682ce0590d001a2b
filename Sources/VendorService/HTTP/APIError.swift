import Foundation
import GatewayProtocol
import Hummingbird

/// An error the daemon answers with: an HTTP status and `ErrorBody` JSON with a stable `code`.
/// Matchable by `code`: `catch let e as APIError where e.code == .notGenuine`.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let raw: String
        public init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// 403: the device is not in the vendor's registry, or its USB IDs differ from the registered ones.
        public static let notGenuine = Code("notGenuine")
        /// 403: no gateway with that id is enrolled.
        public static let unknownGateway = Code("unknownGateway")
        /// 401: signature headers missing, signature does not verify (for this vendor and one of its hosts), or
        /// timestamp too far from now.
        public static let badSignature = Code("badSignature")
        /// 401: the request is signed for another vendor (its `X-IoTGW-Vendor` audience is not this daemon's vendor).
        public static let wrongAudience = Code("wrongAudience")
        /// 401: the request's nonce was already used by this gateway (a replay).
        public static let replayedRequest = Code("replayedRequest")
        /// 401: a session request's ticket expired or its MAC does not verify (the gateway's key changed, or
        /// the ticket is not this vendor's): the gateway opens a new session (`RequestSession`).
        public static let badSession = Code("badSession")
        /// 400: the signed gateway id differs from the one in the body.
        public static let gatewayMismatch = Code("gatewayMismatch")
        /// 400: the report names another vendor.
        public static let wrongVendor = Code("wrongVendor")
        /// 400: the body is not the expected JSON.
        public static let malformed = Code("malformed")
        /// 400: a field is not valid (see `Fields`: control characters, too long, out of range...); the message
        /// names the field and quotes the value escaped.
        public static let invalidField = Code("invalidField")
        /// 413: the body is over the limit.
        public static let tooLarge = Code("tooLarge")
        /// 409: the device is genuine but the catalog has no model for it.
        public static let unknownModel = Code("unknownModel")
        /// 409: the gateway has no plan yet (it never announced a genuine device).
        public static let noPlan = Code("noPlan")
        /// 409: a bootstrap asks for a plan version that is not the gateway's current plan; the message names
        /// the current version (the gateway polls its plan, then bootstraps for that version).
        public static let planVersionMismatch = Code("planVersionMismatch")
        /// 503: the vendor's Chef server cannot be reached or fails; the gateway retries later.
        public static let chefUnavailable = Code("chefUnavailable")
        /// 404: no such endpoint.
        public static let notFound = Code("notFound")
        /// 405: the endpoint exists, the method does not.
        public static let methodNotAllowed = Code("methodNotAllowed")
        /// 500: the daemon failed; details are in its log, not in the answer.
        public static let `internal` = Code("internal")
    }

    public var code: Code
    public var status: HTTPResponse.Status
    public var message: String

    public init(_ code: Code, status: HTTPResponse.Status, _ message: String) {
        self.code = code
        self.status = status
        self.message = message
    }

    public var body: ErrorBody { ErrorBody(code: code.raw, message: message) }
    public var description: String { "\(status.code) \(code): \(message)" }

    static func notGenuine(_ message: String) -> APIError { APIError(.notGenuine, status: .forbidden, message) }
    static func unknownGateway(_ message: String) -> APIError { APIError(.unknownGateway, status: .forbidden, message) }
    static func badSignature(_ message: String) -> APIError { APIError(.badSignature, status: .unauthorized, message) }
    static func malformed(_ message: String) -> APIError { APIError(.malformed, status: .badRequest, message) }
    /// 400 `invalidField` with the message of the `Fields` rule that refused the value (it quotes the value escaped).
    static func invalidField(_ error: ProtocolError) -> APIError { APIError(.invalidField, status: .badRequest, error.message) }

    /// Runs field checks, answering a refused field as 400 `invalidField`.
    static func checkingFields<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as ProtocolError { throw invalidField(error) }
    }
    static let internalError = APIError(.internal, status: .internalServerError, "internal error")
}

extension APIError: HTTPResponseError {
    public var headers: HTTPFields { [:] }

    public func response(from request: Request, context: some RequestContext) throws -> Response { response() }

    func response() -> Response {
        // ErrorBody is two strings: encoding it cannot fail; the fallback only keeps the status.
        let json = (try? WireJSON.encoder().encode(body)) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: json)))
    }
}
