import Foundation
import GatewayProtocol
import LXD
import Testing
@testable import GatewayAgent

@Suite struct ContainerPlannerTests {
    let config = Sample.config()
    let tty = PresentDevice.Node(syspath: "/sys/tty/ttyX0", devnode: "/dev/ttyX0", number: DeviceNumber(major: 188, minor: 0))
    func nodePath(_ name: String) -> String { "/run/dev/acme/\(name)" }
    var present: [PresentDevice] { [PresentDevice(serial: "SN1", vendorID: "0403", productID: "6001", tty: tty)] }
    var node: ManagedNode { ManagedNode(path: "/run/dev/acme/iotgw-SN1", syspath: tty.syspath, number: tty.number) }
    var dev: Device { .unixChar(source: "/run/dev/acme/iotgw-SN1", path: "/dev/ttyUSB0", required: false) }

    func steps(_ plan: ProvisioningPlan = Sample.plan(), present: [PresentDevice]? = nil, observed: ContainerObservation) throws -> [ProvisionStep] {
        try ContainerPlanner.steps(plan: plan, present: present ?? self.present, observed: observed, config: config, nodePath: nodePath)
    }

    @Test func absentContainerIsCreatedWithEverythingInOneOperation() throws {
        let steps = try steps(observed: .absent)
        #expect(steps.count == 4)
        guard case .ensureNode(let n) = steps[0], case .verifyImage(let alias, _) = steps[1], case .create(let c) = steps[2],
              case .start = steps[3] else {
            Issue.record("unexpected steps \(steps)")
            return
        }
        // The node stands for the tty udev reported (its syspath and number), not for the kernel's name.
        #expect(n == node)
        #expect(alias == "iotgw-busybox")
        let post = c.post
        #expect(post.name == "iotgw-acme")
        #expect(post.config["security.privileged"] == "false")
        #expect(post.config["security.idmap.isolated"] == "true")
        #expect(post.config["security.nesting"] == "false")
        #expect(post.config["security.devlxd"] == "false")
        #expect(post.config["user.iotgw.vendor"] == "acme")
        #expect(post.config["limits.memory"] == "128MiB")
        #expect(post.devices["root"]?["size"] == "512MiB")
        #expect(post.devices["iotgw-SN1"] == dev)
        // The NIC is the instance's own, filtered and port-isolated: a profile cannot weaken it.
        #expect(post.devices["eth0"]?["security.mac_filtering"] == "true")
        #expect(post.devices["eth0"]?["security.ipv4_filtering"] == "true")
        #expect(post.devices["eth0"]?["security.ipv6_filtering"] == "true")
        #expect(post.devices["eth0"]?["security.port_isolation"] == "true")
        #expect(post.profiles == ["default", "iotgw-vendor"])
    }

    func observed(devices: [String: Device] = [:], running: Bool = true, plan: ProvisioningPlan = Sample.plan(),
                  nodes: [String: DeviceNumber] = [:]) -> ContainerObservation {
        ContainerObservation(exists: true, running: running, labelledVendor: "acme",
                             config: ContainerPlanner.desiredConfig(plan, caps: config.caps),
                             devices: ContainerPlanner.baseDevices(plan, lxd: config.lxd).merging(devices) { $1 }, nodes: nodes)
    }

    @Test func convergedContainerNeedsNothing() throws {
        #expect(try steps(observed: observed(devices: ["iotgw-SN1": dev], nodes: [node.path: node.number])).isEmpty)
    }

    @Test func unplugDetachesOnlyManagedDevicesAndRemovesTheNodeAndReplugAttaches() throws {
        let unplugged = try steps(present: [], observed: observed(devices: ["iotgw-SN1": dev, "vendor-own": .disk(path: "/x")],
                                                                  nodes: [node.path: node.number]))
        #expect(unplugged == [.detach(name: "iotgw-SN1"), .removeNode(path: node.path)])
        let replugged = try steps(observed: observed())
        #expect(replugged == [.ensureNode(node), .attach(name: "iotgw-SN1", device: dev)])
        // The usb_device node alone (tty gone) cannot satisfy a unix-char grant.
        #expect(try steps(present: [PresentDevice(serial: "SN1", vendorID: "0403", productID: "6001")],
                          observed: observed(devices: ["iotgw-SN1": dev])) == [.detach(name: "iotgw-SN1")])
    }

    @Test func aNodeForAnotherDeviceNumberIsMadeAgain() throws {
        // Same serial, but the node on disk has another number (a stale node from before a restart).
        let s = try steps(observed: observed(devices: ["iotgw-SN1": dev], nodes: [node.path: DeviceNumber(major: 188, minor: 7)]))
        #expect(s == [.ensureNode(node)])
    }

    @Test func aDeviceWhoseUSBIDsDifferFromTheGrantIsNotPassedIn() throws {
        let other = [PresentDevice(serial: "SN1", vendorID: "0403", productID: "6015", tty: tty)]
        #expect(try steps(present: other, observed: observed()).isEmpty)
    }

    @Test func rawUSBTargetsThatOneDeviceAtItsOwnBusPath() throws {
        var plan = Sample.plan()
        plan.devices = [DeviceGrant(serial: "SN1", vendorID: "0403", productID: "6001", kind: .usb, path: nil)]
        let usb = PresentDevice.Node(syspath: "/sys/usb1/1-2", devnode: "/dev/bus/usb/001/004", number: DeviceNumber(major: 189, minor: 3))
        let s = try steps(plan, present: [PresentDevice(serial: "SN1", vendorID: "0403", productID: "6001", tty: tty, usb: usb)],
                          observed: observed(plan: plan))
        #expect(s == [.ensureNode(ManagedNode(path: node.path, syspath: usb.syspath, number: usb.number)),
                      .attach(name: "iotgw-SN1", device: .unixChar(source: node.path, path: "/dev/bus/usb/001/004", required: false))])
        // Never LXD's `usb` type, which passes every device with those IDs.
        #expect(!s.contains { if case .attach(_, let d) = $0 { d.type == "usb" } else { false } })
    }

    @Test func stoppedContainerIsStartedAndChangedLimitsUpdated() throws {
        let newer = Sample.plan(version: 2, cpus: 2)
        let s = try steps(newer, present: [], observed: observed(running: false))
        #expect(s == [.updateConfig(["limits.cpu": "2", "user.iotgw.plan-version": "2"]), .setDevice(name: "root", device: .disk(path: "/", pool: "default", size: "512MiB")), .start].filter {
            if case .setDevice = $0 { false } else { true }
        })
    }

    @Test func afterAnLXDRestartEveryKeptDeviceIsPassedInAfresh() throws {
        let o = observed(devices: ["iotgw-SN1": dev, "iotgw-OLD": dev], nodes: [node.path: node.number])
        #expect(try steps(observed: o) == [.detach(name: "iotgw-OLD")])
        #expect(try ContainerPlanner.steps(plan: Sample.plan(), present: present, observed: o, config: config, refresh: true, nodePath: nodePath)
            == [.detach(name: "iotgw-OLD"), .detach(name: "iotgw-SN1"), .attach(name: "iotgw-SN1", device: dev)])
    }

    /// The owner's disk rate is on the root disk of every vendor container; a container made before it
    /// (or with another rate) gets it on the next reconcile, live; 0 leaves the disk unthrottled.
    @Test func theRootDiskCarriesTheOwnersDiskRate() throws {
        #expect(try steps(observed: .absent).contains { if case .create(let c) = $0 { c.post.devices["root"]?["limits.max"] == "50MB" } else { false } })
        var o = observed()
        o.devices["root"] = .disk(path: "/", pool: "default", size: "512MiB")
        var wanted = Device.disk(path: "/", pool: "default", size: "512MiB")
        wanted.config["limits.max"] = "50MB"
        #expect(try steps(present: [], observed: o) == [.setDevice(name: "root", device: wanted)])
        var off = config.lxd
        off.vendorDiskMBps = 0
        #expect(ContainerPlanner.baseDevices(Sample.plan(), lxd: off)["root"]?["limits.max"] == nil)
    }

    @Test func aWeakenedNICIsPutBack() throws {
        var o = observed()
        o.devices["eth0"] = .nic(network: "iotgwbr0")
        #expect(try steps(present: [], observed: o) == [.setDevice(name: "eth0", device: ContainerPlanner.nic(network: "iotgwbr0"))])
    }

    @Test func anImageTheVendorServesIsFetchedAndTheContainerMadeFromItsFingerprint() throws {
        var plan = Sample.plan()
        plan.container.image.url = "https://127.0.0.1/images/busybox.tar.gz"
        let steps = try steps(plan, observed: .absent)
        guard case .fetchImage(let ref) = steps[1], case .create(let c) = steps[2] else {
            Issue.record("unexpected steps \(steps)")
            return
        }
        #expect(ref == plan.container.image)
        #expect(c.post.source == .image(fingerprint: String(repeating: "a", count: 64)), "never the alias, which anyone may repoint")
        #expect(!steps.contains { if case .verifyImage = $0 { true } else { false } })
    }

    @Test func imageURLsOnlyFromTheHostsTheOwnerAllows() throws {
        var vendor = config.vendors[0]
        vendor.allowInsecureHTTP = true
        var plan = Sample.plan()
        try GrantCheck.checkImage(plan, vendor: vendor)  // no URL: nothing to check
        for ok in ["http://127.0.0.1:8471/i.tar.gz", "https://127.0.0.1/i.tar.gz"] {
            plan.container.image.url = ok
            try GrantCheck.checkImage(plan, vendor: vendor)
        }
        for (bad, why) in [("http://192.168.1.1/admin", "not one the owner allows"), ("http://localhost/i", "not one the owner allows")] {
            plan.container.image.url = bad
            #expect { try GrantCheck.checkImage(plan, vendor: vendor) } throws: {
                ($0 as? GatewayError)?.code == .imageSource && "\($0)".contains(why)
            }
        }
        vendor.allowInsecureHTTP = false
        plan.container.image.url = "http://127.0.0.1/i.tar.gz"
        #expect { try GrantCheck.checkImage(plan, vendor: vendor) } throws: { "\($0)".contains("must be https") }
        vendor.imageHosts = ["images.acme.example"]
        plan.container.image.url = "https://images.acme.example/i.tar.gz"
        try GrantCheck.checkImage(plan, vendor: vendor)
        plan.container.image.url = "https://127.0.0.1/i.tar.gz"
        #expect { try GrantCheck.checkImage(plan, vendor: vendor) } throws: { ($0 as? GatewayError)?.code == .imageSource }
    }

    @Test func refusesAnInstanceNotManagedForTheVendor() {
        var o = observed()
        o.labelledVendor = nil
        #expect { try steps(present: [], observed: o) } throws: { ($0 as? GatewayError)?.code == .notManaged }
        o.labelledVendor = "globex"
        #expect { try steps(present: [], observed: o) } throws: { ($0 as? GatewayError)?.code == .notManaged }
    }

    @Test func capsRejectPlansAskingForMore() throws {
        try GrantCheck.checkCaps(Sample.plan(cpus: 2), caps: config.caps)
        #expect { try GrantCheck.checkCaps(Sample.plan(cpus: 3), caps: config.caps) } throws: {
            ($0 as? GatewayError)?.code == .overCaps && "\($0)".contains("cpus 3 > 2")
        }
    }

    @Test func deviceNamesAreSafeForLXDAndNeverShared() {
        #expect(ContainerPlanner.isUSBDeviceNode("/dev/bus/usb/001/042"))
        for bad in ["/dev/bus/usb/1/42", "/dev/bus/usb/001/0420", "/dev/bus/usb/001-042", "/dev/bus/usb/00a/042", "/dev/bus/usb/../../sda",
                    "/dev/bus/usb/001/042/", "/dev/bus/usb/001/04"] {
            #expect(!ContainerPlanner.isUSBDeviceNode(bad), "\(bad)")
        }
        #expect(ContainerPlanner.deviceName(serial: String(repeating: "s", count: 48)) == "iotgw-" + String(repeating: "s", count: 48))
        #expect(ContainerPlanner.deviceName(serial: String(repeating: "s", count: 49)).count == "iotgw-x".count + 16)
        #expect(ContainerPlanner.deviceName(serial: "ACME-0001") == "iotgw-ACME-0001")
        let a = ContainerPlanner.deviceName(serial: "A.1"), b = ContainerPlanner.deviceName(serial: "A_1")
        #expect(a != b)
        #expect(a.hasPrefix("iotgw-x") && a.count == "iotgw-x".count + 16)
    }

    @Test func presentDevicesMergeUSBAndTTYNodesBySerialAndIDs() {
        func rec(_ sys: String, _ sub: String, _ node: String, pid: String = "6001") -> DeviceRecord {
            DeviceRecord(syspath: sys, subsystem: sub, devnode: node, vendorID: "0403", productID: pid, serial: "SN1", manufacturer: nil,
                         product: nil, busPath: nil, vendor: "acme", present: true, state: .attached, lastError: nil, attempts: 0,
                         nextAttemptAt: nil, updatedAt: Date())
        }
        let numbers = ["/sys/usb1": DeviceNumber(major: 189, minor: 1), "/sys/tty": DeviceNumber(major: 188, minor: 0)]
        let p = VendorWorker.presentDevices([rec("/sys/usb1", "usb", "/dev/bus/usb/001/002"), rec("/sys/tty", "tty", "/dev/ttyX0"),
                                             rec("/sys/other", "tty", "/dev/ttyX9", pid: "6015")], number: { numbers[$0] })
        #expect(p.count == 2)
        #expect(p.first { $0.productID == "6001" } == PresentDevice(serial: "SN1", vendorID: "0403", productID: "6001",
                                                                    tty: .init(syspath: "/sys/tty", devnode: "/dev/ttyX0", number: numbers["/sys/tty"]!),
                                                                    usb: .init(syspath: "/sys/usb1", devnode: "/dev/bus/usb/001/002", number: numbers["/sys/usb1"]!)))
        // A node udev gave no number (the device is gone) is not a node to pass in.
        #expect(p.first { $0.productID == "6015" }?.tty == nil)
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
                allowInsecureHTTP: true
                publicKey: \(key)
                policy: ask
              - id: globex
                match: [{vendorID: "10c4", productID: "ea60"}]
                daemonURL: https://globex.example
                publicKey: \(key)
                policy: auto
            """)
        #expect(c.controlSocket == GatewayConfig.defaultControlSocket)
        #expect(c.lxd.profiles == ["default", "iotgw-vendor"])
        #expect(c.lxd.allowUnenforcedDiskLimits == false)
        #expect(c.vendors[0].allowInsecureHTTP && !c.vendors[1].allowInsecureHTTP)
        #expect(c.vendors[0].appUpdates == .auto)
        #expect(c.deviceDirectory == GatewayConfig.defaultDeviceDirectory)
        #expect(c.vendor(forUSB: "0403", productID: "6001")?.id == "acme")
        #expect(c.vendor(forUSB: "10C4", productID: "EA60")?.id == "globex")
        #expect(c.vendor(forUSB: "10c4", productID: "0001") == nil)
    }

    @Test(arguments: [
        ("vendors: [{id: Acme, match: [{vendorID: '0403'}], daemonURL: 'https://x', publicKey: K, policy: ask}]", "vendor id"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'http://x', publicKey: K, policy: ask}]", "allowInsecureHTTP"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'https://u:p@x', publicKey: K, policy: ask}]", "user info"),
        ("delivery: {profiles: {agent: ../../var/lib/iot-gateway}}", "delivery.profiles"),
        ("deviceDirectory: run/devices", "deviceDirectory"),
        ("vendors: [{id: acme, match: [{vendorID: '04'}], daemonURL: 'http://x', publicKey: K, policy: ask}]", "4 hex digits"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'ftp://x', publicKey: K, policy: ask}]", "daemonURL"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'https://x', publicKey: nope, policy: ask}]", "publicKey"),
        ("vendors: [{id: acme, match: [{vendorID: '0403'}], daemonURL: 'https://x', publicKey: K, policy: maybe}]", "policy"),
        ("vendors: [{id: a, match: [{vendorID: '0403'}], daemonURL: 'https://x', publicKey: K, policy: ask}, {id: b, match: [{vendorID: '0403', productID: '6001'}], daemonURL: 'https://y', publicKey: K, policy: ask}]", "both match"),
    ])
    func rejectsBadConfiguration(_ yaml: String, _ expected: String) {
        #expect { try load(yaml.replacingOccurrences(of: "publicKey: K", with: "publicKey: \(key)")) } throws: {
            "\($0)".contains(expected)
        }
    }
}

/// The image change: when a rebuild is due, and what the candidate is.
@Suite struct RebuildPlanningTests {
    let config = Sample.config()

    func observed(baseImage: String?) -> ContainerObservation {
        var c = ContainerPlanner.desiredConfig(Sample.plan(), caps: config.caps)
        c[ContainerPlanner.baseImageKey] = baseImage
        return ContainerObservation(exists: true, running: true, labelledVendor: "acme", config: c, devices: [:])
    }

    @Test func onlyAnExistingContainerMadeFromAnotherImageIsRebuilt() {
        let plan = Sample.plan()
        let fp = plan.container.image.fingerprint
        #expect(!ContainerPlanner.needsRebuild(plan: plan, observed: observed(baseImage: fp)))
        #expect(ContainerPlanner.needsRebuild(plan: plan, observed: observed(baseImage: String(repeating: "e", count: 64))))
        // An instance that does not say what it was made from is not rebuilt on a guess; an absent one is created.
        #expect(!ContainerPlanner.needsRebuild(plan: plan, observed: observed(baseImage: nil)))
        #expect(!ContainerPlanner.needsRebuild(plan: plan, observed: .absent))
    }

    @Test func theCandidateIsBuiltBesideTheOldOneWithoutTheVendorsDevices() throws {
        let plan = Sample.plan()
        let steps = ContainerPlanner.candidateSteps(plan: plan, config: config)
        guard steps.count == 3, case .verifyImage = steps[0], case .create(let c) = steps[1], case .start = steps[2] else {
            Issue.record("unexpected steps \(steps)")
            return
        }
        #expect(c.post.name == "iotgw-acme-next")
        #expect(c.post.config[ContainerPlanner.candidateKey] == plan.container.image.fingerprint)
        #expect(c.post.config[ContainerPlanner.vendorKey] == "acme")
        #expect(c.post.devices.keys.filter { $0.hasPrefix(ContainerPlanner.devicePrefix) }.isEmpty, "the devices stay with the old container")
        #expect(c.post.source == .image(fingerprint: plan.container.image.fingerprint))
        // The longest vendor id still gives valid LXD names.
        let longest = String(repeating: "v", count: 31)
        try LXDName.validateInstance(ContainerPlanner.candidateName(vendor: longest))
        try LXDName.validateInstance(ContainerPlanner.previousName(vendor: longest))
    }
}
