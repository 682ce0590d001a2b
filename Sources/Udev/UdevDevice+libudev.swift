import CUdev

extension UdevDevice {
    /// Reads everything out of a libudev device. `device` stays owned by the caller; this must run
    /// on the thread that owns the device's `udev` context.
    init(reading device: OpaquePointer) {
        var properties: [String: String] = [:]
        var entry = udev_device_get_properties_list_entry(device)
        while let e = entry {
            if let name = udev_list_entry_get_name(e).map(String.init(cString:)) {
                properties[name] = udev_list_entry_get_value(e).map(String.init(cString:)) ?? ""
            }
            entry = udev_list_entry_get_next(e)
        }

        let subsystem = string(udev_device_get_subsystem(device))
        let devtype = string(udev_device_get_devtype(device))
        let isUSBDevice = subsystem == "usb" && devtype == "usb_device"
        // Borrowed: the parent lives as long as `device` does (libudev caches it in the child).
        let usb: OpaquePointer? = isUSBDevice ? device : udev_device_get_parent_with_subsystem_devtype(device, "usb", "usb_device")

        func attr(_ name: String) -> String? {
            guard let usb else { return nil }
            return string(udev_device_get_sysattr_value(usb, name))?.nonBlank
        }
        /// The property on the device itself first (udev copies ID_* onto ttys), then on the usb_device.
        func prop(_ name: String) -> String? {
            if let v = properties[name]?.nonBlank { return v }
            guard let usb, usb != device else { return nil }
            return string(udev_device_get_property_value(usb, name))?.nonBlank
        }
        // PRODUCT=vid/pid/bcd is set by the kernel on usb_device and usb_interface uevents only.
        let productProperty = isUSBDevice ? properties["PRODUCT"] : usb.flatMap { string(udev_device_get_property_value($0, "PRODUCT")) }
        let fromProduct = Self.parseUSBProduct(productProperty)

        self.init(
            action: string(udev_device_get_action(device)),
            subsystem: subsystem,
            devtype: devtype,
            syspath: string(udev_device_get_syspath(device)) ?? "",
            sysname: string(udev_device_get_sysname(device)),
            devnode: string(udev_device_get_devnode(device)),
            vendorID: Self.normalizedUSBID(attr("idVendor")) ?? Self.normalizedUSBID(prop("ID_VENDOR_ID")) ?? fromProduct?.vendorID,
            productID: Self.normalizedUSBID(attr("idProduct")) ?? Self.normalizedUSBID(prop("ID_MODEL_ID")) ?? fromProduct?.productID,
            serial: attr("serial") ?? prop("ID_SERIAL_SHORT"),
            manufacturer: attr("manufacturer") ?? Self.decodeUdevEncoded(prop("ID_VENDOR_ENC"))?.nonBlank ?? prop("ID_VENDOR"),
            product: attr("product") ?? Self.decodeUdevEncoded(prop("ID_MODEL_ENC"))?.nonBlank ?? prop("ID_MODEL"),
            busPath: prop("ID_PATH") ?? usb.flatMap { string(udev_device_get_devpath($0)) },
            properties: properties
        )
    }
}

@inline(__always)
func string(_ p: UnsafePointer<CChar>?) -> String? {
    p.map(String.init(cString:))
}
