import Foundation
import GatewayProtocol
import Logging
import Testing
@testable import VendorService

@Suite struct AnsiblePlaybookProvisionerTests {
    @Test func variablesNameEachAppsVersion() {
        let apps = [AppSpec(name: "sensor-agent", version: "1.1.0", runList: ["recipe[a]"]),
                    AppSpec(name: "plug-controller", version: "2.0.0", runList: ["recipe[b]"])]
        #expect(AnsiblePlaybookProvisioner.variables(apps) == ["app_version": "1.1.0", "sensor_agent_version": "1.1.0",
                                                               "plug_controller_version": "2.0.0"])
    }

    @Test func variableNamesAreValidAnsibleNames() {
        #expect(AnsiblePlaybookProvisioner.variableName(forApp: "sensor-agent") == "sensor_agent_version")
        #expect(AnsiblePlaybookProvisioner.variableName(forApp: "plug.ctl") == "plug_ctl_version")
        #expect(Fields.variableName.isValid(AnsiblePlaybookProvisioner.variableName(forApp: "a.b-c_D9")))
    }

    @Test func bundleCarriesThePlaybookArchive() async throws {
        let p = AnsiblePlaybookProvisioner(playbookDirectory: repositoryRoot.appendingPathComponent("cookbooks/ansible/sensor-agent").path)
        let plan = ProvisioningPlan(vendor: "acme", gatewayID: "gw-x", version: 1, issuedAt: Date(), expiresAt: Date(),
                                    container: ContainerSpec(name: "iotgw-acme", image: ImageRef(alias: "a", fingerprint: ""),
                                                             limits: ResourceLimits(cpus: 1, memoryMiB: 64, diskMiB: 64, processes: 8),
                                                             network: .nat),
                                    devices: [], apps: [AppSpec(name: "sensor-agent", version: "1.0.0", runList: ["recipe[sensor_agent]"])])
        let contents = try await p.bootstrap(plan, logger: Logger(label: "t"))
        #expect(contents.bundle.kind == .ansible)
        #expect(contents.bundle.gatewayID == "gw-x" && contents.bundle.planVersion == 1)
        #expect(contents.bundle.runList == ["recipe[sensor_agent]"])
        #expect(contents.bundle.extraVars?["app_version"] == "1.0.0")
        let archive = try #require(contents.playbookArchive)
        #expect(archive.count > 100 && archive.count <= BootstrapBundle.maxPlaybookBytes)
        #expect(archive.prefix(2) == Data([0x1f, 0x8b]), "gzip")
    }
}
