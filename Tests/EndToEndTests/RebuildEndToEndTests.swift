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

    /// A vendor delivering sensor-agent with Ansible on the Debian test image, and its gateway (policy auto,
    /// enforced validation, no hardening: it installs packages from the network, minutes per container,
    /// and is not what these tests are about). Enrolled.
    static func rebuildVendor(_ tag: String, serial: String, image: String, fingerprint: String,
                              root: URL, projects: Bool = false) throws -> (VendorFixture, GatewayFixture) {
        let playbook = Bin.repo.appendingPathComponent("cookbooks/ansible/sensor-agent").path
        let vendor = try VendorFixture(id: E2E.vendorID(tag), usbVendorID: "0403", serials: [serial], image: image, fingerprint: fingerprint,
                                       memoryMiB: 256, extraYAML: "ansible: {playbookDirectory: \(playbook)}", root: root)
        let gateway = try GatewayFixture(vendors: [(vendor, .auto)], root: root, projects: projects, extraYAML: """
            planSyncSeconds: 1
            delivery: {inspecDirectory: \(Bin.repo.appendingPathComponent("inspec").path), environment: test, validationMode: enforced, \
            keepSnapshots: 2, hardening: {enabled: false}}
            """)
        try vendor.enroll(try gateway.identity())
        return (vendor, gateway)
    }

    /// The vendor's daemon serves plans with another image from now on (its configuration changed, it restarted).
    static func moveVendor(_ vendor: VendorFixture, from old: (String, String), to new: (String, String)) async throws {
        _ = vendor.daemon?.stop()
        let yaml = try String(contentsOfFile: vendor.configPath, encoding: .utf8)
            .replacingOccurrences(of: "image: {alias: \(old.0), fingerprint: \(old.1)}", with: "image: {alias: \(new.0), fingerprint: \(new.1)}")
        try yaml.write(toFile: vendor.configPath, atomically: true, encoding: .utf8)
        try await vendor.start()
    }

    /// A rebuild to a new image whose apps fail validation leaves the old container running as it was
    /// (its device, its apps, no candidate left); the vendor's fix on the same image then switches: the
    /// device and the apps are in the new container, and it is the vendor's only one. With `lxd.projects` too:
    /// the candidate then lives in a restricted project of its own and moves into the vendor's at the switch.
    @Test(arguments: [false, true]) func aRebuildToANewImageThatFailsValidationLeavesTheOldContainerRunning(projects: Bool) async throws {
        var lxd = try E2E.lxd()
        // The test looks where the gateway puts each container.
        if projects { lxd.projectRouting = VendorProjects.route }
        let root = try E2E.tempRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        let oldAlias = E2E.image("iotgw-debian12-test")
        let oldFingerprint = try await lxd.imageAlias(oldAlias).target
        let (vendor, gateway) = try Self.rebuildVendor(projects ? "rbp" : "rb", serial: "RB-1", image: oldAlias, fingerprint: oldFingerprint,
                                                       root: root, projects: projects)
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

        let (newAlias, newFingerprint) = try await Self.secondDebianTestImage(lxd, root: root)
        var failure: (any Error)?
        do { try await E2EContext.cleaningUp(lxd, [container, candidate, prev], daemons: { [vendor.daemon, gateway.daemon] }) {
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
            try await Self.moveVendor(vendor, from: (oldAlias, oldFingerprint), to: (newAlias, newFingerprint))
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
            // Started moments ago (the switch stops it to rename it): its service comes up as at any boot.
            _ = try await eventually("sensor-agent active in the new container") {
                try await lxd.exec(container, ["systemctl", "is-active", "sensor-agent"]).stdout == "active\n" ? true : nil
            }
            #expect(try await lxd.exec(container, ["test", "-e", "/root/old-container"]).exitCode == 1, "a new container")
            #expect(switched.attachedDevices == ["RB-1"])
            #expect(try await exists(candidate) == false)
            #expect(try await exists(prev) == false)
            let mine = try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id])
            #expect(mine.map(\.name) == [container], "exactly one managed container: \(mine.map(\.name))")
            // The vendor hears of the delivery in the new container as of any delivery.
            _ = try await eventually("'delivered' report for the rebuilt plan at the vendor") {
                try vendor.reports().first { $0.outcome == .delivered && $0.planVersion == switched.appliedPlanVersion }
            }
            if projects {
                #expect(try await lxd.instance(container).instance.project == container, "in the vendor's own project")
                for gone in [candidate, prev] {
                    await #expect(throws: LXDError.self, "the project of \(gone) is gone") { try await lxd.project(gone) }
                }
            }
        } } catch { failure = error }
        if projects {
            let cleanup = VendorProjects(lxd: lxd, config: try GatewayConfig.load(path: gateway.configPath), logger: .init(label: "cleanup"))
            for name in [container, candidate, prev] { try? await cleanup.remove(container: name) }
        }
        try? await lxd.deleteImageAlias(newAlias)
        try? await lxd.deleteImage(fingerprint: newFingerprint)
        if let failure { throw failure }
    }

    /// The gateway killed (`_exit`, as kill -9) while the candidate's apps converge, then again right after the
    /// old container was renamed out of the way: the first restart throws the candidate away and builds it
    /// again, the second finishes the switch. The device is never in two running containers, the old
    /// container is never lost before the new one is in its place, and one container is left.
    @Test func aRebuildKilledMidDeliveryAndMidSwitchResumes() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        let oldAlias = E2E.image("iotgw-debian12-test")
        let oldFingerprint = try await lxd.imageAlias(oldAlias).target
        let (vendor, gateway) = try Self.rebuildVendor("rbk", serial: "RBK-1", image: oldAlias, fingerprint: oldFingerprint, root: root)
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        let candidate = ContainerPlanner.candidateName(vendor: vendor.id)
        let prev = ContainerPlanner.previousName(vendor: vendor.id)
        func status() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == vendor.id } }
        func exists(_ name: String) async throws -> Bool {
            do { _ = try await lxd.instance(name); return true } catch let e as LXDError where e.code == .notFound { return false }
        }
        /// Where the device is passed in, among the vendor's running containers.
        func holders() async throws -> [String] {
            try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id])
                .filter { $0.isRunning && $0.devices[ContainerPlanner.deviceName(serial: "RBK-1")] != nil }.map(\.name)
        }
        func crashed(at point: String) async throws {
            _ = try await eventually("the gateway dies at \(point)", timeout: .seconds(300)) {
                let held = try await holders()
                #expect(held.count <= 1, "the device in two running containers: \(held)")
                guard let d = gateway.daemon, !d.isRunning else { return nil as Bool? }
                #expect(d.process.terminationStatus == CrashPoint.exitStatus && d.output.contains("crash point \(point) reached"),
                        "\(d.output.suffix(2000))")
                return true
            }
        }
        let (newAlias, newFingerprint) = try await Self.secondDebianTestImage(lxd, root: root)
        var failure: (any Error)?
        do { try await E2EContext.cleaningUp(lxd, [container, candidate, prev], daemons: { [vendor.daemon, gateway.daemon] }) {
            try await vendor.start()
            let testbed = try Testbed()
            let tty = try CharNode()
            try await gateway.start(testbed: testbed, extraEnv: [CrashPoint.environmentVariable: "rebuild:delivering"])
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "RBK-1", ttyName: "ttyUSB72", devnode: tty.path)
            _ = try await eventually("first delivery", timeout: .seconds(300)) { try status().flatMap { $0.deliveredPlanVersion != nil ? $0 : nil } }
            #expect(try await lxd.exec(container, ["touch", "/root/old-container"]).exitCode == 0)

            try await Self.moveVendor(vendor, from: (oldAlias, oldFingerprint), to: (newAlias, newFingerprint))
            try await crashed(at: "rebuild:delivering")
            #expect(try await exists(candidate), "killed with the candidate built")
            #expect(try await holders() == [container], "the old container keeps the device")

            try await gateway.start(testbed: testbed, extraEnv: [CrashPoint.environmentVariable: "rebuild:old-renamed"])
            try await crashed(at: "rebuild:old-renamed")
            let (renamed, built) = (try await exists(prev), try await exists(candidate))
            #expect(renamed && built, "killed between the renames")
            #expect(try await holders().isEmpty)

            try await gateway.start(testbed: testbed)
            _ = try await eventually("switched to the new image", timeout: .seconds(300)) {
                let held = try await holders()
                #expect(held.count <= 1, "the device in two running containers: \(held)")
                let i = try? await lxd.instance(container).instance
                guard i?.config["volatile.base_image"] == newFingerprint, i?.isRunning == true, try status()?.error == nil,
                      try await holders() == [container], try await !exists(prev), try await !exists(candidate) else { return nil as Bool? }
                return true
            }
            #expect(try await lxd.exec(container, ["test", "-e", "/root/old-container"]).exitCode == 1, "a new container")
            _ = try await eventually("sensor-agent delivered in the new container") {
                try await lxd.exec(container, ["/opt/sensor-agent/bin/sensor-agent", "--version"]).exitCode == 0 ? true : nil
            }
            let mine = try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id])
            #expect(mine.map(\.name) == [container], "exactly one managed container: \(mine.map(\.name))")
        } } catch { failure = error }
        try? await lxd.deleteImageAlias(newAlias)
        try? await lxd.deleteImage(fingerprint: newFingerprint)
        if let failure { throw failure }
    }
}
