import Foundation
import GatewayProtocol
import LXD
import NIOCore

/// Converges a playbook locally inside the container with `ansible-playbook -c local`, for vendors
/// who do not run Chef.
///
/// A vendor's playbook arrives as a gzip'd tar; it is **never unpacked on the host**: the archive is
/// pushed into the vendor's own (unprivileged) container and unpacked there, where whatever it holds
/// (special files, links, a bomb) can reach no further than the vendor's own disk quota.
public struct AnsibleProvisioner: Provisioner {
    public let name = "ansible"
    public enum Source: Sendable {
        /// A local directory holding `site.yml` (the owner's own files, e.g. in tests).
        case directory(String)
        /// A vendor's archive (gzip'd tar, `site.yml` at its top), unpacked inside the container.
        case archive(Data)
    }
    public var source: Source
    public var remoteDirectory = "/etc/iotgw/ansible"
    public var remoteArchive = "/var/lib/iotgw/playbook.tar.gz"
    public var playbook = "site.yml"
    /// Extra variables passed with `-e` as JSON.
    public var extraVars: [String: String] = [:]

    public init(playbookDirectory: String, extraVars: [String: String] = [:]) {
        self.init(source: .directory(playbookDirectory), extraVars: extraVars)
    }

    public init(source: Source, extraVars: [String: String] = [:]) {
        self.source = source
        self.extraVars = extraVars
    }

    public func bootstrap(_ container: String, lxd: LXDClient) async throws {
        guard try await lxd.hasCommand(container, "ansible-playbook") else {
            throw GatewayError(.delivery, "ansible-playbook is not installed in \(container); the image must ship ansible-core")
        }
        _ = try await lxd.exec(container, ["rm", "-rf", remoteDirectory, remoteArchive])
        switch source {
        case .directory(let dir):
            try await lxd.pushTree(container, localDirectory: dir, to: remoteDirectory)
        case .archive(let data):
            try await lxd.mkdirAll(container, path: (remoteArchive as NSString).deletingLastPathComponent,
                                   attributes: FileAttributes(mode: 0o700))
            try await lxd.push(container, path: remoteArchive, content: ByteBuffer(bytes: data), attributes: FileAttributes(mode: 0o600))
            try await lxd.mkdirAll(container, path: remoteDirectory, attributes: FileAttributes(mode: 0o755))
            let r = try await lxd.exec(container, ["tar", "-xzf", remoteArchive, "-C", remoteDirectory, "--no-same-owner",
                                                   "--no-same-permissions", "--no-overwrite-dir"], timeout: .seconds(300))
            _ = try? await lxd.exec(container, ["rm", "-f", remoteArchive])
            guard r.exitCode == 0 else {
                throw GatewayError(.delivery, "the vendor's playbook archive does not unpack in \(container) (tar exit \(r.exitCode))")
            }
            guard try await lxd.exec(container, ["test", "-f", "\(remoteDirectory)/\(playbook)"]).exitCode == 0 else {
                throw GatewayError(.delivery, "the vendor's playbook archive has no \(playbook) at its top")
            }
        }
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
                                           : "ansible-playbook: failed (exit \(r.exitCode), \(recap.failed) failed tasks)"
                                             + (Self.firstFailure(r.stdout).map { ": \($0)" } ?? ""),
                               outputTail: r.tail())
    }

    /// The first failed task and its message, from ansible's default output
    /// (`TASK [role : name] ***` then `fatal: [host]: FAILED! => {"msg": "..."}`), escaped and cut to 300 characters:
    /// the owner reads why without digging the output tail out of the store.
    static func firstFailure(_ output: String) -> String? {
        var task: Substring?
        for line in output.split(separator: "\n") {
            if line.hasPrefix("TASK ["), let end = line.firstIndex(of: "]") {
                task = line[line.index(line.startIndex, offsetBy: 6)..<end]
            } else if line.hasPrefix("fatal: ") || (line.hasPrefix("failed: ") && line.contains("=>")) {
                var message = ""
                if let arrow = line.range(of: "=> "),
                   let object = try? JSONSerialization.jsonObject(with: Data(line[arrow.upperBound...].utf8)) as? [String: Any],
                   let msg = object["msg"] as? String {
                    message = msg
                }
                let text = [task.map(String.init), message.isEmpty ? nil : message].compactMap { $0 }.joined(separator: ": ")
                // The playbook may be the vendor's: its task names and messages are escaped for the owner's terminal.
                return text.isEmpty ? nil : Fields.displayText(text, max: 300)
            }
        }
        return nil
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

