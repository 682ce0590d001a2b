import Chef
import Foundation
import GatewayAgent
import InSpec
import Logging
import LXD
import Synchronization
import Testing

/// App delivery in a real Debian container: a real Ansible converge, validation by the InSpec
/// stand-in (scripts/standins/inspec-standin; InSpec itself cannot be installed here), and
/// rollback to the pre-converge snapshot when a converge or an enforced validation fails.
@Suite(.serialized) struct DeliveryEndToEndTests {
    static let playbook = Bin.repo.appendingPathComponent("cookbooks/ansible/sensor-agent").path
    static let profile = Bin.repo.appendingPathComponent("inspec/sensor-agent").path

    func withDebianContainer(image: String = "iotgw-debian12", _ body: (LXDClient, String) async throws -> Void) async throws {
        let lxd = try E2E.lxd()
        let name = "t-deliver-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await E2EContext.cleaningUp(lxd, [name], daemons: { [] }) {
            try await lxd.createInstance(InstancesPost(name: name, source: .image(alias: image),
                                                       profiles: ["default", "iotgw-vendor"]))
            try await lxd.start(name)
            _ = try await eventually("systemd up in \(name)", timeout: .seconds(60)) {
                let r = try await lxd.exec(name, ["systemctl", "is-system-running"])
                return ["running", "degraded"].contains(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ? true : nil
            }
            let standin = try Data(contentsOf: Bin.repo.appendingPathComponent("scripts/standins/inspec-standin"))
            try await lxd.push(name, path: "/usr/local/bin/inspec", content: .init(bytes: standin), attributes: FileAttributes(mode: 0o755))
            try await body(lxd, name)
        }
    }

    func version(_ lxd: LXDClient, _ c: String) async throws -> String {
        try await lxd.exec(c, ["/opt/sensor-agent/bin/sensor-agent", "--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func ansibleConvergeValidateUpdateAndRollBack() async throws {
        try await withDebianContainer { lxd, c in
            var delivery = AppDelivery(lxd: lxd, logger: Logger(label: "delivery"))
            delivery.keepSnapshots = 2
            let validator = InSpecValidator(policy: ValidationPolicy(mode: .enforced))

            // First delivery: converges, validates, keeps.
            let first = try await delivery.deliver(c, provisioner: AnsibleProvisioner(playbookDirectory: Self.playbook,
                                                                                        extraVars: ["app_version": "1.0.0"]),
                                                   validator: validator, profiles: [Self.profile])
            #expect(first.result == .applied, "\(first.message)")
            #expect(first.converge?.succeeded == true)
            #expect((first.converge?.changedResources ?? 0) > 0)
            let verdict = try #require(first.validation["sensor-agent"])
            #expect(verdict.passed, "\(verdict.explanation)")
            #expect(verdict.summary.passed == 4)
            #expect(first.controls?.count == 4)
            #expect(first.controls?["sensor-agent/sensor-agent-04"] == "passed")
            #expect(try await version(lxd, c) == "sensor-agent 1.0.0")

            // An update (a new app version published by the vendor) reaches the container.
            let update = try await delivery.deliver(c, provisioner: AnsibleProvisioner(playbookDirectory: Self.playbook,
                                                                                         extraVars: ["app_version": "1.1.0"]),
                                                    validator: validator, profiles: [Self.profile])
            #expect(update.result == .applied, "\(update.message)")
            #expect(try await version(lxd, c) == "sensor-agent 1.1.0")

            // A broken update: the converge "succeeds" but the service does not run; enforced validation
            // fails the control and the container goes back to the snapshot taken before.
            // It is the third: the oldest snapshot goes before it takes its own, so a vendor never pins more than
            // keepSnapshots of them (each can hold the container's whole disk cap on the pool).
            let heldWhileConverging = Mutex<Int?>(nil)
            let broken = try await delivery.deliver(c, provisioner: AnsibleProvisioner(playbookDirectory: Self.playbook,
                                                                                         extraVars: ["app_version": "0.0.0-broken"]),
                                                    validator: validator, profiles: [Self.profile], journal: { phase in
                guard phase == .converging else { return }
                let held = try await lxd.snapshots(c).filter { $0.name.hasPrefix(AppDelivery.snapshotPrefix) }.count
                heldWhileConverging.withLock { $0 = held }
            })
            #expect(heldWhileConverging.withLock { $0 } == 2)
            #expect(broken.result == .rolledBack)
            #expect(broken.failingControls == ["sensor-agent-04"])
            #expect(broken.restoredSnapshot == broken.snapshot)
            _ = try await eventually("container back up after restore") { try await lxd.exec(c, ["true"]).exitCode == 0 ? true : nil }
            #expect(try await version(lxd, c) == "sensor-agent 1.1.0")
            #expect(try await lxd.snapshots(c).filter { $0.name.hasPrefix(AppDelivery.snapshotPrefix) }.count <= 2)

            // Report-only validation records the failure but keeps the update.
            let lenient = InSpecValidator(policy: ValidationPolicy(mode: .reportOnly))
            let kept = try await delivery.deliver(c, provisioner: AnsibleProvisioner(playbookDirectory: Self.playbook,
                                                                                       extraVars: ["app_version": "0.0.0-broken"]),
                                                  validator: lenient, profiles: [Self.profile])
            #expect(kept.result == .applied)
            #expect(kept.failingControls == ["sensor-agent-04"])
            #expect(try await version(lxd, c) == "sensor-agent 0.0.0-broken")
        }
    }

    /// The production image has no chef-client here: bootstrap refuses without an install step, and
    /// with one runs it first, then writes what knife bootstrap writes with the right modes.
    @Test func chefBootstrapInstallsChefClientWhenMissingAndWritesKnifesFiles() async throws {
        try await withDebianContainer { lxd, c in
            _ = try await lxd.exec(c, ["rm", "-f", "/usr/local/bin/chef-client"])
            let files = BootstrapFiles(chefServerURL: "http://chef.example:4545", nodeName: "gw-test-acme",
                                       clientKeyPEM: "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
                                       runList: ["recipe[sensor_agent@1.0.0]"])
            await #expect { try await ChefProvisioner(files: files).bootstrap(c, lxd: lxd) } throws: {
                "\($0)".contains("chef-client is not installed")
            }
            let install = ["sh", "-c", "printf '#!/bin/sh\\necho installed-stub\\n' > /usr/local/bin/chef-client && chmod 755 /usr/local/bin/chef-client"]
            try await ChefProvisioner(files: files, installCommand: install).bootstrap(c, lxd: lxd)
            #expect(try await lxd.exec(c, ["sh", "-c", "command -v chef-client"]).exitCode == 0)
            #expect(try await lxd.exec(c, ["stat", "-c", "%a", "/etc/chef/client.pem", "/etc/chef/client.rb", "/etc/chef/first-boot.json"]).stdout
                    == "600\n644\n644\n")
            let rb = String(buffer: try await lxd.pull(c, path: "/etc/chef/client.rb").content)
            #expect(rb.contains("chef_server_url  \"http://chef.example:4545\""))
            #expect(rb.contains("node_name \"gw-test-acme\""))
            let firstBoot = String(buffer: try await lxd.pull(c, path: "/etc/chef/first-boot.json").content)
            #expect(firstBoot.contains("\"run_list\":[\"recipe[sensor_agent@1.0.0]\"]"))
        }
    }

    /// A restore that fails (here: its snapshot is gone) still prunes the gateway's snapshots, so
    /// retries cannot pile them up; the snapshot it needs for the next try is kept.
    @Test func snapshotsArePrunedEvenWhenARestoreFails() async throws {
        let lxd = try E2E.lxd()
        let c = "t-prune-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await E2EContext.cleaningUp(lxd, [c], daemons: { [] }) {
            try await lxd.createInstance(InstancesPost(name: c, source: .image(alias: "iotgw-busybox"), profiles: ["default"]))
            for i in 1...4 { try await lxd.createSnapshot(c, name: "iotgw-\(i)") }
            try await lxd.createSnapshot(c, name: "owner-own")
            var delivery = AppDelivery(lxd: lxd, logger: Logger(label: "prune"))
            delivery.keepSnapshots = 1
            await #expect(throws: LXDError.self) { try await delivery.restore(c, to: "iotgw-missing", lock: AsyncMutex()) }
            let left = try await lxd.snapshots(c).map(\.name)
            #expect(left == ["iotgw-4", "owner-own"], "\(left)")
        }
    }

    /// A restore retried after LXD's own stop timed out finds the container already stopped: it goes on
    /// from there (restores and starts it) instead of failing at the stop on every retry.
    @Test func aRestoreOfAContainerAlreadyStoppedRestoresAndStartsIt() async throws {
        let lxd = try E2E.lxd()
        let c = "t-restore-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await E2EContext.cleaningUp(lxd, [c], daemons: { [] }) {
            try await lxd.createInstance(InstancesPost(name: c, source: .image(alias: "iotgw-busybox"), profiles: ["default"]))
            try await lxd.start(c)
            try await lxd.createSnapshot(c, name: "iotgw-1")
            #expect(try await lxd.exec(c, ["touch", "/half-converged"]).exitCode == 0)
            try await lxd.stop(c, timeout: 10, force: true)
            try await AppDelivery(lxd: lxd, logger: Logger(label: "restore")).restore(c, to: "iotgw-1", lock: AsyncMutex())
            #expect(try await lxd.state(c).status == "Running")
            #expect(try await lxd.exec(c, ["test", "-e", "/half-converged"]).exitCode == 1, "back at the snapshot")
        }
    }

    @Test func failedConvergeRollsBack() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try """
            - hosts: localhost
              gather_facts: false
              tasks:
                - ansible.builtin.copy: {dest: /root/half-done, content: "x"}
                - ansible.builtin.command: /bin/false
            """.write(to: dir.appendingPathComponent("site.yml"), atomically: true, encoding: .utf8)
        try await withDebianContainer { lxd, c in
            let delivery = AppDelivery(lxd: lxd, logger: Logger(label: "delivery"))
            let r = try await delivery.deliver(c, provisioner: AnsibleProvisioner(playbookDirectory: dir.path),
                                               validator: InSpecValidator(policy: ValidationPolicy()), profiles: [])
            #expect(r.result == .rolledBack)
            #expect(r.converge?.succeeded == false)
            #expect(r.converge?.summary.contains("failed") == true)
            _ = try await eventually("container back up") { try await lxd.exec(c, ["true"]).exitCode == 0 ? true : nil }
            #expect(try await lxd.exec(c, ["test", "-e", "/root/half-done"]).exitCode == 1, "the half-done change was rolled back")
        }
    }
}
