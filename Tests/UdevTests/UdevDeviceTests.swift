import Foundation
import Testing
@testable import Udev
@testable import UmockdevTesting

/// Pure parts: ID normalisation, PRODUCT parsing, the JSON shape, the uevent wire hash.
@Suite(.serialized) struct UdevDeviceTests {
    @Test(arguments: [
        ("0403", "0403"), ("403", "0403"), ("6001", "6001"), ("EA60", "ea60"), ("0x10C4", "10c4"),
        ("1", "0001"), (" 6001\n", "6001"),
    ])
    func usbIDsAreNormalisedToFourLowercaseHexDigits(raw: String, expected: String) {
        #expect(UdevDevice.normalizedUSBID(raw) == expected)
    }

    @Test(arguments: ["", "   ", "12345", "xyz1", "0x", "40 3", "-403"])
    func invalidUSBIDsAreRejected(raw: String) {
        #expect(UdevDevice.normalizedUSBID(raw) == nil)
    }

    @Test func productPropertyIsParsed() throws {
        let ftdi = try #require(UdevDevice.parseUSBProduct("403/6001/600"))
        #expect(ftdi.vendorID == "0403")
        #expect(ftdi.productID == "6001")
        let cp210x = try #require(UdevDevice.parseUSBProduct("10c4/ea60/100"))
        #expect((cp210x.vendorID, cp210x.productID) == ("10c4", "ea60"))
        #expect(UdevDevice.parseUSBProduct("1d6b/2") != nil)  // bcdDevice is optional for us
        for bad in [nil, "", "403", "403//600", "zz/6001/600", "12345/6001/1"] {
            #expect(UdevDevice.parseUSBProduct(bad) == nil, "\(bad ?? "nil")")
        }
    }

    @Test func udevEncodedStringsAreDecoded() {
        #expect(UdevDevice.decodeUdevEncoded(#"FT232R\x20USB\x20UART"#) == "FT232R USB UART")
        #expect(UdevDevice.decodeUdevEncoded(#"Acme\x2fCo\x5c"#) == #"Acme/Co\"#)
        #expect(UdevDevice.decodeUdevEncoded(#"caf\xc3\xa9"#) == "café")
        #expect(UdevDevice.decodeUdevEncoded(#"odd\x2"#) == #"odd\x2"#)  // malformed escape kept
        #expect(UdevDevice.decodeUdevEncoded(nil) == nil)
    }

    @Test func jsonOmitsMissingFieldsAndRoundTrips() throws {
        let device = UdevDevice(action: "add", subsystem: "tty", syspath: "/sys/devices/x/ttyUSB0", sysname: "ttyUSB0",
                                devnode: "/dev/ttyUSB0", vendorID: "0403", productID: "6001",
                                properties: ["ID_VENDOR_ID": "0403"])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = String(decoding: try encoder.encode(device), as: UTF8.self)
        #expect(json == #"{"action":"add","devnode":"/dev/ttyUSB0","productID":"6001","properties":{"ID_VENDOR_ID":"0403"},"subsystem":"tty","sysname":"ttyUSB0","syspath":"/sys/devices/x/ttyUSB0","vendorID":"0403"}"#)
        #expect(try JSONDecoder().decode(UdevDevice.self, from: Data(json.utf8)) == device)
        #expect(!device.isUSBDevice)
    }

    @Test func errorsAreMatchableByCode() {
        let error: any Error = UdevError(code: .monitorUnavailable, errno: EPERM, message: "bind failed")
        guard let e = error as? UdevError, e.code == .monitorUnavailable else {
            Issue.record("not a matchable UdevError: \(error)")
            return
        }
        #expect(e.errno == EPERM)
        #expect("\(e)" == "udev monitorUnavailable (errno \(EPERM)): bind failed")
    }

    /// Reference values from systemd's `string_hash32` (MurmurHash2), as compiled C: the monitor's
    /// in-kernel filter drops a uevent whose subsystem/devtype hash is wrong.
    @Test func ueventFilterHashMatchesSystemd() {
        #expect(UeventMessage.murmurHash2("usb") == 0x0577_c5e5)
        #expect(UeventMessage.murmurHash2("tty") == 0x8afa_90c8)
        #expect(UeventMessage.murmurHash2("usb_device") == 0x27f8_f50c)
        #expect(UeventMessage.murmurHash2("hidraw") == 0xc2ca_f397)
    }

    @Test func ueventMessageLayout() {
        let message = UeventMessage.encode(action: "add", syspath: "/sys/devices/a/ttyUSB0", subsystem: "tty", seqnum: 7,
                                           properties: [("DEVNAME", "ttyUSB0"), ("SUBSYSTEM", "tty"), ("ID_VENDOR_ID", "0403")])
        #expect(Array(message.prefix(8)) == Array("libudev".utf8) + [0])
        #expect(Array(message[8..<12]) == [0xfe, 0xed, 0xca, 0xfe])
        let body = String(decoding: message.dropFirst(UeventMessage.headerSize), as: UTF8.self)
        #expect(body.split(separator: "\0").map(String.init) ==
                ["ACTION=add", "DEVPATH=/devices/a/ttyUSB0", "SUBSYSTEM=tty", "SEQNUM=7", "DEVNAME=/dev/ttyUSB0", "ID_VENDOR_ID=0403"])
    }
}
