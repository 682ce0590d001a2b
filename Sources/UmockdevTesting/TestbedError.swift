/// A testbed operation that was rejected or failed. Matchable by `code`.
public struct TestbedError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// umockdev's preload library is not installed: install the `umockdev` / `libumockdev0` packages.
        public static let umockdevMissing = Code("umockdevMissing")
        /// A device with that path or class name already exists in the testbed.
        public static let deviceExists = Code("deviceExists")
        /// No device at that syspath in the testbed.
        public static let noSuchDevice = Code("noSuchDevice")
        /// An argument was rejected (bad name, devnode outside `/dev/`, …).
        public static let invalidArgument = Code("invalidArgument")
        /// Sending a uevent to a listening process failed.
        public static let ueventFailed = Code("ueventFailed")
    }

    public var code: Code
    public var errno: Int32
    public var message: String

    public init(code: Code, errno: Int32 = 0, message: String) {
        self.code = code
        self.errno = errno
        self.message = message
    }

    public var description: String {
        errno == 0 ? "umockdev \(code): \(message)" : "umockdev \(code) (errno \(errno)): \(message)"
    }
}
