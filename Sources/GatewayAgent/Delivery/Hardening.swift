import Foundation
import GatewayProtocol
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

/// The owner's hardening as one delivery runs it: the tool, a digest of exactly what would converge
/// (the owner's files and settings), and the profile that proves it.
///
/// Re-converging an unchanged hardening costs a delivery 10 to 15 s (measured, Ansible), most of its
/// overhead over the bare transfer. So a delivery skips the converge when the container carries the
/// digest the gateway wrote after the last successful hardening **and** the hardening profile passes
/// right now: the digest says the owner's files did not change, the profile says the container did
/// not drift (a vendor that undid a setting, or planted the digest, gets the full converge).
public struct HardeningRun: Sendable {
    public var provisioner: any Provisioner
    public var digest: String
    /// The local profile directory (already resolved inside `inspecDirectory`); nil: never skipped.
    public var profile: String?
    /// Written by the gateway after a successful hardening converge (root only).
    public static let markerPath = "/var/lib/iotgw/hardening.sha256"

    public init(provisioner: any Provisioner, digest: String, profile: String?) {
        self.provisioner = provisioner
        self.digest = digest
        self.profile = profile
    }

    /// Whether the container already has this very hardening, proven by its profile now.
    func isCurrent(_ container: String, lxd: LXDClient, validator: InSpecValidator) async throws -> Bool {
        guard let profile else { return false }
        let marker = try await lxd.exec(container, ["cat", Self.markerPath])
        guard marker.exitCode == 0, marker.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == digest else { return false }
        let found = try await validator.run(container, profiles: [profile], lxd: lxd)
        // Every control ran and passed: a profile not run (no InSpec), skipped or failed proves nothing.
        return !found.controls.isEmpty && found.controls.values.allSatisfy { $0 == "passed" }
    }

    /// Converges unless already current; records the digest after a successful converge.
    func apply(_ container: String, lxd: LXDClient, validator: InSpecValidator) async throws -> ConvergeOutcome {
        if try await isCurrent(container, lxd: lxd, validator: validator) {
            return ConvergeOutcome(succeeded: true, changedResources: 0, exitCode: 0,
                                   summary: "\(provisioner.name): already hardened (\(digest.prefix(12)), proven by its profile)", outputTail: "")
        }
        try await provisioner.bootstrap(container, lxd: lxd)
        let outcome = try await provisioner.converge(container, lxd: lxd)
        if outcome.succeeded {
            try await lxd.mkdirAll(container, path: (Self.markerPath as NSString).deletingLastPathComponent, attributes: FileAttributes(mode: 0o700))
            _ = try await lxd.exec(container, ["rm", "-f", Self.markerPath])
            try await lxd.push(container, path: Self.markerPath, string: digest + "\n", attributes: FileAttributes(mode: 0o600))
        }
        return outcome
    }

    /// SHA-256 over the tool, the settings and every file (path, mode, bytes) under `directory`.
    static func digest(tool: String, attributes: HardeningAttributes, directory: String) throws -> String {
        var data = Data("tool=\(tool)\n".utf8)
        data.append(try JSONEncoder().encode(attributes))
        let fm = FileManager.default
        for rel in try fm.subpathsOfDirectory(atPath: directory).sorted() {
            let path = directory + "/" + rel
            let attrs = try fm.attributesOfItem(atPath: path)
            guard attrs[.type] as? FileAttributeType == .typeRegular else { continue }
            let mode = (attrs[.posixPermissions] as? NSNumber)?.intValue ?? 0
            data.append(Data("\nfile=\(rel) mode=\(String(mode, radix: 8))\n".utf8))
            data.append(try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        return Keys.sha256Hex(data)
    }
}

extension GatewayConfig.Delivery {
    /// The owner's hardening for a vendor converging with `tool`, with its digest and the resolved
    /// profile, or nil when the owner turned it off.
    public func hardeningRun(for tool: String, profile: String?) throws -> HardeningRun? {
        guard let provisioner = try hardeningProvisioner(for: tool) else { return nil }
        let directory = tool == "chef" ? hardeningCookbookDirectory + "/iotgw_hardening" : hardeningCookbookDirectory + "/ansible/hardening"
        let digest = try HardeningRun.digest(tool: tool, attributes: HardeningAttributes(installPackages: hardening.packages), directory: directory)
        return HardeningRun(provisioner: provisioner, digest: digest, profile: profile)
    }

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
