/// A device as the gateway sees it from udev (decoupled from the Udev adapter for testing).
public struct PluggedDevice: Sendable, Equatable {
    public var syspath: String
    public var subsystem: String
    public var devnode: String?
    public var vendorID: String?
    public var productID: String?
    public var serial: String?
    public var manufacturer: String?
    public var product: String?
    public var busPath: String?
    /// The device number of `devnode`, read when udev reported the device (so a later reuse of the
    /// kernel name cannot change what the gateway believes this device is).
    public var number: DeviceNumber?

    public init(syspath: String, subsystem: String, devnode: String? = nil, vendorID: String? = nil, productID: String? = nil,
                serial: String? = nil, manufacturer: String? = nil, product: String? = nil, busPath: String? = nil, number: DeviceNumber? = nil) {
        self.syspath = syspath
        self.subsystem = subsystem
        self.devnode = devnode
        self.vendorID = vendorID
        self.productID = productID
        self.serial = serial
        self.manufacturer = manufacturer
        self.product = product
        self.busPath = busPath
        self.number = number
    }
}
