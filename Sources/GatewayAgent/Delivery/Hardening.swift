import Foundation
import LXD
import NIOCore

/// Converges one of the owner's cookbooks with chef-client in **local mode** inside the container:
/// the cookbook is pushed through LXD's file API and nothing talks to the vendor's Chef server, so the
/// vendor's node, run list and server never see (or control) it. Used for the owner's hardening.
public struct ChefLocalProvisioner: Provisioner {
    public let name = "chef"
    /// The cookbook's local directory (its name is the directory's name).
    public var cookbookDirectory: String
    /// Node attributes passed with `--json-attributes`.
    public var attributes: HardeningAttributes
    public var remoteDirectory = "/etc/iotgw/hardening/chef"
    public var chefClient = "chef-client"

    public init(cookbookDirectory: String, attributes: HardeningAttributes) {
        self.cookbookDirectory = cookbookDirectory
        self.attributes = attributes
    }

    var cookbook: String { (cookbookDirectory as NSString).lastPathComponent }
    var configPath: String { "\(remoteDirectory)/client.rb" }
    var attributesPath: String { "\(remoteDirectory)/attributes.json" }

    /// chef-client's configuration for a local-mode run of the owner's cookbooks only.
    var clientRB: String {
        """
        # iot-gateway: the owner's hardening, converged in local mode (no Chef server involved)
        local_mode true
        chef_repo_path "\(remoteDirectory)"
        cookbook_path ["\(remoteDirectory)/cookbooks"]
        node_name "iotgw-hardening"
        file_cache_path "/var/cache/iotgw-hardening"
        chef_license "accept"

        """
    }

    public func bootstrap(_ container: String, lxd: LXDClient) async throws {
        guard try await lxd.hasCommand(container, chefClient) else {
            throw GatewayError(.delivery, "\(chefClient) is not installed in \(container): the owner's hardening cookbook cannot converge")
        }
        _ = try await lxd.exec(container, ["rm", "-rf", remoteDirectory])
        try await lxd.mkdirAll(container, path: "\(remoteDirectory)/cookbooks", attributes: FileAttributes(mode: 0o700))
        _ = try await lxd.pushTree(container, localDirectory: cookbookDirectory, to: "\(remoteDirectory)/cookbooks/\(cookbook)")
        try await lxd.push(container, path: configPath, string: clientRB, attributes: FileAttributes(mode: 0o600))
        let json = String(decoding: try JSONEncoder().encode(["iotgw_hardening": attributes]), as: UTF8.self)
        try await lxd.push(container, path: attributesPath, string: json, attributes: FileAttributes(mode: 0o600))
    }

    public func converge(_ container: String, lxd: LXDClient) async throws -> ConvergeOutcome {
        let r = try await lxd.exec(container, [chefClient, "--local-mode", "--config", configPath, "--override-runlist", "recipe[\(cookbook)]",
                                               "--json-attributes", attributesPath, "--no-color"], timeout: .seconds(1800))
        let ok = r.exitCode == 0
        return ConvergeOutcome(succeeded: ok, changedResources: ChefProvisioner.updatedResources(r.stdout), exitCode: r.exitCode,
                               summary: "chef-client (local mode, \(cookbook)): " + (ok ? "ok" : "failed (exit \(r.exitCode))"),
                               outputTail: r.tail())
    }
}

/// The settings the hardening cookbook and role take (Chef: `node['iotgw_hardening']`; Ansible:
/// `iotgw_hardening_*` variables).
public struct HardeningAttributes: Sendable, Codable, Equatable {
    /// Install the audit/integrity packages and pending updates (needs the container's network).
    public var installPackages: Bool

    enum CodingKeys: String, CodingKey { case installPackages = "install_packages" }
}

extension GatewayConfig.Delivery {
    /// The owner's hardening for a vendor converging with `kind`'s tool, or nil when the owner turned
    /// it off. Throws when it is on but not installed: a vendor container is never left unhardened
    /// because a directory is missing.
    public func hardeningProvisioner(for tool: String) throws -> (any Provisioner)? {
        guard hardening.enabled else { return nil }
        let attributes = HardeningAttributes(installPackages: hardening.packages)
        let root = hardeningCookbookDirectory
        func existing(_ path: String) throws -> String {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
                throw GatewayError(.delivery, "delivery.hardening is on but \(path) is missing: install the hardening cookbooks there "
                                   + "(delivery.hardening.cookbookDirectory) or turn it off with delivery.hardening.enabled: false")
            }
            return path
        }
        switch tool {
        case "chef":
            return ChefLocalProvisioner(cookbookDirectory: try existing(root + "/iotgw_hardening"), attributes: attributes)
        case "ansible":
            var p = AnsibleProvisioner(source: .directory(try existing(root + "/ansible/hardening")),
                                       extraVars: ["iotgw_hardening_install_packages": attributes.installPackages ? "true" : "false"])
            p.remoteDirectory = "/etc/iotgw/hardening/ansible"
            return p
        default:
            return nil
        }
    }
}
