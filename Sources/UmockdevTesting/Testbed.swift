import CUmockdev
import Foundation
import Glibc

/// A umockdev testbed: a private sysfs tree that the **real** libudev reads in processes started
/// with ``environment`` (`LD_PRELOAD=libumockdev-preload.so.0`, `UMOCKDEV_DIR=root`).
///
/// The process that owns the testbed is not preloaded, so the code under test must run in a
/// child process:
///
/// ```swift
/// let testbed = try Testbed()
/// let adapter = try testbed.addUSBSerialAdapter(vendorID: "0403", productID: "6001", serial: "A10K",
///                                               ttyName: "ttyUSB0", devnode: "/dev/ttyIOTGW0")
/// let child = Process()
/// child.environment = ProcessInfo.processInfo.environment.merging(testbed.environment) { $1 }
/// // … start the child (which enumerates / monitors udev), then:
/// try testbed.uevent(adapter.usbSyspath, "add")
/// try testbed.remove(adapter.usbSyspath)     // "remove" uevents for the tty, interface, device
/// ```
///
/// How the simulation maps onto libudev in the child:
/// - Syspaths are the usual `/sys/devices/...`; the preload redirects `/sys` into `root/sys`.
/// - `DEVNAME=/dev/ttyX` is stored as `ttyX` (like the kernel) and libudev reports `/dev/ttyX` as
///   the devnode. No node is created under `root/dev`, so `/dev/ttyX` in the child resolves to the
///   **host's** `/dev/ttyX` (the preload only redirects `/dev` paths that exist in the testbed).
///   Create that node yourself (`mknod`) if the code under test opens or passes it on.
/// - Devices get no `MAJOR`/`MINOR` and no `dev` attribute. libudev only counts a device with a
///   device number as "initialized" when udev's database (`/run/udev/data`, not redirected by
///   umockdev) has it; without a number, `udev_enumerate_add_match_is_initialized` keeps them.
/// - ``uevent(_:_:)`` sends the device's full property set (what udevd broadcasts), not just the
///   kernel's; libudev monitors in preloaded children receive it through `root/event*` sockets.
///
/// Not `Sendable`: it owns a GObject and mutable counters; keep it in one task. umockdev sets
/// `UMOCKDEV_DIR` in this process's environment on creation and unsets it on release, so use one
/// testbed at a time per process (`@Suite(.serialized)`).
public final class Testbed {
    /// The testbed directory: pass it as `UMOCKDEV_DIR`.
    public let root: String
    private let testbed: UnsafeMutablePointer<UMockdevTestbed>
    private var nextUSBPort = 1
    private var seqnum: UInt64 = 1

    /// The soname given to `LD_PRELOAD`.
    public static let preloadLibrary = "libumockdev-preload.so.0"

    /// Creates an empty testbed in a fresh temporary directory.
    /// - Throws: ``TestbedError/Code/umockdevMissing`` if the preload library is not installed.
    public init() throws {
        guard Self.preloadLibraryPath() != nil else {
            throw TestbedError(code: .umockdevMissing, message:
                "\(Self.preloadLibrary) not found: install umockdev (apt-get install umockdev libumockdev-dev)")
        }
        // umockdev_testbed_new aborts on failure (cannot create the temp dir); it never returns NULL.
        let tb = umockdev_testbed_new()!
        testbed = tb
        root = Self.takeString(umockdev_testbed_get_root_dir(tb)) ?? ""
    }

    deinit {
        // Removes `root` and unsets UMOCKDEV_DIR in this process.
        g_object_unref(UnsafeMutableRawPointer(testbed))
    }

    /// The environment for a child process that should see this testbed; merge it into the
    /// child's environment.
    public var environment: [String: String] {
        ["LD_PRELOAD": Self.preloadLibrary, "UMOCKDEV_DIR": root]
    }

    /// Where the preload library is installed, or `nil` when it is not.
    public static func preloadLibraryPath() -> String? {
        var dirs = (ProcessInfo.processInfo.environment["LD_LIBRARY_PATH"] ?? "").split(separator: ":").map(String.init)
        var uts = utsname()
        uname(&uts)
        let machine = withUnsafeBytes(of: &uts.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        for base in ["/usr/lib", "/lib", "/usr/local/lib"] {
            dirs += ["\(base)/\(machine)-linux-gnu", "\(base)64", base]
        }
        return dirs.map { "\($0)/\(preloadLibrary)" }.first { FileManager.default.fileExists(atPath: $0) }
    }

    // MARK: - Devices

    /// Adds one device at `/sys/devices/<parent-relative path>/<name>` and returns its syspath.
    ///
    /// Unlike `umockdev_testbed_add_devicev` with a parent (which checks the parent in the real
    /// `/sys` unless this process is preloaded), the parent here is a syspath inside the testbed.
    /// Attributes and properties are name/value pairs; property order is kept in the `uevent`
    /// file. `DEVNAME` must be a `/dev/...` path.
    @discardableResult
    public func addDevice(subsystem: String, name: String, parent: String? = nil,
                          attributes: [(String, String)] = [],
                          properties: [(String, String)] = []) throws -> String {
        guard !name.isEmpty, !name.hasPrefix("/"), !name.split(separator: "/").contains(".."),
              !subsystem.isEmpty, !subsystem.contains("/")
        else { throw TestbedError(code: .invalidArgument, message: "bad device name \(name) or subsystem \(subsystem)") }
        var relative = name
        if let parent {
            guard parent.hasPrefix("/sys/devices/"), isDevice(parent) else {
                throw TestbedError(code: .noSuchDevice, message: "parent \(parent) is not a device in the testbed")
            }
            relative = String(parent.dropFirst("/sys/devices/".count)) + "/" + name
        }
        if let devname = properties.first(where: { $0.0 == "DEVNAME" })?.1, !devname.hasPrefix("/dev/") {
            throw TestbedError(code: .invalidArgument, message: "DEVNAME \(devname) must start with /dev/")
        }
        // umockdev aborts the whole process on these collisions: refuse them first.
        let syspath = "/sys/devices/" + relative
        let basename = (relative as NSString).lastPathComponent
        var taken = [root + syspath + "/uevent", root + "/sys/class/\(subsystem)/\(basename)"]
        if subsystem == "usb" || subsystem == "pci" { taken.append(root + "/sys/bus/\(subsystem)/devices/\(basename)") }
        if let clash = taken.first(where: { lexists($0) }) {
            throw TestbedError(code: .deviceExists, message: "\(clash) already exists in the testbed")
        }

        let added = withCStringArray(attributes.flatMap { [$0.0, $0.1] }) { attrs in
            withCStringArray(properties.flatMap { [$0.0, $0.1] }) { props in
                Self.takeString(umockdev_testbed_add_devicev(testbed, subsystem, relative, nil, attrs, props))
            }
        }
        guard let added else { throw TestbedError(code: .invalidArgument, message: "umockdev refused device \(relative)") }
        return added
    }

    /// Adds a USB-serial adapter the way the kernel and udev present an FTDI-style converter:
    /// a `usb_device` (attributes `idVendor`, `idProduct`, `serial`, `manufacturer`, `product`;
    /// properties `PRODUCT`, `ID_VENDOR_ID`, `ID_MODEL_ID`, `ID_SERIAL_SHORT`, `ID_VENDOR(_ENC)`,
    /// `ID_MODEL(_ENC)`, `ID_PATH`, `DEVNAME=/dev/bus/usb/001/NNN`, …),
    /// its interface `…:1.0` (`usb_interface`), and a `tty` child named `ttyName` with
    /// `DEVNAME=devnode` and the `ID_*` properties udev copies onto ttys.
    ///
    /// No uevent is sent: the devices are simply present (as at boot). Send `add` with ``uevent(_:_:)``
    /// to simulate a hotplug. Each call uses the next port on bus 1.
    ///
    /// - Parameters:
    ///   - vendorID, productID: hex, e.g. `"0403"`, `"6001"`.
    ///   - ttyName: the kernel name (sysname), e.g. `ttyUSB0`; unique within the testbed.
    ///   - devnode: what libudev reports as the tty's devnode, e.g. `/dev/ttyIOTGW0`; must start with `/dev/`.
    public func addUSBSerialAdapter(vendorID: String, productID: String, serial: String? = nil,
                                    manufacturer: String? = nil, product: String? = nil,
                                    ttyName: String = "ttyUSB0", devnode: String) throws -> (usbSyspath: String, ttySyspath: String) {
        let hexDigits = CharacterSet(charactersIn: "0123456789abcdefABCDEF")
        guard [vendorID, productID].allSatisfy({ (1...4).contains($0.count) && $0.unicodeScalars.allSatisfy(hexDigits.contains) }) else {
            throw TestbedError(code: .invalidArgument, message: "vendor/product IDs must be 1-4 hex digits")
        }
        guard devnode.hasPrefix("/dev/"), !ttyName.isEmpty, !ttyName.contains("/") else {
            throw TestbedError(code: .invalidArgument, message: "devnode must start with /dev/ and ttyName must be a plain name")
        }
        // Check the tty name up front so that a clash leaves no half-added adapter behind.
        guard !lexists(root + "/sys/class/tty/\(ttyName)") else {
            throw TestbedError(code: .deviceExists, message: "a tty named \(ttyName) already exists in the testbed")
        }
        let vid = String(repeating: "0", count: 4 - vendorID.count) + vendorID.lowercased()
        let pid = String(repeating: "0", count: 4 - productID.count) + productID.lowercased()
        let port = nextUSBPort
        let devnum = port + 1  // 1 is the root hub
        let kernelName = "1-\(port)"
        let idPath = "pci-0000:00:14.0-usb-0:\(port)"
        let encode: (String) -> String = { $0.replacingOccurrences(of: " ", with: "_") }
        // udev's `*_ENC` form: bytes outside [A-Za-z0-9#+-.:=@_] (and not UTF-8 multibyte) as \xHH.
        let encodeEscaped: (String) -> String = { string in
            string.utf8.map { b -> String in
                let safe = (b >= 0x80) || (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
                    || Array("#+-.:=@_".utf8).contains(b)
                return safe ? String(UnicodeScalar(b)) : "\\x" + (b < 0x10 ? "0" : "") + String(b, radix: 16)
            }.joined()
        }
        // The kernel prints PRODUCT in unpadded lowercase hex: 0403 -> 403.
        let productProperty = "\(String(Int(vid, radix: 16) ?? 0, radix: 16))/\(String(Int(pid, radix: 16) ?? 0, radix: 16))/600"

        var identity: [(String, String)] = [("ID_VENDOR_ID", vid), ("ID_MODEL_ID", pid)]
        if let manufacturer { identity += [("ID_VENDOR", encode(manufacturer)), ("ID_VENDOR_ENC", encodeEscaped(manufacturer))] }
        if let product { identity += [("ID_MODEL", encode(product)), ("ID_MODEL_ENC", encodeEscaped(product))] }
        if let serial {
            identity.append(("ID_SERIAL_SHORT", serial))
            identity.append(("ID_SERIAL", "\(encode(manufacturer ?? vid))_\(encode(product ?? pid))_\(serial)"))
        }
        identity.append(("ID_BUS", "usb"))

        var usbAttributes: [(String, String)] = [
            ("idVendor", vid), ("idProduct", pid), ("bcdDevice", "0600"), ("busnum", "1"), ("devnum", "\(devnum)"),
            ("bDeviceClass", "00"), ("speed", "12"),
        ]
        if let serial { usbAttributes.append(("serial", serial)) }
        if let manufacturer { usbAttributes.append(("manufacturer", manufacturer)) }
        if let product { usbAttributes.append(("product", product)) }
        let usbProperties: [(String, String)] = [
            ("DEVTYPE", "usb_device"), ("PRODUCT", productProperty), ("TYPE", "0/0/0"),
            ("BUSNUM", "001"), ("DEVNUM", threeDigits(devnum)), ("DEVNAME", "/dev/bus/usb/001/\(threeDigits(devnum))"),
        ] + identity + [("ID_PATH", idPath)]

        let usb = try addDevice(subsystem: "usb", name: "pci0000:00/0000:00:14.0/usb1/\(kernelName)",
                                attributes: usbAttributes, properties: usbProperties)
        nextUSBPort += 1
        let interface = try addDevice(
            subsystem: "usb", name: "\(kernelName):1.0", parent: usb,
            attributes: [("bInterfaceNumber", "00"), ("bInterfaceClass", "ff"), ("bInterfaceSubClass", "ff"), ("bInterfaceProtocol", "ff")],
            properties: [("DEVTYPE", "usb_interface"), ("PRODUCT", productProperty), ("TYPE", "0/0/0"), ("INTERFACE", "255/255/255")])
        let tty = try addDevice(
            subsystem: "tty", name: "\(ttyName)/tty/\(ttyName)", parent: interface,
            properties: [("DEVNAME", devnode)] + identity + [("ID_USB_INTERFACE_NUM", "00"), ("ID_PATH", "\(idPath):1.0")])
        return (usb, tty)
    }

    /// Sends a uevent (`add`, `change`, `remove`, `bind`, `unbind`, …) for a device in the testbed
    /// to every libudev monitor in the preloaded children, with all the device's current properties.
    public func uevent(_ syspath: String, _ action: String) throws {
        guard let device = snapshot(syspath) else {
            throw TestbedError(code: .noSuchDevice, message: "\(syspath) is not a device in the testbed")
        }
        try send(device, action: action)
    }

    /// Unplugs a device: removes it and everything below it from the testbed, then sends `remove`
    /// for each of those devices, children first (as the kernel does), with the properties they had.
    /// In the children, sysfs attributes of removed devices are gone, as on real hardware.
    public func remove(_ syspath: String) throws {
        guard isDevice(syspath) else {
            throw TestbedError(code: .noSuchDevice, message: "\(syspath) is not a device in the testbed")
        }
        let devices = subtree(syspath).sorted { $0.count > $1.count }.compactMap { snapshot($0) }
        umockdev_testbed_remove_device(testbed, syspath)
        for device in devices { try send(device, action: "remove") }
    }

    /// The udev properties of a device in the testbed, as stored in its `uevent` file.
    public func properties(of syspath: String) -> [String: String]? {
        snapshot(syspath).map { Dictionary($0.properties, uniquingKeysWith: { $1 }) }
    }

    // MARK: - Internals

    struct DeviceSnapshot {
        var syspath: String
        var subsystem: String
        var properties: [(String, String)]
    }

    func isDevice(_ syspath: String) -> Bool {
        syspath.hasPrefix("/sys/") && FileManager.default.fileExists(atPath: root + syspath + "/uevent")
    }

    private func snapshot(_ syspath: String) -> DeviceSnapshot? {
        guard isDevice(syspath),
              let uevent = try? String(contentsOfFile: root + syspath + "/uevent", encoding: .utf8),
              let link = try? FileManager.default.destinationOfSymbolicLink(atPath: root + syspath + "/subsystem")
        else { return nil }
        let properties = uevent.split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }
        return DeviceSnapshot(syspath: syspath, subsystem: (link as NSString).lastPathComponent, properties: properties)
    }

    /// The device at `syspath` and every device below it (directories with a `uevent` file; symlinks not followed).
    private func subtree(_ syspath: String) -> [String] {
        var found: [String] = []
        var pending = [syspath]
        let fm = FileManager.default
        while let path = pending.popLast() {
            if isDevice(path) { found.append(path) }
            for entry in (try? fm.contentsOfDirectory(atPath: root + path)) ?? [] {
                let child = path + "/" + entry
                if (try? fm.attributesOfItem(atPath: root + child)[.type] as? FileAttributeType) == .typeDirectory {
                    pending.append(child)
                }
            }
        }
        return found
    }

    private func send(_ device: DeviceSnapshot, action: String) throws {
        let seq = seqnum
        seqnum += 1
        let message = UeventMessage.encode(action: action, syspath: device.syspath, subsystem: device.subsystem,
                                           seqnum: seq, properties: device.properties)
        try UeventMessage.deliver(message, toListenersIn: root)
    }

    private func lexists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    private func threeDigits(_ n: Int) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, 3 - s.count)) + s
    }

    /// Copies and frees a string that umockdev hands over (`g_free`).
    static func takeString(_ p: UnsafeMutablePointer<gchar>?) -> String? {
        guard let p else { return nil }
        defer { g_free(p) }
        return String(cString: p)
    }
}

/// Calls `body` with a NULL-terminated `gchar**` copy of `strings`, freed afterwards.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<gchar>?>) throws -> R) rethrows -> R {
    var pointers: [UnsafeMutablePointer<gchar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    // baseAddress is non-nil: the array always holds at least the NULL terminator.
    return try pointers.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
}
