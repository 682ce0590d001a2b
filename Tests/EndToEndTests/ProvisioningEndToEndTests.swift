import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

/// The whole flow with everything real except the USB hardware. One serialized suite: umockdev's
/// testbed sets UMOCKDEV_DIR in this process, so two testbeds must never exist at once.
@Suite(.serialized) struct EndToEndTests {
    @Test func plugApproveUnplugReplugAndSurviveCrashes() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let image = "iotgw-busybox"
        let fingerprint = try await lxd.imageAlias(image).target
        let acme = try VendorFixture(id: E2E.vendorID("acme"), usbVendorID: "0403", serials: ["ACME-0001", "ACME-0002"],
                                     image: image, fingerprint: fingerprint, root: root)
        let globex = try VendorFixture(id: E2E.vendorID("globex"), usbVendorID: "10c4", productID: "ea60", serials: ["GLX-1"],
                                       image: image, fingerprint: fingerprint, root: root)
        let gateway = try GatewayFixture(vendors: [(acme, .ask), (globex, .auto)], root: root)
        let gw = try gateway.identity()
        try acme.enroll(gw)
        try globex.enroll(gw)
        let acmeContainer = ProvisioningPlan.containerName(forVendor: acme.id)
        let globexContainer = ProvisioningPlan.containerName(forVendor: globex.id)

        try await E2EContext.cleaningUp(lxd, [acmeContainer, globexContainer], daemons: { [acme.daemon, globex.daemon, gateway.daemon] }) {
            try await acme.start()
            try await globex.start()
            let testbed = try Testbed()
            let node1 = try CharNode(), node2 = try CharNode(), node3 = try CharNode()
            try await gateway.start(testbed: testbed)
            // Only root can reach the control socket: its directory is 0700 and root's.
            var st = stat()
            #expect(stat((gateway.socket as NSString).deletingLastPathComponent, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o700 && st.st_uid == 0)

            // 1. Plug: the daemon asks the vendor and waits for the owner.
            var dev1 = try testbed.plug(vendorID: "0403", productID: "6001", serial: "ACME-0001", manufacturer: "Acme",
                                                       product: "Thermo", ttyName: "ttyUSB90", devnode: node1.path)
            // The usb_device is announced first; the tty (the node that will be passed in) follows.
            let pending = try await eventually("a pending approval showing the tty") {
                try gateway.approvals().first { $0.devices.first?.hostNode != nil }
            }
            #expect(pending.vendor == acme.id)
            #expect(pending.planVersion == 1)
            #expect(pending.container == acmeContainer)
            #expect(pending.signatureVerified)
            #expect(pending.cpus == 1 && pending.memoryMiB == 128 && pending.diskMiB == 512 && pending.processes == 200)
            #expect(pending.devices.map(\.serial) == ["ACME-0001"])
            #expect(pending.devices.first?.hostNode == node1.path)
            #expect(pending.devices.first?.containerPath == "/dev/ttyUSB0")
            #expect(pending.apps.map(\.name) == ["sensor-agent"])
            #expect(try await lxd.instanceExists(acmeContainer) == false, "nothing is created before approval")

            // 2. The prompt shows what the vendor gets; "n" changes nothing, "y" approves.
            let no = try gateway.cli(["approve"], stdin: "n\n")
            #expect(no.status != 0)
            #expect(no.stdout.contains("Approve vendor \(acme.id)"))
            #expect(no.stdout.contains("128 MiB memory"))
            #expect(no.stdout.contains("\(node1.path) -> /dev/ttyUSB0"))
            #expect(no.stdout.contains("signature     verified"))
            #expect(try gateway.approvals().count == 1)
            let yes = try gateway.cli(["approve", "\(pending.id)"], stdin: "y\n")
            #expect(yes.status == 0, "\(yes.stderr)")

            // 3. The container appears, unprivileged and labelled, with the device inside.
            _ = try await eventually("device inside \(acmeContainer)") {
                try await E2E.deviceInside(lxd, acmeContainer, "/dev/ttyUSB0") ? true : nil
            }
            let inst = try await lxd.instance(acmeContainer).instance
            #expect(inst.isRunning)
            #expect(inst.expandedConfig["security.privileged"] == "false")
            #expect(inst.expandedConfig["security.idmap.isolated"] == "true")
            #expect(inst.expandedConfig["security.nesting"] == "false")
            #expect(inst.config["user.iotgw.vendor"] == acme.id)
            #expect(inst.config["limits.memory"] == "128MiB")
            // Passed in from the gateway's own node for that very device, not from the kernel's name.
            #expect(inst.devices["iotgw-ACME-0001"]?["source"] == gateway.node(vendor: acme.id, serial: "ACME-0001"))
            let status = try await eventually("status shows the device attached") {
                let s = try gateway.status()
                return s.vendors.first { $0.id == acme.id }?.attachedDevices == ["ACME-0001"] ? s : nil
            }
            #expect(status.vendors.first { $0.id == acme.id }?.containerStatus == "Running")
            #expect(status.pendingApprovals.isEmpty)
            _ = try await eventually("the vendor got an 'applied' report") {
                try acme.reports().contains { $0.outcome == .applied && $0.attachedDevices == ["ACME-0001"] } ? true : nil
            }

            // 3b. Drift by hand is repaired with nothing plugged or unplugged: the gateway reads its containers
            // from a copy that LXD's events keep true, and an event about a vendor's container wakes its reconcile.
            try await lxd.removeDevice(acmeContainer, name: "iotgw-ACME-0001")
            _ = try await eventually("device removed by hand is back") { () -> Bool? in
                guard try await lxd.instance(acmeContainer).instance.devices["iotgw-ACME-0001"] != nil else { return nil }
                return try await E2E.deviceInside(lxd, acmeContainer, "/dev/ttyUSB0") ? true : nil
            }
            try await lxd.patchInstance(acmeContainer, config: ["limits.memory": "256MiB"])
            _ = try await eventually("memory cap changed by hand is put back") {
                try await lxd.instance(acmeContainer).instance.config["limits.memory"] == "128MiB" ? true : nil
            }
            try await lxd.setState(acmeContainer, .stop, timeout: 0, force: true)
            _ = try await eventually("container stopped by hand runs again, device inside") { () -> Bool? in
                guard try await lxd.instance(acmeContainer).instance.isRunning else { return nil }
                return try await E2E.deviceInside(lxd, acmeContainer, "/dev/ttyUSB0") ? true : nil
            }
            // Deleted by hand (stop and delete; the gateway may start it again in between, then the delete is retried).
            _ = try await eventually("container deleted by hand") { () -> Bool? in
                do { try await lxd.forceDeleteInstance(acmeContainer) } catch let e as LXDError where e.code == .badRequest { return nil }
                return true
            }
            _ = try await eventually("container deleted by hand is created again, device inside") { () -> Bool? in
                guard try await lxd.instanceExists(acmeContainer) else { return nil }
                return try await E2E.deviceInside(lxd, acmeContainer, "/dev/ttyUSB0") ? true : nil
            }

            // 4. Unplug: the device leaves, the container stays.
            try testbed.remove(dev1.usbSyspath)
            _ = try await eventually("device gone from \(acmeContainer)") {
                try await E2E.deviceInside(lxd, acmeContainer, "/dev/ttyUSB0") ? nil : true
            }
            #expect(try await lxd.instance(acmeContainer).instance.isRunning)
            #expect(try await lxd.instance(acmeContainer).instance.devices["iotgw-ACME-0001"] == nil)

            // 5. Replug: back into the same container without a new approval.
            dev1 = try testbed.plug(vendorID: "0403", productID: "6001", serial: "ACME-0001", manufacturer: "Acme",
                                                   product: "Thermo", ttyName: "ttyUSB91", devnode: node1.path)
            _ = try await eventually("device back inside") { try await E2E.deviceInside(lxd, acmeContainer, "/dev/ttyUSB0") ? true : nil }
            #expect(try gateway.approvals().isEmpty)
            #expect(try await lxd.listInstances(userFilter: ["iotgw.vendor": acme.id]).count == 1)

            // 6. Crash with an approval pending: a second device asks for more; kill -9; it is still there after restart.
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "ACME-0002", ttyName: "ttyUSB92", devnode: node2.path)
            let second = try await eventually("second approval") { try gateway.approvals().first { $0.planVersion == 2 } }
            #expect(second.devices.map(\.serial) == ["ACME-0001", "ACME-0002"])
            gateway.daemon?.kill9()
            try await gateway.start(testbed: testbed)
            let survived = try await eventually("approval after restart") { try gateway.approvals().first }
            #expect(survived.id == second.id)
            let approved = try gateway.cli(["approve", "--yes", "\(second.id)"])
            #expect(approved.status == 0, "\(approved.stderr)")
            _ = try await eventually("both devices attached") {
                let devs = try await lxd.instance(acmeContainer).instance.devices.keys.filter { $0.hasPrefix("iotgw-") }.sorted()
                return devs == ["iotgw-ACME-0001", "iotgw-ACME-0002"] ? true : nil
            }

            // 7. Crash mid-provisioning: kill -9 as soon as LXD starts creating globex's container.
            try testbed.plug(vendorID: "10c4", productID: "ea60", serial: "GLX-1", ttyName: "ttyUSB93", devnode: node3.path)
            _ = try await eventually("globex container being created", timeout: .seconds(60), poll: .milliseconds(20)) {
                try await lxd.instanceExists(globexContainer) ? true : nil
            }
            gateway.daemon?.kill9()
            try await gateway.start(testbed: testbed)
            _ = try await eventually("globex device inside after restart") {
                try await E2E.deviceInside(lxd, globexContainer, "/dev/ttyUSB0") ? true : nil
            }
            #expect(try await lxd.listInstances(userFilter: ["iotgw.vendor": globex.id]).count == 1, "no duplicate container")
            #expect(try await lxd.instance(globexContainer).instance.isRunning)

            // 8. A graceful stop exits cleanly.
            #expect(gateway.daemon?.stop() == 0, "\(gateway.daemon?.output.suffix(2000) ?? "")")
        }
    }
}

enum E2EContext {
    /// Runs `body`; afterwards stops the daemons and deletes the containers, whatever happened.
    static func cleaningUp(_ lxd: LXDClient, _ containers: [String], daemons: () -> [Daemon?],
                           _ body: () async throws -> Void) async throws {
        var failure: (any Error)?
        do { try await body() } catch { failure = error }
        for d in daemons() {
            guard let d else { continue }
            if failure != nil {
                // At debug level the tail is mostly HTTP client chatter: the warnings and errors say what went wrong.
                let notable = d.output.split(separator: "\n").filter { [" warning ", " error ", " critical "].contains(where: $0.contains) }
                print("---- \(d.name) warnings and errors (the last 30) ----\n\(notable.suffix(30).joined(separator: "\n"))")
                print("---- \(d.name) log (tail) ----\n\(d.output.suffix(2000))")
            }
            d.stop()
        }
        for c in containers { try? await lxd.forceDeleteInstance(c) }
        if let failure { throw failure }
    }
}
