import GatewayProtocol

/// Decides whether a device a gateway announced is one of the vendor's own.
///
/// A device is genuine when its serial is in the vendor's manufacturing registry (`devices`) **and** the
/// USB vendor and product IDs the gateway saw equal the registered ones.
///
/// Why the registry is the root of trust: USB descriptors cannot carry a signature, and the cheap serial
/// adapters vendors ship have no secure element to answer a challenge, so nothing the device says can be
/// verified cryptographically. What the vendor does know is what it manufactured. This check stops
/// unknown and mismatched devices, not a determined forger: a serial number is readable by anyone holding
/// the device and can be programmed into another adapter. That is why the gateway owner still approves
/// every plan before anything is provisioned.
public enum DeviceAuthenticity: Sendable, Equatable {
    case genuine(RegisteredDevice)
    /// The serial is not in the registry.
    case unknownSerial
    /// The serial is registered with other vendor/product IDs.
    case mismatchedIDs(registered: RegisteredDevice)

    /// Compares what the gateway saw with the registry entry for its serial (nil: not registered).
    public static func check(_ seen: DeviceIdentity, registered: RegisteredDevice?) -> DeviceAuthenticity {
        guard let registered, registered.serial == seen.serial else { return .unknownSerial }
        guard registered.vendorID == seen.vendorID.lowercased(), registered.productID == seen.productID.lowercased() else {
            return .mismatchedIDs(registered: registered)
        }
        return .genuine(registered)
    }
}
