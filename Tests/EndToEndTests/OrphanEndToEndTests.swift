import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

extension EndToEndTests {
    /// On real LXD: a managed container of a vendor the owner removed from the configuration is stopped
    /// and listed; `iot-gateway remove` deletes it; a container without the managed label, and one of
    /// another gateway, are never touched whatever their name; a vendor still configured cannot be removed.
    @Test func orphansAreStoppedListedAndRemovedOnlyByLabel() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let image = "iotgw-busybox"
        let vendor = try VendorFixture(id: E2E.vendorID("kept"), usbVendorID: "0403", serials: [], image: image,
                                       fingerprint: try await lxd.imageAlias(image).target, root: root)
        let gateway = try GatewayFixture(vendors: [(vendor, .ask)], root: root, extraYAML: "orphans: {graceSeconds: 3600, checkSeconds: 1}")
        let gw = try gateway.identity()
        let gone = E2E.vendorID("gone")
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let orphan = "iotgw-orphan-\(tag)", lookalike = "iotgw-lookalike-\(tag)", foreign = "iotgw-foreign-\(tag)"
        let labels: [String: [String: String]] = [
            orphan: ["user.iotgw.managed": "true", "user.iotgw.gateway": gw.id, "user.iotgw.vendor": gone],
            lookalike: ["user.iotgw.gateway": gw.id, "user.iotgw.vendor": gone],
            foreign: ["user.iotgw.managed": "true", "user.iotgw.gateway": "gw-0000000000000000", "user.iotgw.vendor": gone],
        ]

        try await E2EContext.cleaningUp(lxd, [orphan, lookalike, foreign], daemons: { [gateway.daemon] }) {
            for (name, config) in labels {
                try await lxd.createInstance(InstancesPost(name: name, source: .image(alias: image), config: config))
                try await lxd.setState(name, .start, timeout: 30, force: false)
            }
            let testbed = try Testbed()
            try await gateway.start(testbed: testbed)

            let listed = try await eventually("the orphan stopped and listed") {
                let orphans = try gateway.json(["orphans"], as: [Orphan].self)
                return orphans.first { $0.container == orphan && $0.status == "Stopped" && $0.deleteAfter != nil }.map { _ in orphans }
            }
            #expect(listed.map(\.container) == [orphan])
            #expect(try await lxd.instance(orphan).instance.isRunning == false)
            #expect(try await lxd.instance(orphan).instance.config[OrphanSweeper.orphanedAtKey] != nil)
            #expect(try await lxd.instance(lookalike).instance.isRunning, "no managed label: never touched")
            #expect(try await lxd.instance(foreign).instance.isRunning, "another gateway's: never touched")

            let refused = try gateway.cli(["remove", vendor.id])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("still in the configuration"), "\(refused.stderr)")

            let removed = try gateway.cli(["remove", gone])
            #expect(removed.status == 0, "\(removed.stderr)")
            #expect(removed.stdout.contains("deleted \(orphan)"))
            #expect(try await lxd.instanceExists(orphan) == false)
            #expect(try await lxd.instance(lookalike).instance.isRunning)
            #expect(try await lxd.instance(foreign).instance.isRunning)
            #expect(try gateway.json(["orphans"], as: [Orphan].self).isEmpty)
        }
    }
}

extension EndToEndTests {
    /// A signed empty plan: the vendor withdraws. Without asking the owner (it grants nothing), the device
    /// is detached, the container stopped and listed as an orphan with its deletion time, and the owner
    /// may delete it at once although the vendor is still configured.
    @Test func aSignedEmptyPlanDecommissionsTheVendorsContainer() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        let busybox = try await lxd.imageAlias("iotgw-busybox").target
        let vendorID = E2E.vendorID("wdr")
        let container = ProvisioningPlan.containerName(forVendor: vendorID)
        let issued = Date()
        let withdrawn = Shared(false)
        let vendor = Attacker(id: vendorID, port: freePort()) { gw in
            let out = withdrawn.value
            return ProvisioningPlan(vendor: vendorID, gatewayID: gw, version: out ? 2 : 1, issuedAt: issued, expiresAt: issued.addingTimeInterval(7200),
                                    container: ContainerSpec(name: container, image: ImageRef(alias: "iotgw-busybox", fingerprint: busybox),
                                                             limits: ResourceLimits(cpus: 1, memoryMiB: 128, diskMiB: 512, processes: 200), network: .none),
                                    devices: out ? [] : [DeviceGrant(serial: "WDR-1", vendorID: "1d52", productID: "6018", kind: .unixChar, path: "/dev/ttyUSB0")],
                                    apps: [])
        }
        let gateway = try GatewayFixture(vendors: [], root: root, extraVendorsYAML: [vendor.entryYAML(policy: "ask", usbVendorID: "1d52")],
                                         extraYAML: "planSyncSeconds: 1\norphans: {graceSeconds: 3600, checkSeconds: 1}")
        try await vendor.serving(lxd, gateway: gateway, containers: [container]) { testbed in
            let node = try CharNode()
            try testbed.plug(vendorID: "1d52", productID: "6018", serial: "WDR-1", ttyName: "ttyUSB49", devnode: node.path)
            let approval = try await eventually("the approval") { try gateway.approvals().first { $0.vendor == vendorID } }
            #expect(try gateway.cli(["approve", "--yes", "\(approval.id)"]).status == 0)
            _ = try await eventually("the device inside", timeout: .seconds(60)) {
                try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
            }

            withdrawn.set(true)
            let orphan = try await eventually("the container retired", timeout: .seconds(60)) {
                try gateway.json(["orphans"], as: [Orphan].self).first { $0.container == container && $0.deleteAfter != nil }
            }
            #expect(orphan.status == "Stopped")
            #expect(orphan.vendor == vendorID)
            #expect(try gateway.approvals().isEmpty, "granting nothing needs no approval")
            let instance = try await lxd.instance(container).instance
            #expect(!instance.isRunning)
            #expect(!instance.devices.keys.contains { $0.hasPrefix(ContainerPlanner.devicePrefix) }, "the device is detached: \(instance.devices.keys)")
            #expect(instance.config[OrphanSweeper.orphanedAtKey] != nil)
            let device = try gateway.devices().first { $0.serial == "WDR-1" }
            #expect(device?.error?.contains("withdrew") == true)

            let removed = try gateway.cli(["remove", vendorID])
            if removed.status != 0, let log = try? String(contentsOf: gateway.dir.appendingPathComponent("iot-gateway-client-1.log"), encoding: .utf8) {
                print(log.split(separator: "\n").suffix(30).joined(separator: "\n"))
            }
            #expect(removed.status == 0, "the owner deletes a withdrawn vendor's container at once: \(removed.stderr)")
            await #expect(throws: LXDError.self) { try await lxd.instance(container) }
        }
    }

    /// The vendor's own command, with the real `iot-daemon`: `withdraw` signs an empty plan and the gateway
    /// retires the container (devices out, stopped, labelled for deletion); `withdraw --undo` grants the
    /// device again and, once approved (policy auto here), the container runs again with the device and
    /// without the label, so a later withdrawal would retire it again.
    @Test func theVendorsWithdrawCommandRetiresTheContainerAndUndoBringsItBack() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let vendor = try VendorFixture(id: E2E.vendorID("wcmd"), usbVendorID: "1d53", serials: ["WCMD-1"], image: "iotgw-busybox",
                                       fingerprint: try await lxd.imageAlias("iotgw-busybox").target, root: root)
        let gateway = try GatewayFixture(vendors: [(vendor, .auto)], root: root,
                                         extraYAML: "planSyncSeconds: 1\norphans: {graceSeconds: 3600, checkSeconds: 1}")
        let gw = try gateway.identity()
        try vendor.enroll(gw)
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        let daemon = try Bin.path("iot-daemon")
        try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
            try await gateway.startAndPlug(vendor, serial: "WCMD-1", ttyName: "ttyUSB48")
            _ = try await eventually("the device inside", timeout: .seconds(60)) {
                try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
            }

            let unknown = try run(daemon, ["withdraw", "--config", vendor.configPath, "--gateway-id", "gw-0000000000000000"])
            #expect(unknown.status != 0 && unknown.stderr.contains("not enrolled"), "\(unknown.stderr)")
            let out = try run(daemon, ["withdraw", "--config", vendor.configPath, "--gateway-id", gw.id])
            #expect(out.status == 0 && out.stderr.contains("withdrew everything"), "\(out.stderr)")
            let orphan = try await eventually("the container retired", timeout: .seconds(60)) {
                try gateway.json(["orphans"], as: [Orphan].self).first { $0.container == container && $0.deleteAfter != nil }
            }
            #expect(orphan.status == "Stopped")
            #expect(!(try await lxd.instance(container).instance.devices.keys.contains { $0.hasPrefix(ContainerPlanner.devicePrefix) }))

            let back = try run(daemon, ["withdraw", "--undo", "--config", vendor.configPath, "--gateway-id", gw.id])
            #expect(back.status == 0 && back.stderr.contains("back"), "\(back.stderr)")
            _ = try await eventually("running again with the device", timeout: .seconds(60)) {
                try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
            }
            #expect(try await lxd.instance(container).instance.config[OrphanSweeper.orphanedAtKey] == nil, "no longer labelled an orphan")
            #expect(try gateway.json(["orphans"], as: [Orphan].self).isEmpty)
            #expect(try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id]).count == 1)
        }
    }

    /// With `orphans.exportDirectory`, an orphan is exported (LXD's backup tarball, snapshots included) before it
    /// is deleted, here a withdrawn vendor's container in its restricted project (which refuses backups unless
    /// the gateway allows them for the export): the tarball is there and readable, then container and project go.
    @Test func anOrphanIsExportedBeforeItIsDeleted() async throws {
        var lxd = try E2E.lxd()
        lxd.projectRouting = VendorProjects.route
        let root = try E2E.tempRoot()
        let exports = root.appendingPathComponent("exports")
        let vendor = try VendorFixture(id: E2E.vendorID("exp"), usbVendorID: "1d55", serials: ["EXP-1"], image: "iotgw-busybox",
                                       fingerprint: try await lxd.imageAlias("iotgw-busybox").target, root: root)
        let gateway = try GatewayFixture(vendors: [(vendor, .auto)], root: root, projects: true, extraYAML: """
            planSyncSeconds: 1
            orphans: {graceSeconds: 3600, checkSeconds: 1, exportDirectory: \(exports.path)}
            """)
        let gw = try gateway.identity()
        try vendor.enroll(gw)
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        let projects = VendorProjects(lxd: lxd, config: try GatewayConfig.load(path: gateway.configPath), logger: .init(label: "cleanup"))
        defer { try? FileManager.default.removeItem(at: root) }
        do {
            try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
                try await gateway.startAndPlug(vendor, serial: "EXP-1", ttyName: "ttyUSB46")
                _ = try await eventually("the device inside", timeout: .seconds(60)) {
                    try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
                }
                #expect(try await lxd.exec(container, ["sh", "-c", "echo kept > /root/data"]).exitCode == 0)
                let out = try run(try Bin.path("iot-daemon"), ["withdraw", "--config", vendor.configPath, "--gateway-id", gw.id])
                #expect(out.status == 0, "\(out.stderr)")
                _ = try await eventually("the container retired", timeout: .seconds(60)) {
                    try gateway.json(["orphans"], as: [Orphan].self).first { $0.container == container && $0.deleteAfter != nil }
                }
                let removed = try gateway.cli(["remove", vendor.id])
                if removed.status != 0, let log = try? String(contentsOf: gateway.dir.appendingPathComponent("iot-gateway-client-1.log"), encoding: .utf8) {
                    print(log.split(separator: "\n").suffix(15).joined(separator: "\n"))
                }
                #expect(removed.status == 0, "\(removed.stdout) \(removed.stderr)")
                let files = try FileManager.default.contentsOfDirectory(atPath: exports.path)
                #expect(files.count == 1 && files[0].hasPrefix(container + "-") && files[0].hasSuffix(".tar.gz"), "\(files)")
                let attributes = try FileManager.default.attributesOfItem(atPath: exports.path)
                #expect((attributes[.posixPermissions] as? Int) == 0o700)
                if let file = files.first {
                    let listing = try run("/bin/tar", ["-tzf", exports.appendingPathComponent(file).path])
                    #expect(listing.status == 0 && listing.stdout.contains("backup/index.yaml"), "\(listing.stderr)")
                    let data = try run("/bin/tar", ["-xzOf", exports.appendingPathComponent(file).path, "backup/container/rootfs/root/data"])
                    #expect(data.stdout == "kept\n", "the vendor's data is in the export: \(data.stderr)")
                }
                await #expect(throws: LXDError.self, "deleted after the export") { try await lxd.instance(container) }
                await #expect(throws: LXDError.self, "its project too") { try await lxd.project(container) }
            }
        } catch {
            try? await projects.remove(container: container)
            throw error
        }
    }
}
