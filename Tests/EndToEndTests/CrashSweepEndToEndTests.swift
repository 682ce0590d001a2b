import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

/// Walks the gateway daemon through a scenario while it dies abruptly (`IOTGW_CRASH_AFTER`, see
/// `CrashPoint`) right after each journaled step in turn: every time it exits, it is restarted with the
/// next crash point, and the scenario goes on against whatever the crash left. Invariants are checked
/// after every restart and at the end; a table of points and outcomes is printed.
final class CrashSweep {
    let gateway: GatewayFixture
    let testbed: Testbed
    let lxd: LXDClient
    let vendor: String
    let container: String
    /// Points still to reach, in the order the scenario passes them.
    private(set) var queue: [String]
    private(set) var table: [(point: String, outcome: String)] = []

    init(gateway: GatewayFixture, testbed: Testbed, lxd: LXDClient, vendor: String, points: [String]) {
        self.gateway = gateway
        self.testbed = testbed
        self.lxd = lxd
        self.vendor = vendor
        container = ProvisioningPlan.containerName(forVendor: vendor)
        queue = points
    }

    /// Starts the daemon set to die at the next point (or not at all when none is left).
    func start() async throws {
        try await gateway.start(testbed: testbed, extraEnv: queue.first.map { [CrashPoint.environmentVariable: $0] } ?? [:])
    }

    /// Called while the scenario waits: when the daemon died at its crash point, records it, restarts it
    /// with the next point and checks what must hold after any crash. A death for any other reason fails.
    func poll() async throws {
        guard let daemon = gateway.daemon, !daemon.isRunning else { return }
        let status = daemon.process.terminationStatus
        guard let point = queue.first, status == CrashPoint.exitStatus, daemon.output.contains("crash point \(point) reached") else {
            // A crash report's head (what crashed, the crashing thread) first: its tail is only registers and images.
            let report = daemon.output.range(of: "*** Program crashed").map { String(daemon.output[$0.lowerBound...].prefix(6000)) + "\n...\n" } ?? ""
            throw HarnessError("gateway daemon exited with status \(status) outside a crash point:\n\(report)\(daemon.output.suffix(3000))")
        }
        queue.removeFirst()
        try await start()
        try await checkNoDuplicate()
        table.append((point, "crashed (exit \(status)), restarted, resumed"))
    }

    /// A point the scenario passed without the daemon reaching it (not on this path): the daemon is
    /// restarted for the next one.
    func skipCurrent(_ why: String) async throws {
        guard let point = queue.first else { return }
        queue.removeFirst()
        table.append((point, "not reached: \(why)"))
        gateway.daemon?.stop()
        try await start()
    }

    /// Waits for `condition` like `eventually`, handling crashes on the way.
    func until<T>(_ what: String, timeout: Duration = .seconds(120), _ condition: () async throws -> T?) async throws -> T {
        try await eventually(what, timeout: timeout) {
            try await poll()
            return try await condition()
        }
    }

    /// Never two containers of the vendor; a managed container is labelled.
    func checkNoDuplicate() async throws {
        let mine = try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor])
        #expect(mine.count <= 1, "duplicate containers for \(vendor): \(mine.map(\.name))")
        if let c = mine.first { #expect(c.name == container) }
    }

    func vendorStatus() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == vendor } }

    func printTable(_ title: String) {
        print("crash-point sweep: \(title)")
        let width = table.map(\.point.count).max() ?? 0
        for row in table { print("  \(row.point.padding(toLength: width, withPad: " ", startingAt: 0))  \(row.outcome)") }
    }
}

extension EndToEndTests {
    /// Provisioning, attach and detach: plug, the owner approves, the container is created and started,
    /// the device attached; unplug, the device leaves; replug, it is hot-plugged back. Busybox, no apps. One fresh vendor per crash point,
    /// so every point is tried on the path that reaches it.
    @Test func crashAtEveryProvisioningStepResumes() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let image = "iotgw-busybox"
        let fingerprint = try await lxd.imageAlias(image).target
        var table: [(point: String, outcome: String)] = []
        for point in CrashPoint.all where !point.hasPrefix("delivery") {
            let run = root.appendingPathComponent(point.replacingOccurrences(of: ":", with: "-"))
            let vendor = try VendorFixture(id: E2E.vendorID("crash"), usbVendorID: "0403", serials: ["CRASH-1"], image: image,
                                           fingerprint: fingerprint, root: run)
            let gateway = try GatewayFixture(vendors: [(vendor, .ask)], root: run)
            try vendor.enroll(try gateway.identity())
            let container = ProvisioningPlan.containerName(forVendor: vendor.id)
            try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
                try await vendor.start()
                let testbed = try Testbed()
                let tty = try CharNode()
                let sweep = CrashSweep(gateway: gateway, testbed: testbed, lxd: lxd, vendor: vendor.id, points: [point])
                try await sweep.start()

                let device = try testbed.plug(vendorID: "0403", productID: "6001", serial: "CRASH-1", ttyName: "ttyUSB60", devnode: tty.path)
                let pending = try await sweep.until("a pending approval") { try gateway.approvals().first { $0.devices.first?.hostNode != nil } }
                // Nothing before the owner's decision, whatever crashed.
                #expect(try await lxd.instanceExists(container) == false)
                // The decision is recorded once, even when the daemon dies right after recording it (the CLI may
                // then see the connection drop): after the restart nothing is pending and nothing is asked again.
                _ = try gateway.cli(["approve", "--yes", "\(pending.id)"])
                _ = try await sweep.until("device attached") {
                    let applied = try sweep.vendorStatus()?.appliedPlanVersion
                    return try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") && applied == 1 ? true : nil
                }
                #expect(try gateway.approvals().isEmpty, "no approval left pending or lost")

                try testbed.remove(device.usbSyspath)
                _ = try await sweep.until("device detached") {
                    let inside = try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0")
                    let node = FileManager.default.fileExists(atPath: gateway.node(vendor: vendor.id, serial: "CRASH-1"))
                    let attached = try sweep.vendorStatus()?.attachedDevices ?? ["?"]
                    return !inside && !node && attached.isEmpty ? true : nil
                }
                // Replug: the same device goes back into the running container (hot-plugged, no new approval).
                try testbed.plug(vendorID: "0403", productID: "6001", serial: "CRASH-1", ttyName: "ttyUSB62", devnode: tty.path)
                _ = try await sweep.until("device attached again") {
                    let attached = try sweep.vendorStatus()?.attachedDevices
                    return try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") && attached == ["CRASH-1"] ? true : nil
                }
                #expect(try gateway.approvals().isEmpty)
                try await sweep.checkNoDuplicate()
                let final = try #require(try sweep.vendorStatus())
                #expect(final.containerStatus == "Running")
                #expect(final.approvedPlanVersion == 1 && final.appliedPlanVersion == 1)
                #expect(try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id]).count == 1, "exactly one container")
                table.append(sweep.table.first ?? (point, "not reached on this path"))
            }
        }
        print("crash-point sweep: provisioning, attach, detach (invariants held after each)")
        for row in table { print("  \(row.point.padding(toLength: 20, withPad: " ", startingAt: 0))  \(row.outcome)") }
        let reached = Set(table.filter { $0.outcome.hasPrefix("crashed") }.map(\.point))
        // update-config and set-device come with plan updates that change the container, remove-node with a
        // device leaving the plan: not on this scenario's path.
        let required: Set = ["plan-recorded", "approval-decided", "step:verify-image", "step:ensure-node", "step:create", "step:start",
                             "step:attach", "result-recorded", "step:detach"]
        #expect(required.isSubset(of: reached), "crash points never reached: \(required.subtracting(reached).sorted())")
    }

    /// App delivery and a plan update: the first delivery, then a broken release rolled back, with the
    /// daemon dying at every delivery phase in turn. Debian test image, Ansible (real), InSpec stand-in.
    @Test func crashAtEveryDeliveryPhaseResumes() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let (vendor, gateway) = try await E2E.ansibleVendor("crashd", serial: "CRASHD-1", lxd: lxd, root: root)
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        let daemonBin = try Bin.path("iot-daemon")
        func agentVersion() async throws -> String {
            try await lxd.exec(container, ["/opt/sensor-agent/bin/sensor-agent", "--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let points = ["delivery:snapshotting", "delivery:converging", "delivery:committing", "delivery-finished", "delivery:restoring"]

        try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
            try await vendor.start()
            let testbed = try Testbed()
            let tty = try CharNode()
            let sweep = CrashSweep(gateway: gateway, testbed: testbed, lxd: lxd, vendor: vendor.id, points: points)
            try await sweep.start()
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "CRASHD-1", ttyName: "ttyUSB61", devnode: tty.path)

            let first = try await sweep.until("first delivery", timeout: .seconds(900)) {
                try sweep.vendorStatus().flatMap { $0.deliveredPlanVersion == 1 && $0.deliveryPhase == nil ? $0 : nil }
            }
            #expect(first.delivery?.hasPrefix("applied") == true, "\(first.delivery ?? "") \(first.error ?? "")")
            #expect(try await agentVersion() == "sensor-agent 1.0.0")
            // The phases of a first delivery, each crashed at once; restoring is only on a failing path.
            #expect(sweep.queue == ["delivery:restoring"], "\(sweep.queue)")

            let bad = try run(daemonBin, ["publish-app", "--config", vendor.configPath, "--app", "sensor-agent", "--version", "1.2.0-broken"])
            #expect(bad.status == 0, "\(bad.stderr)")
            let rolled = try await sweep.until("rollback", timeout: .seconds(900)) {
                try sweep.vendorStatus().flatMap { $0.delivery?.hasPrefix("rolled-back") == true && $0.deliveryPhase == nil ? $0 : nil }
            }
            #expect(rolled.failingControls == ["sensor-agent-04"])
            _ = try await sweep.until("container back up") { try await lxd.exec(container, ["true"]).exitCode == 0 ? true : nil }
            // Back at the pre-update snapshot: the previous version runs.
            #expect(try await agentVersion() == "sensor-agent 1.0.0")
            sweep.printTable("app delivery and a rolled-back update")
            #expect(sweep.queue.isEmpty, "crash points never reached: \(sweep.queue)")
            try await sweep.checkNoDuplicate()
            // Retries after crashes add no snapshots beyond what is kept.
            let snapshots = try await lxd.snapshots(container)
            #expect(snapshots.count <= 3, "\(snapshots)")
        }
    }
}
