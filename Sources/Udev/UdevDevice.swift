/// One udev device (enumerated) or one uevent (from `UdevMonitor`), as plain data.
///
/// The USB identity (`vendorID`, `productID`, `serial`, `manufacturer`, `product`) is filled for
/// `usb`/`usb_device` devices from the device itself, and for every other device (a `tty`, a
/// `hidraw`, …) from its `usb_device` ancestor; it is `nil` for devices that are not on USB.
/// On a `remove` uevent the sysfs attributes are gone, so the identity then comes from the
/// event's properties only (`ID_VENDOR_ID`, `ID_MODEL_ID`, `PRODUCT`, …) and may be partial;
/// `syspath` is always set, so keep your own record keyed by it.
public struct UdevDevice: Sendable, Hashable, Codable {
    /// `add`, `remove`, `change`, `bind`, `unbind`, …; `nil` for enumerated devices.
    public var action: String?
    /// The kernel subsystem, e.g. `usb`, `tty`.
    public var subsystem: String?
    /// The device type within the subsystem, e.g. `usb_device`; `nil` for most ttys.
    public var devtype: String?
    /// The sysfs path, e.g. `/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1`. Stable key for a device.
    public var syspath: String
    /// The last component of `syspath`, e.g. `ttyUSB0` or `1-1`.
    public var sysname: String?
    /// The device node, e.g. `/dev/ttyUSB0` or `/dev/bus/usb/001/006`; `nil` when there is none.
    public var devnode: String?
    /// USB vendor ID: exactly 4 lowercase hex digits, e.g. `0403`.
    public var vendorID: String?
    /// USB product ID: exactly 4 lowercase hex digits, e.g. `6001`.
    public var productID: String?
    /// The USB serial number string, if the device reports one.
    public var serial: String?
    /// The USB manufacturer string (sysattr `manufacturer`, else udev's `ID_VENDOR_ENC` decoded,
    /// else `ID_VENDOR`, in which udev replaced spaces with `_`).
    public var manufacturer: String?
    /// The USB product string (sysattr `product`, else `ID_MODEL_ENC` decoded, else `ID_MODEL`).
    public var product: String?
    /// Where the device is plugged in: udev's `ID_PATH` (e.g. `pci-0000:00:14.0-usb-0:1:1.0`),
    /// else the devpath of the `usb_device` (e.g. `/devices/pci0000:00/0000:00:14.0/usb1/1-1`).
    public var busPath: String?
    /// Every udev property of the device or event.
    public var properties: [String: String]

    enum CodingKeys: String, CodingKey {
        case action, subsystem, devtype, syspath, sysname, devnode
        case vendorID, productID, serial, manufacturer, product, busPath, properties
    }

    public init(
        action: String? = nil, subsystem: String?, devtype: String? = nil, syspath: String,
        sysname: String? = nil, devnode: String? = nil, vendorID: String? = nil, productID: String? = nil,
        serial: String? = nil, manufacturer: String? = nil, product: String? = nil, busPath: String? = nil,
        properties: [String: String] = [:]
    ) {
        self.action = action
        self.subsystem = subsystem
        self.devtype = devtype
        self.syspath = syspath
        self.sysname = sysname
        self.devnode = devnode
        self.vendorID = vendorID
        self.productID = productID
        self.serial = serial
        self.manufacturer = manufacturer
        self.product = product
        self.busPath = busPath
        self.properties = properties
    }

    /// `true` for a whole USB device (`usb`/`usb_device`), as opposed to an interface or a child.
    public var isUSBDevice: Bool { subsystem == "usb" && devtype == "usb_device" }
}

// MARK: - Pure helpers (unit-tested)

extension UdevDevice {
    /// Normalises a USB vendor or product ID to 4 lowercase hex digits: `"403"` → `"0403"`,
    /// `"0x6001"` → `"6001"`, `"6001\n"` → `"6001"`. `nil` for anything that is not 1–4 hex digits.
    static func normalizedUSBID(_ raw: String?) -> String? {
        guard var s = raw?.trimmingASCIIWhitespace(), !s.isEmpty else { return nil }
        if s.hasPrefix("0x") || s.hasPrefix("0X") { s.removeFirst(2) }
        guard (1...4).contains(s.count), s.allSatisfy(\.isHexDigit) else { return nil }
        return String(repeating: "0", count: 4 - s.count) + s.lowercased()
    }

    /// Parses the kernel's `PRODUCT` property of a USB device, `vid/pid/bcdDevice` in unpadded hex
    /// (e.g. `"403/6001/600"`), into normalised vendor and product IDs.
    static func parseUSBProduct(_ raw: String?) -> (vendorID: String, productID: String)? {
        guard let raw else { return nil }
        let parts = raw.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2,
              let vid = normalizedUSBID(String(parts[0])),
              let pid = normalizedUSBID(String(parts[1]))
        else { return nil }
        return (vid, pid)
    }

    /// Decodes udev's `*_ENC` property encoding, where unsafe bytes are written as `\xHH`
    /// (`"FT232R\x20USB\x20UART"` → `"FT232R USB UART"`). Malformed escapes are kept as they are.
    static func decodeUdevEncoded(_ raw: String?) -> String? {
        guard let raw else { return nil }
        let bytes = Array(raw.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count, bytes[i + 1] == UInt8(ascii: "x"),
               let hi = hexValue(bytes[i + 2]), let lo = hexValue(bytes[i + 3]) {
                out.append(hi << 4 | lo)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension String {
    func trimmingASCIIWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }),
              let last = lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(self[first...last])
    }

    /// `nil` for an empty or all-whitespace string; the trimmed string otherwise.
    var nonBlank: String? {
        let t = trimmingASCIIWhitespace()
        return t.isEmpty ? nil : t
    }
}
