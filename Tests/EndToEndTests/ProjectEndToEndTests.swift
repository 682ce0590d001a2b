import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

extension EndToEndTests {
    /// `lxd.projects: true`: the vendor's container lives in a restricted project of its own, and LXD
    /// itself refuses, through its API as that project, everything the gateway would never do: a
    /// privileged or nested container, raw config, a host disk, a block or proxy device, a second
    /// instance, more memory than the owner's caps.
    @Test func aVendorsProjectRefusesWhatTheGatewayWouldNeverDo() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        let busybox = try await lxd.imageAlias("iotgw-busybox").target
        let vendorID = E2E.vendorID("prj")
        let container = ProvisioningPlan.containerName(forVendor: vendorID)
        let inside = lxd.inProject(container)
        let issued = Date()
        let vendor = Attacker(id: vendorID, port: freePort()) { gw in
            ProvisioningPlan(vendor: vendorID, gatewayID: gw, version: 1, issuedAt: issued, expiresAt: issued.addingTimeInterval(7200),
                             container: ContainerSpec(name: container, image: ImageRef(alias: "iotgw-busybox", fingerprint: busybox),
                                                      limits: ResourceLimits(cpus: 1, memoryMiB: 128, diskMiB: 512, processes: 200), network: .nat),
                             devices: [DeviceGrant(serial: "PRJ-1", vendorID: "1d53", productID: "6018", kind: .unixChar, path: "/dev/ttyUSB0")],
                             apps: [])
        }
        let gateway = try GatewayFixture(vendors: [], root: root, extraVendorsYAML: [vendor.entryYAML(policy: "auto", usbVendorID: "1d53")],
                                         projects: true)
        // The container goes with the clean-up of `serving` (as that project); its project and profiles after it.
        let projects = VendorProjects(lxd: lxd, config: try GatewayConfig.load(path: gateway.configPath), logger: .init(label: "cleanup"))
        do { try await refusals() } catch {
            try? await projects.remove(container: container)
            throw error
        }
        try await projects.remove(container: container)
        await #expect(throws: LXDError.self, "the project is gone with its container") { try await lxd.project(container) }

        func refusals() async throws {
            try await vendor.serving(inside, gateway: gateway, containers: [container]) { testbed in
                let node = try CharNode()
                try testbed.plug(vendorID: "1d53", productID: "6018", serial: "PRJ-1", ttyName: "ttyUSB50", devnode: node.path)
                _ = try await eventually("the device inside, in the vendor's project", timeout: .seconds(60)) {
                    try await E2E.deviceInside(inside, container, "/dev/ttyUSB0") ? true : nil
                }
                await #expect(throws: LXDError.self, "not in the default project") { try await lxd.instance(container) }
                let project = try await lxd.project(container)
                #expect(project.config["restricted"] == "true" && project.config["limits.containers"] == "1")

                let before = try await inside.instance(container).instance
                let attempts: [(String, String, () async throws -> Void)] = [
                    ("a privileged container", "Privileged containers are forbidden",
                     { try await inside.patchInstance(container, config: ["security.privileged": "true"]) }),
                    ("nesting", "nesting is forbidden", { try await inside.patchInstance(container, config: ["security.nesting": "true"]) }),
                    ("raw LXC config", "low-level", { try await inside.patchInstance(container, config: ["raw.lxc": "lxc.cap.drop="]) }),
                    ("raw id map", "low-level", { try await inside.patchInstance(container, config: ["raw.idmap": "both 0 0"]) }),
                    ("the host's root as a disk", "not backed by a pool",
                     { try await inside.patchInstance(container, devices: ["host": .disk(path: "/mnt/host", source: "/")]) }),
                    ("a block device", "Unix block devices are forbidden",
                     { try await inside.patchInstance(container, devices: ["blk": Device(["type": "unix-block", "source": "/dev/vda"])]) }),
                    ("a proxy to the host", "Proxy devices are forbidden",
                     { try await inside.patchInstance(container, devices: ["px": Device(["type": "proxy", "listen": "tcp:0.0.0.0:2222",
                                                                                          "connect": "tcp:127.0.0.1:22"])]) }),
                    ("more memory than the owner's caps", "maximum aggregate",
                     { try await inside.patchInstance(container, config: ["limits.memory": "4GiB"]) }),
                    ("a second container", "",
                     { try await inside.createInstance(InstancesPost(name: "\(container)-2", source: .image(alias: "iotgw-busybox"),
                                                                     config: ["limits.cpu": "1", "limits.memory": "64MiB", "limits.processes": "50"],
                                                                     devices: ["root": .disk(path: "/", pool: "default", size: "100MiB")])) }),
                ]
                for (what, reason, attempt) in attempts {
                    do {
                        try await attempt()
                        Issue.record("LXD let the project have \(what)")
                    } catch let e as LXDError {
                        #expect(reason.isEmpty || e.message.contains(reason), "\(what): \(e.message)")
                        print("project refuses \(what): \(e.message)")
                    }
                }
                let after = try await inside.instance(container).instance
                #expect(after.config == before.config && after.devices == before.devices, "nothing changed")
                #expect(try await inside.listInstances().map(\.name) == [container])
            }
        }
    }
}
