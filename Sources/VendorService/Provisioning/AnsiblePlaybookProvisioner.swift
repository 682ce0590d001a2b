import Foundation
import GatewayProtocol
import Logging

/// Delivers apps for vendors who do not run Chef: the bootstrap bundle carries the vendor's
/// playbook directory (gzip'd tar) and the apps' versions as variables; the gateway converges it
/// locally in the container with `ansible-playbook -c local`. Updates are new app versions
/// (`publish-app`), which change the plan and therefore the variables.
public struct AnsiblePlaybookProvisioner: Provisioner {
    public let playbookDirectory: String

    public init(playbookDirectory: String) { self.playbookDirectory = playbookDirectory }

    public static func configured(by configuration: VendorConfiguration) -> AnsiblePlaybookProvisioner? {
        configuration.ansible.map { AnsiblePlaybookProvisioner(playbookDirectory: $0.playbookDirectory) }
    }

    public func planIssued(_ plan: ProvisioningPlan, isNewVersion: Bool, logger: Logger) async throws -> ProvisionerChange? { nil }
    public func nodeRegistered(_ report: ProvisioningReport, logger: Logger) async throws {}

    public func bootstrap(_ plan: ProvisioningPlan, logger: Logger) async throws -> BootstrapContents {
        let archive = try Self.archive(playbookDirectory)
        guard archive.count <= BootstrapBundle.maxPlaybookBytes else {
            logger.error("playbook archive too large", metadata: ["ansible.bytes": "\(archive.count)"])
            throw APIError.internalError
        }
        return BootstrapContents(bundle: BootstrapBundle(.ansible, for: plan, extraVars: Self.variables(plan.apps)), playbookArchive: archive)
    }

    /// `app_version` (the first app's, for single-app playbooks) and `<app>_version` for each app
    /// (``variableName(forApp:)``).
    public static func variables(_ apps: [AppSpec]) -> [String: String] {
        var vars: [String: String] = [:]
        if let first = apps.first { vars["app_version"] = first.version }
        for a in apps { vars[variableName(forApp: a.name)] = a.version }
        return vars
    }

    /// `sensor-agent` → `sensor_agent_version`: `-` and `.` become `_`. The configuration refuses app
    /// names whose variable gateways would refuse (`Fields.variableName`).
    public static func variableName(forApp app: String) -> String {
        String(app.map { $0 == "-" || $0 == "." ? "_" : $0 }) + "_version"
    }

    /// gzip'd tar of the directory's contents (`tar -C DIR -czf - .`).
    static func archive(_ directory: String) throws -> Data {
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/bin/tar")
        tar.arguments = ["--sort=name", "--owner=0", "--group=0", "-C", directory, "-czf", "-", "."]
        let out = Pipe()
        tar.standardOutput = out
        tar.standardError = FileHandle.nullDevice
        try tar.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        tar.waitUntilExit()
        guard tar.terminationStatus == 0 else {
            throw ConfigurationError(.unreadable, field: "ansible.playbookDirectory", "cannot archive \(directory)")
        }
        return data
    }
}
