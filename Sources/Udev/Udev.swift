import CUdev
import Glibc

/// Entry points for one-shot udev queries. For hotplug events use ``UdevMonitor``.
///
/// To see every device exactly once, start the monitor **before** enumerating:
///
/// ```swift
/// let monitor = try UdevMonitor(subsystems: ["usb", "tty"])   // socket bound: events now queue
/// var known = Dictionary(uniqueKeysWithValues: try Udev.enumerate(subsystems: ["usb", "tty"]).map { ($0.syspath, $0) })
/// for try await event in monitor.events() {                    // includes anything plugged in meanwhile
///     if event.action == "remove" { known[event.syspath] = nil } else { known[event.syspath] = event }
/// }
/// ```
///
/// A device plugged in between the two calls then shows up both in the enumeration and as an
/// `add` event, so treat events idempotently (keyed by `syspath`).
public enum Udev {
    /// The devices currently present in `subsystems` (all subsystems when empty).
    ///
    /// Only devices udev has finished processing are returned (`udev_enumerate_add_match_is_initialized`),
    /// unless `includeUninitialized` is set. Note that libudev decides "initialized" from udev's
    /// database in `/run/udev/data`: on a host without `systemd-udevd` every device that has a
    /// device number counts as uninitialized. For `usb`, only whole devices (`usb_device`) are
    /// returned, never interfaces.
    ///
    /// Reads sysfs synchronously (short file reads); fine to call from async code.
    public static func enumerate(subsystems: [String], includeUninitialized: Bool = false) throws -> [UdevDevice] {
        guard let udev = udev_new() else {
            throw UdevError(code: .contextUnavailable, errno: Glibc.errno, message: "udev_new failed")
        }
        defer { udev_unref(udev) }
        guard let enumerate = udev_enumerate_new(udev) else {
            throw UdevError(code: .enumerationFailed, errno: Glibc.errno, message: "udev_enumerate_new failed")
        }
        defer { udev_enumerate_unref(enumerate) }

        for subsystem in subsystems {
            let r = udev_enumerate_add_match_subsystem(enumerate, subsystem)
            guard r >= 0 else {
                throw UdevError(code: .enumerationFailed, errno: -r, message: "cannot match subsystem \(subsystem)")
            }
        }
        if !includeUninitialized {
            let r = udev_enumerate_add_match_is_initialized(enumerate)
            guard r >= 0 else { throw UdevError(code: .enumerationFailed, errno: -r, message: "cannot match initialized") }
        }
        let r = udev_enumerate_scan_devices(enumerate)
        guard r >= 0 else { throw UdevError(code: .enumerationFailed, errno: -r, message: "udev_enumerate_scan_devices failed") }

        var devices: [UdevDevice] = []
        var entry = udev_enumerate_get_list_entry(enumerate)
        while let e = entry {
            entry = udev_list_entry_get_next(e)
            // A device can vanish between the scan and this read: skip it, the monitor reports the removal.
            guard let syspath = udev_list_entry_get_name(e),
                  let device = udev_device_new_from_syspath(udev, syspath)
            else { continue }
            defer { udev_device_unref(device) }
            if string(udev_device_get_subsystem(device)) == "usb",
               string(udev_device_get_devtype(device)) != "usb_device" { continue }
            devices.append(UdevDevice(reading: device))
        }
        return devices
    }
}
