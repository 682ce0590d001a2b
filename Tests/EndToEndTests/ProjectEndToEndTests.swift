import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

extension EndToEndTests {
    /// A project without profiles of its own (`features.profiles` false) sees the default project's under
    /// its name: removing it must delete the project only, never the owner's profiles through it.
    @Test func removingAProjectWithoutProfilesOfItsOwnLeavesTheDefaultProfilesAlone() async throws {
        let lxd = try E2E.lxd()
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let project = "t-noprof-\(tag)", marker = "t-keep-\(tag)"
        try await lxd.createProfile(marker, ProfilePut(description: "must survive"))
        try await lxd.createProject(project, description: "test", config: ["features.profiles": "false", "features.images": "false"])
        #expect(try await lxd.inProject(project).listProfiles().contains { $0.name == marker }, "LXD shows the default's profiles in it")
        let root = try E2E.tempRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        let gateway = try GatewayFixture(vendors: [], root: root, projects: true)
        try await VendorProjects(lxd: lxd, config: try GatewayConfig.load(path: gateway.configPath), logger: .init(label: "t")).remove(container: project)
        await #expect(throws: LXDError.self, "the project is gone") { try await lxd.project(project) }
        #expect(try await lxd.profile(marker).profile.description == "must survive")
        #expect(try await lxd.listProfiles().contains { $0.name == "iotgw-vendor" })
        try await lxd.deleteProfile(marker)
    }

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

    /// `lxd.projects` switched on moves the container made in the default project into its restricted
    /// project (stopped, moved with its snapshot, started again), where its device still is; switched off,
    /// it moves back and the project goes. Never a second container, whichever way.
    @Test func switchingProjectsOnAndOffMovesTheContainerAndNeverDuplicatesIt() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let vendor = try VendorFixture(id: E2E.vendorID("mov"), usbVendorID: "1d54", serials: ["MOV-1"], image: "iotgw-busybox",
                                       fingerprint: try await lxd.imageAlias("iotgw-busybox").target, root: root)
        let gateway = try GatewayFixture(vendors: [(vendor, .auto)], root: root)
        try vendor.enroll(try gateway.identity())
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        let inProject = lxd.inProject(container)
        func switchProjects(_ on: Bool) throws {
            let yaml = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
            try yaml.replacingOccurrences(of: "projects: \(!on)", with: "projects: \(on)").write(toFile: gateway.configPath, atomically: true,
                                                                                                 encoding: .utf8)
        }
        func everywhere() async throws -> [String] {
            try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id], allProjects: true).map { "\($0.project ?? "default")/\($0.name)" }
        }
        let projects = VendorProjects(lxd: lxd, config: try GatewayConfig.load(path: gateway.configPath), logger: .init(label: "cleanup"))
        defer { try? FileManager.default.removeItem(at: root) }
        do {
            try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
                let testbed = try await gateway.startAndPlug(vendor, serial: "MOV-1", ttyName: "ttyUSB47")
                _ = try await eventually("the device inside, in the default project", timeout: .seconds(60)) {
                    try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
                }
                try await lxd.createSnapshot(container, name: "owner-before-move")

                /// Restarts the gateway with `projects` switched, and waits for the one container in `project`, running with its device.
                func restart(projects on: Bool, expecting project: String, through client: LXDClient) async throws {
                    gateway.daemon?.stop()
                    try switchProjects(on)
                    try await gateway.start(testbed: testbed)
                    _ = try await eventually("moved into \(project)", timeout: .seconds(60)) {
                        try await everywhere() == ["\(project)/\(container)"] ? true : nil
                    }
                    _ = try await eventually("running in \(project) with its device", timeout: .seconds(60)) {
                        try await E2E.deviceInside(client, container, "/dev/ttyUSB0") ? true : nil
                    }
                }
                try await restart(projects: true, expecting: container, through: inProject)
                #expect(try await inProject.snapshots(container).map(\.name).contains("owner-before-move"))
                #expect(try await lxd.project(container).config["restricted"] == "true")

                try await restart(projects: false, expecting: "default", through: lxd)
                await #expect(throws: LXDError.self, "its project is gone") { try await lxd.project(container) }
            }
        } catch {
            try? await inProject.forceDeleteInstance(container)
            try? await projects.remove(container: container)
            throw error
        }
    }
}
