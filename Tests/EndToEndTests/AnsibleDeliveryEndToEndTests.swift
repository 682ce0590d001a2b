import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

/// A vendor without Chef: its iot-daemon ships an Ansible playbook in the bootstrap bundle, the
/// gateway converges it for real with ansible-playbook in the container, InSpec (stand-in) validates,
/// a published version arrives, a broken one is rolled back.
extension EndToEndTests {
    @Test func ansibleDeliveryChosenByTheVendor() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let (vendor, gateway) = try await E2E.ansibleVendor("ans", serial: "ANS-1", lxd: lxd, root: root)
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        let daemonBin = try Bin.path("iot-daemon")
        func status() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == vendor.id } }
        func agentVersion() async throws -> String {
            try await lxd.exec(container, ["/opt/sensor-agent/bin/sensor-agent", "--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
            try await vendor.start()
            let testbed = try Testbed()
            let tty = try CharNode()
            try await gateway.start(testbed: testbed)
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "ANS-1", ttyName: "ttyUSB70", devnode: tty.path)

            // The first delivery also converges the owner's hardening role for real, packages included.
            let first = try await eventually("first delivery", timeout: .seconds(480)) {
                try status().flatMap { $0.deliveredPlanVersion != nil ? $0 : nil }
            }
            #expect(first.delivery?.hasPrefix("applied: ansible-playbook: ok") == true, "\(first.delivery ?? "") \(first.error ?? "")")
            #expect(first.delivery?.contains("hardened") == true, "\(first.delivery ?? "")")
            #expect(first.deliveryPhases?.map(\.name) == ["bundle", "snapshot", "hardening", "bootstrap", "converge", "validation", "commit"])
            #expect(try await lxd.exec(container, ["grep", "-Eq", "^UMASK\\s+027$", "/etc/login.defs"]).exitCode == 0)
            #expect(try await lxd.exec(container, ["dpkg", "-s", "aide", "debsums"]).exitCode == 0)
            #expect(try await agentVersion() == "sensor-agent 1.0.0")
            #expect(try await lxd.exec(container, ["systemctl", "is-active", "sensor-agent"]).stdout == "active\n")

            let pub = try run(daemonBin, ["publish-app", "--config", vendor.configPath, "--app", "sensor-agent", "--version", "1.1.0"])
            #expect(pub.status == 0, "\(pub.stderr)")
            _ = try await eventually("update delivered", timeout: .seconds(240)) {
                try status().flatMap { ($0.deliveredPlanVersion ?? 0) >= 2 && $0.delivery?.hasPrefix("applied") == true ? $0 : nil }
            }
            #expect(try await agentVersion() == "sensor-agent 1.1.0")

            let bad = try run(daemonBin, ["publish-app", "--config", vendor.configPath, "--app", "sensor-agent", "--version", "1.2.0-broken"])
            #expect(bad.status == 0, "\(bad.stderr)")
            let rolled = try await eventually("rollback", timeout: .seconds(240)) {
                try status().flatMap { $0.delivery?.hasPrefix("rolled-back") == true ? $0 : nil }
            }
            #expect(rolled.failingControls == ["sensor-agent-04"])
            _ = try await eventually("container back up") { try await lxd.exec(container, ["true"]).exitCode == 0 ? true : nil }
            #expect(try await agentVersion() == "sensor-agent 1.1.0")
            let report = try await eventually("'rolled-back' report at the vendor") {
                try vendor.reports().first { $0.outcome == .rolledBack && $0.delivery?.provisioner == "ansible" }
            }
            // The InSpec summary per control travels to the vendor.
            #expect(report.delivery?.controls["sensor-agent/sensor-agent-04"] == "failed")
            #expect(report.delivery?.controls["sensor-agent/sensor-agent-01"] == "passed")
            // inspec/hardening ran beside the app's profile though the plan names only sensor-agent.
            #expect(report.delivery?.controls.count == 4 + 8)
            #expect(report.delivery?.controls.filter { $0.key.hasPrefix("hardening/") }.values.allSatisfy { $0 == "passed" } == true)
        }
    }
}
