/// A failure talking to LXD. Matchable by `code`; keeps what LXD itself said in `message`.
///
/// ```swift
/// catch let e as LXDError where e.code == .notFound { ... }
/// ```
public struct LXDError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// LXD answered 400 (bad request, or a state that forbids the call, like "Instance is running").
        public static let badRequest = Code("badRequest")
        /// LXD answered 403.
        public static let forbidden = Code("forbidden")
        /// LXD answered 404.
        public static let notFound = Code("notFound")
        /// LXD answered 409: the object already exists.
        public static let conflict = Code("conflict")
        /// LXD answered 412: the ETag sent with `If-Match` is stale.
        public static let preconditionFailed = Code("preconditionFailed")
        /// LXD answered 500 or another unexpected status.
        public static let serverError = Code("serverError")
        /// An async operation ended in `Failure` (status_code 400); `message` is the operation's `err`.
        public static let operationFailed = Code("operationFailed")
        /// An async operation was cancelled (status_code 401).
        public static let operationCancelled = Code("operationCancelled")
        /// `exec` of a command that does not exist in the instance (LXD 5.0 fails the operation, exit 127).
        public static let commandNotFound = Code("commandNotFound")
        /// `exec` of a file that is not executable (LXD 5.0 fails the operation, exit 126).
        public static let commandNotExecutable = Code("commandNotExecutable")
        /// A name was rejected before any request was sent.
        public static let invalidName = Code("invalidName")
        /// An argument was rejected before any request was sent.
        public static let invalidArgument = Code("invalidArgument")
        /// The server lacks an API extension this client needs.
        public static let missingExtension = Code("missingExtension")
        /// The socket could not be reached (LXD not running, wrong path, no permission).
        public static let unreachable = Code("unreachable")
        /// A call or an operation did not finish within its deadline.
        public static let timeout = Code("timeout")
        /// LXD answered with something this client could not decode.
        public static let invalidResponse = Code("invalidResponse")
        /// An image's fingerprint is not the one expected.
        public static let fingerprintMismatch = Code("fingerprintMismatch")
        /// LXD no longer knows an operation this client was waiting on (404 on its `/wait`): LXD restarted
        /// while it ran, so whether it finished is unknown.
        public static let operationLost = Code("operationLost")
    }

    public var code: Code
    /// The HTTP status or LXD status code behind the error; 0 when no response was received.
    public var status: Int
    /// What LXD said (its `error` / operation `err`), or a description of the local failure.
    public var message: String

    public init(code: Code, status: Int = 0, message: String) {
        self.code = code
        self.status = status
        self.message = message
    }

    /// LXD was away (not running, restarting, or it died during the call): nothing LXD decided, so the
    /// call's effect is unknown and it should be tried again once LXD answers, not counted as a failure.
    /// `unreachable`, `operationLost`, and 503 (LXD answering before it is ready).
    public var isOutage: Bool {
        code == .unreachable || code == .operationLost || (code == .serverError && status == 503)
    }

    /// LXD refused because another operation on the same instance runs ("Instance is busy running a
    /// \"create\" operation", as an operation's failure or as a 400): nothing was done, and the call can
    /// be made again once that operation ends. LXD 5.0 words it so for starts, stops, restores and the like.
    public var isInstanceBusy: Bool {
        (code == .operationFailed || code == .badRequest) && message.contains("is busy running a")
    }

    /// LXD's per-instance file server (`forkfile`) dropped the connection mid-request ("read unix
    /// @->/proc/self/fd/N/forkfile.sock: read: connection reset by peer", a 500): an LXD fault seen now and
    /// then on a healthy instance (canonical/lxd#10448), not an answer about the file. A whole-file read
    /// or overwrite can simply be made again.
    public var isFileServerReset: Bool {
        code == .serverError && message.contains("forkfile.sock")
            && (message.contains("connection reset by peer") || message.contains("broken pipe") || message.hasSuffix("EOF"))
    }

    public var description: String {
        status == 0 ? "LXD \(code): \(message)" : "LXD \(code) (\(status)): \(message)"
    }

    static func fromHTTP(status: Int, message: String) -> LXDError {
        let code: Code
        switch status {
        case 400: code = .badRequest
        case 403: code = .forbidden
        case 404: code = .notFound
        case 409: code = .conflict
        case 412: code = .preconditionFailed
        // LXD 5.0 reports some duplicates (profiles, aliases) as a database error with status 500.
        case 500 where message.contains("already exists"): code = .conflict
        default: code = .serverError
        }
        return LXDError(code: code, status: status, message: message)
    }
}
