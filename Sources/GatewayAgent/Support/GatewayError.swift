import GatewayProtocol

/// Why the gateway refused or could not do something. Matchable by `code`, like `LXDError` and
/// `ProtocolError`: `catch let e as GatewayError where e.code == .notPending`.
public struct GatewayError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// No such approval, device or vendor.
        public static let notFound = Code("notFound")
        /// An approval was decided already (or superseded): a decision is made once.
        public static let notPending = Code("notPending")
        /// The owner approved another content than the approval now holds.
        public static let digestMismatch = Code("digestMismatch")
        /// A plan asks for more than this gateway's caps allow.
        public static let overCaps = Code("overCaps")
        /// A plan grants a device this gateway never saw, or whose USB IDs differ from what udev reports.
        public static let unknownDevice = Code("unknownDevice")
        /// A plan grants a device that the owner's match rules give to another vendor (or to none).
        public static let foreignDevice = Code("foreignDevice")
        /// A plan does not include the device it answers.
        public static let deviceNotGranted = Code("deviceNotGranted")
        /// An instance of the vendor's name exists without the vendor's label: never touched.
        public static let notManaged = Code("notManaged")
        /// The storage pool cannot enforce the disk cap and the owner did not allow that.
        public static let diskLimitUnenforceable = Code("diskLimitUnenforceable")
        /// A vendor's bootstrap bundle or InSpec profile cannot be used.
        public static let delivery = Code("delivery")
        /// A container could not be rebuilt on a plan's new image (the old one stays as it was).
        public static let rebuild = Code("rebuild")
        /// The gateway's key cannot be read; no new identity is made in its place.
        public static let identity = Code("identity")
        /// Stored state cannot be decoded.
        public static let corruptState = Code("corruptState")
        /// A device node could not be made for a device.
        public static let deviceNode = Code("deviceNode")
        /// The host firewall that isolates vendor containers is not in place.
        public static let network = Code("network")
        /// The vendor's broker or fleet channel failed (connection, publish).
        public static let fleet = Code("fleet")
        /// The request contradicts the configuration (removing a vendor that is still configured, say).
        public static let conflict = Code("conflict")
        /// A plan's image URL is not one the owner lets this vendor's images come from.
        public static let imageSource = Code("imageSource")
        /// A vendor image could not be downloaded or imported (server, size, storage).
        public static let imageDownload = Code("imageDownload")
        /// A step would leave less free space than the owner's reserve: deferred.
        public static let diskSpace = Code("diskSpace")
        /// LXD gave a new vendor container host ids another container holds: it was deleted before it ran.
        public static let sharedIdmap = Code("sharedIdmap")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

extension Error {
    /// One line for the owner and the vendor, safe to print: untrusted text inside is escaped.
    var safeDescription: String { Fields.displayText("\(self)", max: 512) }
}
