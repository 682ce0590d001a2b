import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

/// One vendor's converge is held running (its playbook waits for a file). Meanwhile another vendor's
/// device arrives in its container, and the slow vendor's own device leaves its container at once on
/// unplug. Then the gateway is killed mid-converge: after the restart the container is back at its
/// pre-update snapshot and the update runs again.
extension EndToEndTests {
    @Test func aHeldConvergeDelaysNoOneAndACrashInItRollsBackAndRetries() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let playbook = root.appendingPathComponent("slow-playbook")
        try FileManager.default.createDirectory(at: playbook, withIntermediateDirectories: true)
        // Each attempt leaves its own mark, then waits for the test to let it finish.
        try """
            - hosts: localhost
              gather_facts: false
              tasks:
                - ansible.builtin.command: mktemp /root/attempt.XXXXXX
                - ansible.builtin.shell: "while [ ! -e /tmp/iotgw-release ]; do sleep 0.2; done"
            """.write(to: playbook.appendingPathComponent("site.yml"), atomically: true, encoding: .utf8)
        let slow = try VendorFixture(id: E2E.vendorID("slow"), usbVendorID: "0403", serials: ["SLOW-1"], image: "iotgw-debian12",
                                     fingerprint: try await lxd.imageAlias("iotgw-debian12").target, memoryMiB: 256,
                                     extraYAML: "ansible: {playbookDirectory: \(playbook.path)}", root: root)
        let fast = try VendorFixture(id: E2E.vendorID("fast"), usbVendorID: "10c4", productID: "ea60", serials: ["FAST-1"], image: "iotgw-busybox",
                                     fingerprint: try await lxd.imageAlias("iotgw-busybox").target, root: root)
        let gateway = try GatewayFixture(vendors: [(slow, .auto), (fast, .auto)], root: root,
                                         extraYAML: "delivery: {environment: test, maxRetrySeconds: 2, hardening: {enabled: false}}")
        let gw = try gateway.identity()
        try slow.enroll(gw)
        try fast.enroll(gw)
        let slowC = ProvisioningPlan.containerName(forVendor: slow.id), fastC = ProvisioningPlan.containerName(forVendor: fast.id)
        func attempts() async throws -> [String] {
            try await lxd.exec(slowC, ["sh", "-c", "ls /root/attempt.* 2>/dev/null"]).stdout.split(separator: "\n").map(String.init)
        }

        try await E2EContext.cleaningUp(lxd, [slowC, fastC], daemons: { [slow.daemon, fast.daemon, gateway.daemon] }) {
            try await slow.start()
            try await fast.start()
            let testbed = try Testbed()
            try await gateway.start(testbed: testbed)
            let slowNode = try CharNode(), fastNode = try CharNode()
            let s1 = try testbed.plug(vendorID: "0403", productID: "6001", serial: "SLOW-1", ttyName: "ttyUSB60", devnode: slowNode.path)
            let first = try await eventually("the slow vendor's converge running", timeout: .seconds(180)) {
                try await lxd.instanceExists(slowC) ? try await attempts().first : nil
            }
            #expect(try await E2E.deviceInside(lxd, slowC, "/dev/ttyUSB0"))

            // The other vendor, while the converge is held.
            let clock = ContinuousClock()
            let plugged = clock.now
            try testbed.plug(vendorID: "10c4", productID: "ea60", serial: "FAST-1", ttyName: "ttyUSB61", devnode: fastNode.path)
            _ = try await eventually("the other vendor's device in its container", timeout: .seconds(60), poll: .milliseconds(50)) {
                try await lxd.instanceExists(fastC) ? (try await E2E.deviceInside(lxd, fastC, "/dev/ttyUSB0") ? true : nil) : nil
            }
            let fastTook = clock.now - plugged
            // The slow vendor's own unplug, during its converge.
            let unplugged = clock.now
            try testbed.remove(s1.usbSyspath)
            _ = try await eventually("the slow vendor's device out of its container", timeout: .seconds(10), poll: .milliseconds(20)) {
                try await E2E.deviceInside(lxd, slowC, "/dev/ttyUSB0") ? nil : true
            }
            let leftAfter = clock.now - unplugged
            print("fairness: other vendor provisioned in \(fastTook) during a held converge; unplug left the container in \(leftAfter)")
            #expect(leftAfter < .seconds(2), "an unplug waits for no delivery")
            #expect(try await attempts() == [first], "the converge is still held")
            #expect(try gateway.status().vendors.first { $0.id == slow.id }?.deliveryPhase?.hasSuffix("converging") == true)

            // A crash mid-converge: after the restart the container is back at its snapshot and the update runs again.
            gateway.daemon?.kill9()
            try await gateway.start(testbed: testbed)
            let retried = try await eventually("rolled back and retried", timeout: .seconds(180)) {
                let a = try await attempts()
                return a.count == 1 && a != [first] ? a : nil
            }
            _ = try await lxd.exec(slowC, ["touch", "/tmp/iotgw-release"])
            let done = try await eventually("the update delivered", timeout: .seconds(120)) {
                try gateway.status().vendors.first { $0.id == slow.id && $0.deliveredPlanVersion != nil }
            }
            #expect(done.delivery?.hasPrefix("applied") == true, "\(done.delivery ?? "")")
            #expect(try await attempts() == retried, "only the retried attempt's change is there: the first was rolled back")
            #expect(try await lxd.listInstances(userFilter: ["iotgw.vendor": slow.id]).count == 1, "no duplicate container")
            #expect(try await E2E.deviceInside(lxd, fastC, "/dev/ttyUSB0"), "the other vendor was never disturbed")
        }
    }

    /// A gateway key that cannot be read stops the daemon with a clear message, and is left as it is.
    @Test func anUnreadableGatewayKeyStopsTheDaemonInsteadOfMakingANewIdentity() async throws {
        let root = try E2E.tempRoot()
        let gateway = try GatewayFixture(vendors: [], root: root)
        _ = try gateway.identity()
        let key = gateway.dir.appendingPathComponent("state/gateway.key").path
        try "garbage\n".write(toFile: key, atomically: true, encoding: .utf8)
        let r = try run(try Bin.path("iot-gateway-client"), ["run", "--config", gateway.configPath])
        #expect(r.status != 0)
        #expect(r.stderr.contains("not a base64 Ed25519 key"), "\(r.stderr)")
        #expect(try String(contentsOfFile: key, encoding: .utf8) == "garbage\n", "the key is left for the owner to restore")
        #expect(try run(try Bin.path("iot-gateway-client"), ["identity", "--config", gateway.configPath]).status != 0)
    }

    /// A storage pool that cannot enforce the disk cap is refused unless the owner allows it; a plain
    /// http vendor URL is refused unless the owner allows it.
    @Test func theOwnersFactsAboutTheHostAreChecked() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let pool = "t-dirpool-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        let created = try run("/usr/bin/lxc", ["storage", "create", pool, "dir"])
        guard created.status == 0 else { throw HarnessError("lxc storage create failed: \(created.stderr)") }
        defer { _ = try? run("/usr/bin/lxc", ["storage", "delete", pool]) }
        let busybox = try await lxd.imageAlias("iotgw-busybox").target
        let vendor = try VendorFixture(id: E2E.vendorID("dir"), usbVendorID: "0403", serials: ["DIR-1"], image: "iotgw-busybox",
                                       fingerprint: busybox, root: root)
        let gateway = try GatewayFixture(vendors: [(vendor, .auto)], root: root, storagePool: pool)
        try vendor.enroll(try gateway.identity())
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
            try await gateway.startAndPlug(vendor, serial: "DIR-1", ttyName: "ttyUSB62")
            let row = try await eventually("refused on a dir pool") {
                try gateway.status().vendors.first { $0.id == vendor.id && $0.error?.contains("diskLimitUnenforceable") == true }
            }
            #expect(row.appliedPlanVersion == nil)
            #expect(try await lxd.instanceExists(container) == false)
        }
        // http without the owner's consent is a configuration error.
        let config = root.appendingPathComponent("insecure.yaml").path
        try """
            vendors:
              - {id: acme, match: [{vendorID: "0403"}], daemonURL: "http://127.0.0.1:1", publicKey: "\(vendor.publicKey)", policy: ask}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let check = try run(try Bin.path("iot-gateway-client"), ["check-config", "--config", config])
        #expect(check.status != 0 && check.stderr.contains("allowInsecureHTTP"), "\(check.stderr)")
    }
}
