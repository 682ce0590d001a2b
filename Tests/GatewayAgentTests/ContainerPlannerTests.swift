import Foundation
import GatewayProtocol
import LXD
import Testing
@testable import GatewayAgent

@Suite struct ContainerPlannerTests {
    let config = Sample.config()

    @Test func absentContainerIsCreatedWithEverythingInOneOperation() throws {
        let steps = try ContainerPlanner.steps(plan: Sample.plan(), present: [PresentDevice(serial: "SN1", ttyNode: "/dev/ttyX0")],
                                               observed: .absent, config: config)
        #expect(steps.count == 3)
        guard case .verifyImage(let alias, _) = steps[0], case .create(let c) = steps[1], case .start = steps[2] else {
            Issue.record("unexpected steps \(steps)")
            return
        }
        #expect(alias == "iotgw-busybox")
        let post = c.post
        #expect(post.name == "iotgw-acme")
        #expect(post.config["security.privileged"] == "false")
        #expect(post.config["security.idmap.isolated"] == "true")
        #expect(post.config["security.nesting"] == "false")
        #expect(post.config["user.iotgw.vendor"] == "acme")
        #expect(post.config["limits.memory"] == "128MiB")
        #expect(post.devices["root"]?["size"] == "512MiB")
        #expect(post.devices["iotgw-SN1"] == .unixChar(source: "/dev/ttyX0", path: "/dev/ttyUSB0", required: false))
        #expect(post.profiles == ["default", "iotgw-vendor"])
    }

    func observed(devices: [String: Device] = [:], running: Bool = true, plan: ProvisioningPlan = Sample.plan()) -> ContainerObservation {
        ContainerObservation(exists: true, running: running, labelledVendor: "acme",
                             config: ContainerPlanner.desiredConfig(plan, caps: config.caps), devices: devices)
    }

    @Test func convergedContainerNeedsNothing() throws {
        let dev = Device.unixChar(source: "/dev/ttyX0", path: "/dev/ttyUSB0", required: false)
        #expect(try ContainerPlanner.steps(plan: Sample.plan(), present: [PresentDevice(serial: "SN1", ttyNode: "/dev/ttyX0")],
                                           observed: observed(devices: ["iotgw-SN1": dev]), config: config).isEmpty)
    }

    @Test func unplugDetachesOnlyManagedDevicesAndReplugAttaches() throws {
        let dev = Device.unixChar(source: "/dev/ttyX0", path: "/dev/ttyUSB0", required: false)
        let unplugged = try ContainerPlanner.steps(plan: Sample.plan(), present: [],
                                                   observed: observed(devices: ["iotgw-SN1": dev, "vendor-own": .disk(path: "/x")]),
                                                   config: config)
        #expect(unplugged == [.detach(name: "iotgw-SN1")])
        let replugged = try ContainerPlanner.steps(plan: Sample.plan(), present: [PresentDevice(serial: "SN1", ttyNode: "/dev/ttyX0")],
                                                   observed: observed(), config: config)
        #expect(replugged == [.attach(name: "iotgw-SN1", device: dev)])
        // The usb_device node alone (tty gone) cannot satisfy a unix-char grant.
        #expect(try ContainerPlanner.steps(plan: Sample.plan(), present: [PresentDevice(serial: "SN1", ttyNode: nil)],
                                           observed: observed(devices: ["iotgw-SN1": dev]), config: config) == [.detach(name: "iotgw-SN1")])
    }

    @Test func stoppedContainerIsStartedAndChangedLimitsUpdated() throws {
        let newer = Sample.plan(version: 2, cpus: 2)
        let steps = try ContainerPlanner.steps(plan: newer, present: [], observed: observed(running: false), config: config)
        #expect(steps == [.updateConfig(["limits.cpu": "2", "user.iotgw.plan-version": "2"]), .start])
    }

    @Test func refusesAnInstanceNotManagedForTheVendor() {
        var o = observed()
        o.labelledVendor = nil
        #expect(throws: PolicyViolation.self) { try ContainerPlanner.steps(plan: Sample.plan(), present: [], observed: o, config: config) }
        o.labelledVendor = "globex"
        #expect(throws: PolicyViolation.self) { try ContainerPlanner.steps(plan: Sample.plan(), present: [], observed: o, config: config) }
    }

    @Test func capsRejectPlansAskingForMore() throws {
        try ContainerPlanner.checkCaps(Sample.plan(cpus: 2), caps: config.caps)
        #expect { try ContainerPlanner.checkCaps(Sample.plan(cpus: 3), caps: config.caps) } throws: {
            ($0 as? PolicyViolation)?.message.contains("cpus 3 > 2") == true
        }
    }

    @Test func deviceNamesAreSafeForLXD() {
        #expect(ContainerPlanner.deviceName(serial: "A1/B 2") == "iotgw-A1_B_2")
    }

    @Test func presentDevicesMergeUSBAndTTYNodesBySerial() {
        func rec(_ sys: String, _ sub: String, _ node: String) -> DeviceRecord {
            DeviceRecord(syspath: sys, subsystem: sub, devnode: node, vendorID: "0403", productID: "6001", serial: "SN1", manufacturer: nil,
                         product: nil, busPath: nil, vendor: "acme", present: true, state: .attached, lastError: nil, attempts: 0,
                         nextAttemptAt: nil, updatedAt: Date())
        }
        let p = GatewayAgent.presentDevices([rec("/sys/usb1", "usb", "/dev/bus/usb/001/002"), rec("/sys/tty", "tty", "/dev/ttyX0")])
        #expect(p == [PresentDevice(serial: "SN1", ttyNode: "/dev/ttyX0")])
    }
}

@Suite struct GatewayConfigTests {
    func load(_ yaml: String) throws -> GatewayConfig {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UUID().uuidString).yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try GatewayConfig.load(path: path)
    }

    let key = Keys.encode(Sample.vendorKey.publicKey)

    @Test func loadsWithDefaultsAndMatchesVendors() throws {
        let c = try load("""
            vendors:
              - id: acme
                match: [{vendorID: "0403"}]
                daemonURL: http://127.0.0.1:8470
                publicKey: \(key)
                policy: ask
              - id: globex
                match: [{vendorID: "10c4", productID: "ea60"}]
                daemonURL: http://127.0.0.1:8471
                publicKey: \(key)
                policy: auto
            """)
        #expect(c.controlSocket == GatewayConfig.defaultControlSocket)
        #expect(c.lxd.profiles == ["default", "iotgw-vendor"])
        #expect(c.vendor(forUSB: "0403", productID: "6001")?.id == "acme")
        #expect(c.vendor(forUSB: "10C4", productID: "EA60")?.id == "globex")
        #expect(c.vendor(forUSB: "10c4", productID: "0001") == nil)
    }

    @Test(arguments: [
        ("vendors: [{id: Acme, match: [{vendorID: '0403'}], daemonURL: 'http://x', publicKey: K, policy: ask}]", "vendor id"),
        ("vendors: [{id: acme, match: [{vendorID: '04'}], daemonURL: 'http://x', publicKey: K, policy: ask}]", "4 hex digits"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'ftp://x', publicKey: K, policy: ask}]", "daemonURL"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'http://x', publicKey: nope, policy: ask}]", "publicKey"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'http://x', publicKey: K, policy: maybe}]", "policy"),
        ("vendors: [{id: a, match: [{vendorID: '0403'}], daemonURL: 'http://x', publicKey: K, policy: ask}, {id: b, match: [{vendorID: '0403', productID: '6001'}], daemonURL: 'http://y', publicKey: K, policy: ask}]", "both match"),
    ])
    func rejectsBadConfiguration(_ yaml: String, _ expected: String) {
        #expect { try load(yaml.replacingOccurrences(of: "publicKey: K", with: "publicKey: \(key)")) } throws: {
            "\($0)".contains(expected)
        }
    }
}
