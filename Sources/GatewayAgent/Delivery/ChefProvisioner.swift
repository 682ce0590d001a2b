import Chef
import Foundation
import LXD
import NIOCore

/// Bootstraps a Chef client in the container locally, through LXD's file and exec APIs, writing
/// what `knife bootstrap` writes (client.rb, client.pem 0600, first-boot.json, trusted certs), and
/// converges with `chef-client -j /etc/chef/first-boot.json`. Nothing inbound (SSH, DNS) is needed.
public struct ChefProvisioner: Provisioner {
    public let name = "chef"
    public var files: BootstrapFiles
    /// Run when the image has no chef-client (e.g. a package install from the vendor's mirror).
    public var installCommand: [String]?
    public var chefClient = "chef-client"
    /// Only the first converge passes `-j first-boot.json`: chef-client replaces the node's run list
    /// with the file's, which would undo later run-list changes the vendor made on its server.
    public var firstBoot = true

    public init(files: BootstrapFiles, installCommand: [String]? = nil) {
        self.files = files
        self.installCommand = installCommand
    }

    public func bootstrap(_ container: String, lxd: LXDClient) async throws {
        if try await !lxd.hasCommand(container, chefClient) {
            guard let installCommand else {
                throw GatewayError(.delivery, "\(chefClient) is not installed in \(container) and no install step is configured")
            }
            let r = try await lxd.exec(container, installCommand, timeout: .seconds(1800))
            guard r.exitCode == 0 else { throw GatewayError(.delivery, "installing chef-client failed (exit \(r.exitCode)): \(r.tail(5))") }
        }
        for dir in files.directories {
            try await lxd.mkdirAll(container, path: dir, attributes: FileAttributes(mode: BootstrapFiles.directoryMode))
        }
        for f in files.files {
            // LXD applies owner and mode only when it creates a file: remove first so client.pem is 0600.
            do { try await lxd.deleteFile(container, path: f.path) } catch let e as LXDError where e.code == .notFound {}
            try await lxd.push(container, path: f.path, content: ByteBuffer(string: f.contents), attributes: FileAttributes(mode: f.mode))
        }
    }

    public func converge(_ container: String, lxd: LXDClient) async throws -> ConvergeOutcome {
        var argv = ChefClientRun.command(chefClientPath: chefClient, environment: files.environment)
        if !firstBoot, let j = argv.firstIndex(of: "-j") { argv.removeSubrange(j...(j + 1)) }
        let r = try await lxd.exec(container, argv, timeout: .seconds(3600))
        let outcome = ChefClientRun.Outcome(exitCode: Int32(truncatingIfNeeded: r.exitCode))
        return ConvergeOutcome(succeeded: outcome.converged, changedResources: Self.updatedResources(r.stdout), exitCode: r.exitCode,
                               summary: "chef-client: \(outcome)", outputTail: r.tail())
    }

    /// "Chef Infra Client finished, 3/12 resources updated in 05 seconds" (older: "Chef Client finished, ...").
    static func updatedResources(_ output: String) -> Int {
        for line in output.split(separator: "\n").reversed() where line.contains("Client finished,") {
            if let m = line.firstMatch(of: /finished, (\d+)\/\d+ resources updated/), let n = Int(m.1) { return n }
        }
        return 0
    }
}
