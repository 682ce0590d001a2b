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
