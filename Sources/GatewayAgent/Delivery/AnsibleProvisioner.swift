import Foundation
import LXD

/// Converges a playbook locally inside the container with `ansible-playbook -c local`, for vendors
/// who do not run Chef. The playbook directory travels through LXD's file API.
public struct AnsibleProvisioner: Provisioner {
    public let name = "ansible"
    /// Local directory holding `site.yml` (and roles, files...).
    public var playbookDirectory: String
    public var remoteDirectory = "/etc/iotgw/ansible"
    public var playbook = "site.yml"
    /// Extra variables passed with `-e` as JSON.
    public var extraVars: [String: String] = [:]

    public init(playbookDirectory: String, extraVars: [String: String] = [:]) {
        self.playbookDirectory = playbookDirectory
        self.extraVars = extraVars
    }

    public func bootstrap(_ container: String, lxd: LXDClient) async throws {
        guard try await lxd.hasCommand(container, "ansible-playbook") else {
            throw DeliveryError("ansible-playbook is not installed in \(container); the image must ship ansible-core")
        }
        _ = try await lxd.exec(container, ["rm", "-rf", remoteDirectory])
        try await lxd.pushTree(container, localDirectory: playbookDirectory, to: remoteDirectory)
    }

    public func converge(_ container: String, lxd: LXDClient) async throws -> ConvergeOutcome {
        let vars = String(decoding: try JSONEncoder().encode(extraVars), as: UTF8.self)
        let r = try await lxd.exec(container, ["ansible-playbook", "-c", "local", "-i", "localhost,", "-e", vars,
                                               "\(remoteDirectory)/\(playbook)"],
                                   environment: ["ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_LOCAL_TEMP": "/tmp/.ansible"],
                                   cwd: remoteDirectory, timeout: .seconds(1800))
        let recap = Self.recap(r.stdout)
        let ok = r.exitCode == 0 && recap.failed == 0
        return ConvergeOutcome(succeeded: ok, changedResources: recap.changed, exitCode: r.exitCode,
                               summary: ok ? "ansible-playbook: ok, \(recap.changed) changed"
                                           : "ansible-playbook: failed (exit \(r.exitCode), \(recap.failed) failed tasks)",
                               outputTail: r.tail())
    }

    /// Parses `PLAY RECAP` ("localhost : ok=3 changed=1 unreachable=0 failed=0 ...").
    static func recap(_ output: String) -> (changed: Int, failed: Int) {
        var changed = 0, failed = 0
        var inRecap = false
        for line in output.split(separator: "\n") {
            if line.hasPrefix("PLAY RECAP") { inRecap = true; continue }
            guard inRecap else { continue }
            for field in line.split(separator: " ") {
                let kv = field.split(separator: "=")
                guard kv.count == 2, let n = Int(kv[1]) else { continue }
                if kv[0] == "changed" { changed += n }
                if kv[0] == "failed" || kv[0] == "unreachable" { failed += n }
            }
        }
        return (changed, failed)
    }
}

public struct DeliveryError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
