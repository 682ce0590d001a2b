import Chef
import Foundation
import GatewayAgent
import GatewayProtocol
import Logging
import LXD
import Testing
import UmockdevTesting

/// Apps delivered by the vendor's (real) Chef server: goiardi holds the node and cookbooks, the
/// gateway bootstraps the container through LXD, the chef-client STAND-IN in the test image
/// authenticates with the pushed key and converges the cookbook versions on the node's run list,
/// the InSpec STAND-IN validates; a newly published version arrives; a broken one is rolled back.
extension EndToEndTests {
    static let goiardi = "http://127.0.0.1:4545"
    static let adminKey = "/var/lib/iotgw-goiardi/admin.pem"

    static func chefAdmin() throws -> ChefClient {
        guard canConnect(port: 4545), let pem = try? String(contentsOfFile: adminKey, encoding: .utf8) else {
            Issue.record("goiardi is not answering on 127.0.0.1:4545 (or \(adminKey) is missing): run scripts/start-goiardi")
            throw HarnessError("no goiardi")
        }
        return try ChefClient(serverURL: goiardi, credentials: ChefCredentials(name: "admin", pemRepresentation: pem),
                              logger: Logger(label: "e2e-chef"))
    }

    /// Uploads sensor_agent at `version`; `working: false` builds a release whose service fails.
    static func uploadSensorAgent(_ chef: ChefClient, version: String, working: Bool) async throws {
        let dir = Bin.repo.appendingPathComponent("cookbooks/sensor_agent").path
        var files = try ChefCookbookFile.files(inDirectory: dir)
        files = files.map { f in
            if f.path.hasSuffix("metadata.rb") {
                return ChefCookbookFile(path: f.path, string: String(decoding: f.contents, as: UTF8.self)
                    .replacingOccurrences(of: "version '1.0.0'", with: "version '\(version)'"))
            }
            if f.path.hasSuffix("standin-converge.sh"), !working {
                return ChefCookbookFile(path: f.path, string: String(decoding: f.contents, as: UTF8.self)
                    .replacingOccurrences(of: "BUILD_OK=1", with: "BUILD_OK=0"))
            }
            return f
        }
        _ = try await chef.uploadCookbook(ChefCookbookMetadata(name: "sensor_agent", version: version), files: files)
    }

    @Test func chefDeliveryUpdateAndRollbackThroughTheVendorsChefServer() async throws {
        let lxd = try E2E.lxd()
        let chef = try Self.chefAdmin()
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try await Self.uploadSensorAgent(chef, version: "1.0.\(UInt16.random(in: 1...60000))", working: true)  // a newer _latest never used below
        let v1 = "1.1.\(UInt16.random(in: 1...60000))", v2 = "1.2.\(UInt16.random(in: 1...60000))", broken = "1.3.\(UInt16.random(in: 1...60000))"
        try await Self.uploadSensorAgent(chef, version: v1, working: true)
        try await Self.uploadSensorAgent(chef, version: v2, working: true)
        try await Self.uploadSensorAgent(chef, version: broken, working: false)

        // The container reaches the Chef server on loopback through an LXD proxy device (goiardi stays on 127.0.0.1).
        let proxyProfile = "t-chefproxy-\(tag)"
        try await lxd.createProfile(proxyProfile, ProfilePut(description: "e2e: Chef server proxy", devices: [
            "chefserver": Device(["type": "proxy", "listen": "tcp:127.0.0.1:4545", "connect": "tcp:127.0.0.1:4545", "bind": "container"]),
        ]))
        let root = try E2E.tempRoot()
        let image = E2E.image("iotgw-debian12-test")
        let acme = try VendorFixture(id: E2E.vendorID("chef"), usbVendorID: "0403", serials: ["CHEF-1"], image: image,
                                     fingerprint: try await lxd.imageAlias(image).target, memoryMiB: 256,
                                     runList: "recipe[sensor_agent@\(v1)]",
                                     extraYAML: "chef: {serverURL: \"\(Self.goiardi)\", adminName: admin, adminKey: \(Self.adminKey)}",
                                     root: root)
        let gateway = try GatewayFixture(vendors: [(acme, .auto)], root: root, profiles: ["default", "iotgw-vendor", proxyProfile],
                                         extraYAML: """
                                             planSyncSeconds: 1
                                             delivery: {inspecDirectory: \(Bin.repo.appendingPathComponent("inspec").path), environment: test, validationMode: enforced, keepSnapshots: 2,
                                                        hardening: {packages: false}}
                                             """)
        let gw = try gateway.identity()
        try acme.enroll(gw)
        let container = ProvisioningPlan.containerName(forVendor: acme.id)
        let node = "\(gw.id)-\(acme.id)"
        let daemonBin = try Bin.path("iot-daemon")

        func vendorStatus() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == acme.id } }
        func agentVersion() async throws -> String {
            try await lxd.exec(container, ["/opt/sensor-agent/bin/sensor-agent", "--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        var failure: (any Error)?
        do {
        try await E2EContext.cleaningUp(lxd, [container], daemons: { [acme.daemon, gateway.daemon] }) {
            try await acme.start()
            let testbed = try Testbed()
            let tty = try CharNode()
            try await gateway.start(testbed: testbed)
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "CHEF-1", ttyName: "ttyUSB80", devnode: tty.path)

            // 1. First delivery: bootstrapped, converged, validated, reported.
            let first = try await eventually("first delivery", timeout: .seconds(180)) {
                try vendorStatus().flatMap { $0.deliveredPlanVersion != nil ? $0 : nil }
            }
            #expect(first.delivery?.hasPrefix("applied") == true, "\(first.delivery ?? "") \(first.error ?? "")")
            #expect(try await agentVersion() == "sensor-agent \(v1)")
            #expect(try await lxd.exec(container, ["stat", "-c", "%a", "/etc/chef/client.pem"]).stdout == "600\n")
            // The owner's iotgw_hardening cookbook converged first in local mode (the stand-in runs its
            // shell rendering), never through the vendor's server or run list, and inspec/hardening passed.
            #expect(first.delivery?.contains("hardened") == true, "\(first.delivery ?? "")")
            #expect(try await lxd.exec(container, ["grep", "-q", "Authorized use only", "/etc/issue"]).exitCode == 0)
            #expect(try await lxd.exec(container, ["cat", "/etc/iotgw/hardening-packages.list"]).stdout == "", "packages: false")
            let clientRB = String(buffer: try await lxd.pull(container, path: "/etc/chef/client.rb").content)
            #expect(clientRB.contains("node_name \"\(node)\""))
            #expect(clientRB.contains("chef_server_url  \"\(Self.goiardi)\""))
            // The node on the Chef server belongs to the container's key and carries the vendor's run list.
            #expect(try await chef.node(named: node).runList == ["recipe[sensor_agent@\(v1)]"])
            _ = try await eventually("'delivered' report at the vendor") {
                try acme.reports().first { $0.outcome == .delivered && $0.delivery?.result == "applied" }
            }

            // 2. The vendor publishes a new version: the node's run list changes, the plan version moves,
            //    the gateway pulls the plan and converges again (without first-boot.json).
            let pub = try run(daemonBin, ["publish-app", "--config", acme.configPath, "--app", "sensor-agent", "--version", v2,
                                          "--run-list", "recipe[sensor_agent@\(v2)]"])
            #expect(pub.status == 0, "\(pub.stderr)")
            #expect(try await chef.node(named: node).runList == ["recipe[sensor_agent@\(v2)]"])
            _ = try await eventually("update delivered", timeout: .seconds(180)) {
                try vendorStatus().flatMap { ($0.deliveredPlanVersion ?? 0) >= 2 && $0.delivery?.hasPrefix("applied") == true ? $0 : nil }
            }
            #expect(try await agentVersion() == "sensor-agent \(v2)")

            // 3. A broken release: validation fails sensor-agent-04, the container is restored, the vendor is told.
            let bad = try run(daemonBin, ["publish-app", "--config", acme.configPath, "--app", "sensor-agent", "--version", broken,
                                          "--run-list", "recipe[sensor_agent@\(broken)]"])
            #expect(bad.status == 0, "\(bad.stderr)")
            let rolled = try await eventually("rollback", timeout: .seconds(180)) {
                try vendorStatus().flatMap { $0.delivery?.hasPrefix("rolled-back") == true ? $0 : nil }
            }
            #expect(rolled.failingControls.contains("sensor-agent-04"))
            _ = try await eventually("container back up") { try await lxd.exec(container, ["true"]).exitCode == 0 ? true : nil }
            #expect(try await agentVersion() == "sensor-agent \(v2)", "restored to the snapshot before the broken update")
            let report = try await eventually("'rolled-back' report at the vendor") {
                try acme.reports().first { $0.outcome == .rolledBack }
            }
            #expect(report.delivery?.failingControls.contains("sensor-agent-04") == true)
            #expect(report.delivery?.restoredSnapshot != nil)
            #expect(try gateway.cli(["status"]).stdout.contains("rolled-back"))
        }
        } catch { failure = error }
        // The profile can go only after the container that uses it.
        try? await lxd.deleteProfile(proxyProfile)
        try? await chef.deleteNode(named: node)
        try? await chef.deleteClient(named: node)
        if let failure { throw failure }
    }
}
