import Foundation
import Testing
import Udev
import UmockdevTesting

/// The real libudev, driven by umockdev: `udev-probe` runs as a preloaded child under a testbed
/// (the test process itself cannot be preloaded). Fails, never skips, when umockdev or the probe
/// binary is missing.
@Suite(.serialized) struct ProbeUnderTestbedTests {
    static let ftdi = (vendorID: "0403", productID: "6001", serial: "IOTGW-A1", manufacturer: "FTDI", product: "FT232R USB UART")

    @Test func enumerateSeesUSBDeviceAndTtyWithIdentityAndDevnode() async throws {
        try await withHostCharNode { node in
            let testbed = try Testbed()
            let ftdi = try testbed.addUSBSerialAdapter(
                vendorID: Self.ftdi.vendorID, productID: Self.ftdi.productID, serial: Self.ftdi.serial,
                manufacturer: Self.ftdi.manufacturer, product: Self.ftdi.product, ttyName: "ttyUSB0", devnode: node)
            // Upper-case IDs, no strings: identity still normalised, missing strings stay nil.
            let cp210x = try testbed.addUSBSerialAdapter(vendorID: "10C4", productID: "EA60", ttyName: "ttyUSB1",
                                                         devnode: "/dev/ttyIOTGW-unused")

            let devices = try await Probe.enumerate(testbed)
            let bySyspath = Dictionary(devices.map { ($0.syspath, $0) }, uniquingKeysWith: { a, _ in a })
            // Two usb_devices and two ttys; the usb_interface devices are skipped.
            #expect(Set(bySyspath.keys) == [ftdi.usbSyspath, ftdi.ttySyspath, cp210x.usbSyspath, cp210x.ttySyspath])
            #expect(devices.count == 4)

            let usb = try #require(bySyspath[ftdi.usbSyspath])
            #expect(usb.action == nil)
            #expect(usb.subsystem == "usb" && usb.devtype == "usb_device" && usb.isUSBDevice)
            #expect(usb.sysname == "1-1")
            #expect(usb.devnode == "/dev/bus/usb/001/002")
            #expect(usb.busPath == "pci-0000:00:14.0-usb-0:1")
            expectIdentity(usb, Self.ftdi)

            let tty = try #require(bySyspath[ftdi.ttySyspath])
            #expect(tty.subsystem == "tty" && tty.devtype == nil)
            #expect(tty.sysname == "ttyUSB0")
            #expect(tty.devnode == node, "DEVNAME must come back as the host path the gateway passes to LXD")
            #expect(tty.busPath == "pci-0000:00:14.0-usb-0:1:1.0")
            #expect(tty.properties["ID_SERIAL_SHORT"] == Self.ftdi.serial)
            expectIdentity(tty, Self.ftdi)

            let other = try #require(bySyspath[cp210x.ttySyspath])
            #expect((other.vendorID, other.productID) == ("10c4", "ea60"))
            #expect(other.serial == nil && other.manufacturer == nil && other.product == nil)
            #expect(other.devnode == "/dev/ttyIOTGW-unused")
        }
    }

    /// A usb_device that has neither ID attributes nor udev's ID_* properties (only the kernel's
    /// PRODUCT): the tty below it still gets vendor/product, and busPath falls back to the devpath.
    @Test func identityFallsBackToTheKernelProductProperty() async throws {
        let testbed = try Testbed()
        let usb = try testbed.addDevice(subsystem: "usb", name: "pci0000:00/0000:00:14.0/usb2/2-1",
                                        properties: [("DEVTYPE", "usb_device"), ("PRODUCT", "1a86/7523/264")])
        let tty = try testbed.addDevice(subsystem: "tty", name: "2-1:1.0/ttyUSB7/tty/ttyUSB7", parent: usb,
                                        properties: [("DEVNAME", "/dev/ttyUSB7")])
        let devices = try await Probe.enumerate(testbed, ["--subsystem", "tty"])
        try #require(devices.count == 1)
        #expect(devices[0].syspath == tty)
        #expect((devices[0].vendorID, devices[0].productID) == ("1a86", "7523"))
        #expect(devices[0].serial == nil)
        #expect(devices[0].busPath == "/devices/pci0000:00/0000:00:14.0/usb2/2-1")
    }

    /// The brief's scenario: monitor first (wait for ready), then plug and unplug.
    @Test func monitorReportsAddThenRemoveOfATty() async throws {
        try await withHostCharNode { node in
            let testbed = try Testbed()
            try await withChild(try Probe.executable(), ["monitor", "--subsystem", "tty", "--count", "2", "--timeout", "60"],
                                environment: Probe.environment(testbed)) { child in
                #expect(try await child.nextLine() == Probe.readyLine)
                let ftdi = try testbed.addUSBSerialAdapter(
                    vendorID: Self.ftdi.vendorID, productID: Self.ftdi.productID, serial: Self.ftdi.serial,
                    manufacturer: Self.ftdi.manufacturer, product: Self.ftdi.product, ttyName: "ttyUSB0", devnode: node)
                try testbed.uevent(ftdi.usbSyspath, "add")  // not a tty: filtered out
                try testbed.uevent(ftdi.ttySyspath, "add")

                let added = try Probe.decode(try await child.nextLine())
                #expect(added.action == "add")
                #expect(added.syspath == ftdi.ttySyspath)
                #expect(added.subsystem == "tty")
                #expect(added.devnode == node)
                expectIdentity(added, Self.ftdi)

                try testbed.remove(ftdi.usbSyspath)  // unplug: tty, interface, device removed
                let removed = try Probe.decode(try await child.nextLine())
                #expect(removed.action == "remove")
                #expect(removed.syspath == ftdi.ttySyspath)
                #expect(removed.devnode == node)
                // sysfs is gone by now: identity comes from the event's properties.
                expectIdentity(removed, Self.ftdi)

                #expect(try await child.waitForExit() == 0)
                #expect(child.remainingLines.isEmpty)
            }
        }
    }

    /// Both subsystems: the usb_device and the tty, in kernel order; interfaces never show up.
    @Test func monitorReportsUSBDeviceAndTtyInKernelOrder() async throws {
        let testbed = try Testbed()
        try await withChild(try Probe.executable(), ["monitor", "--count", "4", "--timeout", "60"],
                            environment: Probe.environment(testbed)) { child in
            #expect(try await child.nextLine() == Probe.readyLine)
            let ftdi = try testbed.addUSBSerialAdapter(
                vendorID: Self.ftdi.vendorID, productID: Self.ftdi.productID, serial: Self.ftdi.serial,
                manufacturer: Self.ftdi.manufacturer, product: Self.ftdi.product, ttyName: "ttyUSB3", devnode: "/dev/ttyUSB3")
            let interface = ftdi.ttySyspath.components(separatedBy: "/ttyUSB3/")[0]
            try testbed.uevent(ftdi.usbSyspath, "add")
            try testbed.uevent(interface, "add")
            try testbed.uevent(ftdi.ttySyspath, "add")
            var events: [UdevDevice] = []
            // Read the adds before unplugging: the child reads sysfs when an event arrives, and a
            // device that is already gone by then only has its event properties (as on real hardware).
            for _ in 0..<2 { events.append(try Probe.decode(try await child.nextLine())) }
            try testbed.remove(ftdi.usbSyspath)
            for _ in 0..<2 { events.append(try Probe.decode(try await child.nextLine())) }

            #expect(events.map { "\($0.action ?? "-") \($0.syspath)" } == [
                "add \(ftdi.usbSyspath)", "add \(ftdi.ttySyspath)", "remove \(ftdi.ttySyspath)", "remove \(ftdi.usbSyspath)",
            ])
            // On remove, the strings come from udev's ID_VENDOR_ENC / ID_MODEL_ENC, decoded.
            for event in events { expectIdentity(event, Self.ftdi) }
            #expect(events[0].devnode == "/dev/bus/usb/001/002")
            #expect(events[3].devnode == "/dev/bus/usb/001/002")
            #expect(try await child.waitForExit() == 0)
        }
    }

    /// On remove of a device udev knew nothing about, the kernel's PRODUCT still identifies it.
    @Test func removeOfABareUSBDeviceIsIdentifiedFromProduct() async throws {
        let testbed = try Testbed()
        let usb = try testbed.addDevice(subsystem: "usb", name: "pci0000:00/0000:00:14.0/usb2/2-4",
                                        properties: [("DEVTYPE", "usb_device"), ("PRODUCT", "403/6015/1000"),
                                                     ("DEVNAME", "/dev/bus/usb/002/009")])
        try await withChild(try Probe.executable(), ["monitor", "--subsystem", "usb", "--count", "1", "--timeout", "60"],
                            environment: Probe.environment(testbed)) { child in
            #expect(try await child.nextLine() == Probe.readyLine)
            try testbed.remove(usb)
            let removed = try Probe.decode(try await child.nextLine())
            #expect(removed.action == "remove" && removed.syspath == usb)
            #expect((removed.vendorID, removed.productID) == ("0403", "6015"))
            #expect(removed.devnode == "/dev/bus/usb/002/009")
            #expect(removed.properties["PRODUCT"] == "403/6015/1000")
            #expect(try await child.waitForExit() == 0)
        }
    }

    /// The preload only redirects /dev paths that exist in the testbed: a preloaded process (the
    /// gateway under test) sees the host's real node at the devnode libudev reported.
    @Test func preloadedChildSeesTheHostNodeAtTheDevnode() async throws {
        try await withHostCharNode { node in
            let testbed = try Testbed()
            _ = try testbed.addUSBSerialAdapter(vendorID: "0403", productID: "6001", devnode: node)
            let stat = URL(fileURLWithPath: "/usr/bin/stat")
            try await withChild(stat, ["-c", "%F %t:%T", node], environment: Probe.environment(testbed)) { (child: ChildProcess) async throws in
                #expect(try await child.nextLine() == "character special file 1:3")
                #expect(try await child.waitForExit() == 0)
            }
        }
    }

    @Test func testbedRefusesCollisionsInsteadOfAborting() throws {
        let testbed = try Testbed()
        let first = try testbed.addUSBSerialAdapter(vendorID: "0403", productID: "6001", ttyName: "ttyUSB0", devnode: "/dev/ttyUSB0")
        #expect(testbed.environment["UMOCKDEV_DIR"] == testbed.root)
        #expect(testbed.properties(of: first.ttySyspath)?["DEVNAME"] == "ttyUSB0")  // stored relative, like the kernel
        #expect { try testbed.addUSBSerialAdapter(vendorID: "0403", productID: "6001", ttyName: "ttyUSB0", devnode: "/dev/ttyUSB9") }
            throws: { ($0 as? TestbedError)?.code == .deviceExists }
        // Nothing half-added: the next adapter gets the next port and works.
        let second = try testbed.addUSBSerialAdapter(vendorID: "0403", productID: "6001", ttyName: "ttyUSB1", devnode: "/dev/ttyUSB1")
        #expect(second.usbSyspath.hasSuffix("/usb1/1-2"))
        #expect { try testbed.addUSBSerialAdapter(vendorID: "0403", productID: "6001", devnode: "/tmp/tty") } throws: {
            ($0 as? TestbedError)?.code == .invalidArgument
        }
        #expect { try testbed.uevent("/sys/devices/nope", "add") } throws: { ($0 as? TestbedError)?.code == .noSuchDevice }
        try testbed.remove(first.usbSyspath)
        #expect(testbed.properties(of: first.ttySyspath) == nil)
        #expect { try testbed.remove(first.usbSyspath) } throws: { ($0 as? TestbedError)?.code == .noSuchDevice }
    }
}

private func expectIdentity(_ device: UdevDevice,
                            _ id: (vendorID: String, productID: String, serial: String, manufacturer: String, product: String),
                            sourceLocation: SourceLocation = #_sourceLocation) {
    let what = "\(device.action ?? "enumerated") \(device.syspath)"
    #expect(device.vendorID == id.vendorID, "vendorID of \(what)", sourceLocation: sourceLocation)
    #expect(device.productID == id.productID, "productID of \(what)", sourceLocation: sourceLocation)
    #expect(device.serial == id.serial, "serial of \(what)", sourceLocation: sourceLocation)
    #expect(device.manufacturer == id.manufacturer, "manufacturer of \(what)", sourceLocation: sourceLocation)
    #expect(device.product == id.product, "product of \(what)", sourceLocation: sourceLocation)
}
