/// A failure talking to libudev. Matchable by `code`; keeps the errno libudev reported.
///
/// ```swift
/// catch let e as UdevError where e.code == .monitorUnavailable { ... }
/// ```
public struct UdevError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// `udev_new()` failed (out of memory, or no usable `/sys`).
        public static let contextUnavailable = Code("contextUnavailable")
        /// Creating, filtering or scanning a `udev_enumerate` failed.
        public static let enumerationFailed = Code("enumerationFailed")
        /// The netlink monitor could not be created, filtered or bound.
        public static let monitorUnavailable = Code("monitorUnavailable")
        /// `poll()` on the monitor socket failed; the event stream ends with this error.
        public static let receiveFailed = Code("receiveFailed")
        /// `events()` was called a second time on the same `UdevMonitor`.
        public static let alreadyConsumed = Code("alreadyConsumed")
        /// An argument was rejected before libudev was called.
        public static let invalidArgument = Code("invalidArgument")
    }

    public var code: Code
    /// The errno behind the failure (libudev returns `-errno`); 0 when there is none.
    public var errno: Int32
    /// What failed, in words.
    public var message: String

    public init(code: Code, errno: Int32 = 0, message: String) {
        self.code = code
        self.errno = errno
        self.message = message
    }

    public var description: String {
        errno == 0 ? "udev \(code): \(message)" : "udev \(code) (errno \(errno)): \(message)"
    }
}
