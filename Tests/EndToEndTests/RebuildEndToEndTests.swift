import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

/// A plan with a new image rebuilds the vendor's container beside the old one: apps delivered and
/// validated in the candidate, and only then the switch.
extension EndToEndTests {
    /// The Debian test image with another fingerprint: its cached tarball with an empty gzip member
    /// appended (the same bytes once unpacked, so the same stand-ins inside; different bytes, so a new
    /// image to LXD). Imported under a fresh alias.
    static func secondDebianTestImage(_ lxd: LXDClient, root: URL) async throws -> (alias: String, fingerprint: String) {
        let cache = ProcessInfo.processInfo.environment["IOTGW_IMAGE_CACHE"] ?? "/var/cache/iotgw-images"
        let source = try FileManager.default.contentsOfDirectory(atPath: cache)
            .filter { $0.hasPrefix("debian12test-") && $0.hasSuffix(".tar.gz") }.sorted().last
        guard let source else { throw HarnessError("no debian12test tarball in \(cache): run scripts/build-image debian12test") }
        let copy = root.appendingPathComponent("debian12test-again.tar.gz")
        try FileManager.default.copyItem(atPath: "\(cache)/\(source)", toPath: copy.path)
        let empty = try run("/bin/sh", ["-c", "gzip -c </dev/null >>\(copy.path)"])
        guard empty.status == 0 else { throw HarnessError("gzip: \(empty.stderr)") }
        let fingerprint = try await lxd.importImage(tarball: copy.path)
        try? FileManager.default.removeItem(at: copy)
        let alias = "iotgw-e2e-rebuild-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await lxd.createImageAlias(alias, target: fingerprint)
        return (alias, fingerprint)
    }

    /// A rebuild to a new image whose apps fail validation leaves the old container running as it was
    /// (its device, its apps, no candidate left); the vendor's fix on the same image then switches: the
    /// device and the apps are in the new container, and it is the vendor's only one.
    @Test func aRebuildToANewImageThatFailsValidationLeavesTheOldContainerRunning() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        let oldAlias = E2E.image("iotgw-debian12-test")
        let oldFingerprint = try await lxd.imageAlias(oldAlias).target
        let playbook = Bin.repo.appendingPathComponent("cookbooks/ansible/sensor-agent").path
        let vendor = try VendorFixture(id: E2E.vendorID("rb"), usbVendorID: "0403", serials: ["RB-1"], image: oldAlias,
                                       fingerprint: oldFingerprint, memoryMiB: 256,
                                       extraYAML: "ansible: {playbookDirectory: \(playbook)}", root: root)
        // No hardening: it installs packages from the network, minutes per container, and is not what is tested here.
        let gateway = try GatewayFixture(vendors: [(vendor, .auto)], root: root, extraYAML: """
            planSyncSeconds: 1
            delivery: {inspecDirectory: \(Bin.repo.appendingPathComponent("inspec").path), environment: test, validationMode: enforced, \
            keepSnapshots: 2, hardening: {enabled: false}}
            """)
        try vendor.enroll(try gateway.identity())
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        let candidate = ContainerPlanner.candidateName(vendor: vendor.id)
        let prev = ContainerPlanner.previousName(vendor: vendor.id)
        let daemonBin = try Bin.path("iot-daemon")
        func status() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == vendor.id } }
        func agentVersion() async throws -> String {
            try await lxd.exec(container, ["/opt/sensor-agent/bin/sensor-agent", "--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func exists(_ name: String) async throws -> Bool {
            do { _ = try await lxd.instance(name); return true } catch let e as LXDError where e.code == .notFound { return false }
        }
        let clock = ContinuousClock()

        try await E2EContext.cleaningUp(lxd, [container, candidate, prev], daemons: { [vendor.daemon, gateway.daemon] }) {
            let (newAlias, newFingerprint) = try await Self.secondDebianTestImage(lxd, root: root)
            defer { Task { try? await lxd.deleteImageAlias(newAlias); try? await lxd.deleteImage(fingerprint: newFingerprint) } }
            #expect(newFingerprint != oldFingerprint)
            try await vendor.start()
            let testbed = try Testbed()
            let tty = try CharNode()
            try await gateway.start(testbed: testbed)
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "RB-1", ttyName: "ttyUSB71", devnode: tty.path)

            var t = clock.now
            let first = try await eventually("first delivery", timeout: .seconds(300)) {
                try status().flatMap { $0.deliveredPlanVersion != nil ? $0 : nil }
            }
            #expect(first.delivery?.hasPrefix("applied") == true, "\(first.delivery ?? "") \(first.error ?? "")")
            print("first delivery: \(t.duration(to: clock.now))")
            #expect(try await agentVersion() == "sensor-agent 1.0.0")
            #expect(try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0"))
            #expect(try await lxd.exec(container, ["touch", "/root/old-container"]).exitCode == 0)
            let before = try #require(try status())

            // 1. The vendor moves to the new image and, in the same plan, to an app version whose service never runs.
            _ = vendor.daemon?.stop()
            let bad = try run(daemonBin, ["publish-app", "--config", vendor.configPath, "--app", "sensor-agent", "--version", "1.2.0-broken"])
            #expect(bad.status == 0, "\(bad.stderr)")
            let yaml = try String(contentsOfFile: vendor.configPath, encoding: .utf8)
                .replacingOccurrences(of: "image: {alias: \(oldAlias), fingerprint: \(oldFingerprint)}",
                                      with: "image: {alias: \(newAlias), fingerprint: \(newFingerprint)}")
            try yaml.write(toFile: vendor.configPath, atomically: true, encoding: .utf8)
            try await vendor.start()
            t = clock.now
            let failed = try await eventually("the rebuild failed", timeout: .seconds(300)) {
                try status().flatMap { $0.error?.contains("rebuild on image") == true ? $0 : nil }
            }
            print("failed rebuild: \(t.duration(to: clock.now)): \(failed.error ?? "")")
            #expect(failed.error?.contains("sensor-agent-04") == true, "\(failed.error ?? "")")
            #expect(failed.appliedPlanVersion == before.appliedPlanVersion, "the new plan is not applied")
            _ = try await eventually("the candidate gone") { try await exists(candidate) ? nil : true }
            let old = try await lxd.instance(container).instance
            #expect(old.status == "Running")
            #expect(old.config["volatile.base_image"] == oldFingerprint)
            #expect(try await lxd.exec(container, ["test", "-e", "/root/old-container"]).exitCode == 0, "the very same container")
            #expect(try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0"))
            #expect(try await agentVersion() == "sensor-agent 1.0.0")
            #expect(try await exists(prev) == false)
            let report = try await eventually("the failure reported to the vendor") {
                try vendor.reports().first { $0.outcome == .failed && $0.error?.contains("rebuild") == true }
            }
            #expect(report.planVersion > before.appliedPlanVersion ?? 0)

            // 2. The vendor's fix, on the same new image: built, validated, switched.
            let fix = try run(daemonBin, ["publish-app", "--config", vendor.configPath, "--app", "sensor-agent", "--version", "1.1.0"])
            #expect(fix.status == 0, "\(fix.stderr)")
            t = clock.now
            let switched = try await eventually("switched to the new image", timeout: .seconds(300)) {
                let s = try status()
                guard s?.error == nil, let applied = s?.appliedPlanVersion, applied > report.planVersion, s?.deliveredPlanVersion == applied
                else { return nil as ControlAPI.Vendor? }
                return s
            }
            print("good rebuild: \(t.duration(to: clock.now))")
            let new = try await lxd.instance(container).instance
            #expect(new.config["volatile.base_image"] == newFingerprint)
            #expect((new.config[ContainerPlanner.candidateKey] ?? "").isEmpty)
            #expect(new.status == "Running")
            _ = try await eventually("the device in the new container") {
                try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
            }
            #expect(try await agentVersion() == "sensor-agent 1.1.0")
            #expect(try await lxd.exec(container, ["systemctl", "is-active", "sensor-agent"]).stdout == "active\n")
            #expect(try await lxd.exec(container, ["test", "-e", "/root/old-container"]).exitCode == 1, "a new container")
            #expect(switched.attachedDevices == ["RB-1"])
            #expect(try await exists(candidate) == false)
            #expect(try await exists(prev) == false)
            let mine = try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id])
            #expect(mine.map(\.name) == [container], "exactly one managed container: \(mine.map(\.name))")
        }
    }
}
