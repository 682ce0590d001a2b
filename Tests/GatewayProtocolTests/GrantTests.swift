import Foundation
import Testing
@testable import GatewayProtocol

/// What an owner's approval binds, and how a newer plan relates to it.
@Suite("Grant.change and differences")
struct GrantTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let tty1 = DeviceGrant(serial: "SN1", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB0")
    static let tty2 = DeviceGrant(serial: "SN2", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB1")
    static let thermo = AppSpec(name: "thermo", version: "1.0.0", runList: ["recipe[thermo@1.0.0]"], inspecProfile: "thermo")
    static let hygro = AppSpec(name: "hygro", version: "2.0.0", runList: ["recipe[hygro]"])

    static func plan(version: Int = 1, devices: [DeviceGrant] = [tty1, tty2], apps: [AppSpec] = [thermo, hygro],
                     change: (inout ProvisioningPlan) -> Void = { _ in }) -> ProvisioningPlan {
        var p = ProvisioningPlan(vendor: "acme", gatewayID: "gw-0123456789abcdef", version: version, issuedAt: now,
                                 expiresAt: now.addingTimeInterval(3600),
                                 container: ContainerSpec(name: "iotgw-acme",
                                                          image: ImageRef(alias: "iotgw-debian12", fingerprint: String(repeating: "ab", count: 32)),
                                                          limits: ResourceLimits(cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300),
                                                          network: .nat),
                                 devices: devices, apps: apps)
        change(&p)
        return p
    }

    static let approved = plan().grant

    @Test func versionsTimesAndOrderAreNotPartOfTheGrant() {
        let again = Self.plan(version: 7, devices: [Self.tty2, Self.tty1], apps: [Self.hygro, Self.thermo]) {
            $0.issuedAt = Self.now.addingTimeInterval(100)
            $0.expiresAt = Self.now.addingTimeInterval(86_400)
        }.grant
        #expect(again == Self.approved)
        #expect(again.change(from: Self.approved) == .identical)
        #expect(again.differences(from: Self.approved).isEmpty)
        #expect(Self.approved.devices.map(\.serial) == ["SN1", "SN2"])
        #expect(Self.approved.apps.map(\.name) == ["hygro", "thermo"])
    }

    @Test func fewerDevicesExactlyAsApprovedAreASubset() {
        let fewer = Self.plan(devices: [Self.tty2]).grant
        #expect(fewer.change(from: Self.approved) == .subset)
        #expect(fewer.differences(from: Self.approved) == ["device SN1: removed"])
        #expect(Self.plan(devices: []).grant.change(from: Self.approved) == .subset)
    }

    @Test func newAppVersionsAndRunListsAreAnAppUpdate() {
        var thermo = Self.thermo
        thermo.version = "1.1.0"
        thermo.runList = ["recipe[thermo@1.1.0]"]
        let update = Self.plan(apps: [thermo, Self.hygro]).grant
        #expect(update.change(from: Self.approved) == .appUpdate)
        #expect(update.differences(from: Self.approved) == ["app thermo: version 1.0.0 -> 1.1.0",
                                                            "app thermo: run list recipe[thermo@1.0.0] -> recipe[thermo@1.1.0]"])
        var runListOnly = Self.hygro
        runListOnly.runList = ["recipe[hygro]", "recipe[hygro::extra]"]
        #expect(Self.plan(apps: [Self.thermo, runListOnly]).grant.change(from: Self.approved) == .appUpdate)
        // An update with fewer devices is still an update.
        #expect(Self.plan(devices: [Self.tty1], apps: [thermo, Self.hygro]).grant.change(from: Self.approved) == .appUpdate)
    }

    /// Each change the owner must see and approve again, with the line that tells them.
    static let widenings: [(String, ProvisioningPlan, String)] = [
        ("kind", plan(devices: [tty1, DeviceGrant(serial: "SN2", vendorID: "0403", productID: "6001", kind: .usb, path: nil)]),
         "device SN2: USB 0403:6001 unix-char -> /dev/ttyUSB1 -> USB 0403:6001 usb"),
        ("vendor ID", plan(devices: [tty1, DeviceGrant(serial: "SN2", vendorID: "10c4", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB1")]),
         "device SN2: USB 0403:6001 unix-char -> /dev/ttyUSB1 -> USB 10c4:6001 unix-char -> /dev/ttyUSB1"),
        ("product ID", plan(devices: [tty1, DeviceGrant(serial: "SN2", vendorID: "0403", productID: "6015", kind: .unixChar, path: "/dev/ttyUSB1")]),
         "device SN2: USB 0403:6001 unix-char -> /dev/ttyUSB1 -> USB 0403:6015 unix-char -> /dev/ttyUSB1"),
        ("path", plan(devices: [tty1, DeviceGrant(serial: "SN2", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyS9")]),
         "device SN2: USB 0403:6001 unix-char -> /dev/ttyUSB1 -> USB 0403:6001 unix-char -> /dev/ttyS9"),
        ("new device", plan(devices: [tty1, tty2, DeviceGrant(serial: "SN3", vendorID: "0403", productID: "6001", kind: .usb, path: nil)]),
         "device SN3: new, USB 0403:6001 usb"),
        ("cpus", plan { $0.container.limits.cpus = 2 }, "limits: cpus 1 -> 2"),
        ("memory", plan { $0.container.limits.memoryMiB = 512 }, "limits: memory 256 -> 512 MiB"),
        ("disk", plan { $0.container.limits.diskMiB = 4096 }, "limits: disk 2048 -> 4096 MiB"),
        ("processes", plan { $0.container.limits.processes = 301 }, "limits: processes 300 -> 301"),
        ("less memory", plan { $0.container.limits.memoryMiB = 128 }, "limits: memory 256 -> 128 MiB"),
        ("image alias", plan { $0.container.image.alias = "iotgw-other" },
         "image: iotgw-debian12 sha256:abababababab -> iotgw-other sha256:abababababab"),
        ("image fingerprint", plan { $0.container.image.fingerprint = String(repeating: "cd", count: 32) },
         "image: iotgw-debian12 sha256:abababababab -> iotgw-debian12 sha256:cdcdcdcdcdcd"),
        ("network", plan { $0.container.network = .none }, "network: nat -> none"),
        ("container name", plan { $0.container.name = "iotgw-globex" }, "container: iotgw-acme -> iotgw-globex"),
        ("new app", plan(apps: [thermo, hygro, AppSpec(name: "spy", version: "1", runList: ["recipe[spy]"])]), "app spy: new, 1 recipe[spy]"),
        ("app removed", plan(apps: [thermo]), "app hygro: removed"),
        ("new profile", plan(apps: [thermo, AppSpec(name: "hygro", version: "2.0.0", runList: ["recipe[hygro]"], inspecProfile: "lax")]),
         "app hygro: InSpec profile none -> lax"),
        ("profile removed", plan(apps: [AppSpec(name: "thermo", version: "1.0.0", runList: ["recipe[thermo@1.0.0]"]), hygro]),
         "app thermo: InSpec profile thermo -> none"),
    ]

    @Test(arguments: 0..<widenings.count)
    func everyOtherChangeWidensTheGrant(_ index: Int) {
        let (what, plan, line) = Self.widenings[index]
        #expect(plan.grant.change(from: Self.approved) == .widened, "\(what)")
        #expect(plan.grant.differences(from: Self.approved).contains(line), "\(what): \(plan.grant.differences(from: Self.approved))")
    }

    @Test func aWideningHiddenBehindASubsetIsStillAWidening() {
        // One device fewer but the other one moved: not a subset.
        let moved = Self.plan(devices: [DeviceGrant(serial: "SN1", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyS0")]).grant
        #expect(moved.change(from: Self.approved) == .widened)
        #expect(moved.differences(from: Self.approved) == ["device SN1: USB 0403:6001 unix-char -> /dev/ttyUSB0 -> USB 0403:6001 unix-char -> /dev/ttyS0",
                                                           "device SN2: removed"])
        // An app update with more limits: widened.
        var thermo = Self.thermo
        thermo.version = "9"
        #expect(Self.plan(apps: [thermo, Self.hygro]) { $0.container.limits.cpus = 4 }.grant.change(from: Self.approved) == .widened)
    }

    @Test func theGrantRoundTripsAsJSON() throws {
        let data = try WireJSON.encoder().encode(Self.approved)
        #expect(try WireJSON.decoder().decode(ProvisioningPlan.Grant.self, from: data) == Self.approved)
    }
}
