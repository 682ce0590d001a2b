import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

/// LXD itself crashing under the gateway: `scripts/lxd-restart` kill -9s the real `lxd` daemon (containers
/// keep running under their monitors) and starts it again exactly as `scripts/setup` does. The gateway
/// holds at a known step (`IOTGW_PAUSE_AT`, see `CrashPoint.pause`) so the kill lands where the test wants.
///
/// Other LXD users on this host see LXD gone for the outage (seconds): these tests are in the serialized
/// end-to-end suite so that at least the project's own end-to-end tests never overlap them.
final class LXDOutage {
    private let result = Shared<Output?>(nil)
    let downSeconds: Int

    /// Kills LXD now (on a thread of its own: the script blocks until LXD is ready again) and starts it
    /// `downSeconds` later. Returns once LXD no longer answers.
    init(downSeconds: Int, lxd: LXDClient) async throws {
        self.downSeconds = downSeconds
        let script = Bin.repo.appendingPathComponent("scripts/lxd-restart").path
        let result = result
        // posix_spawn with a clean signal mask (see spawnAndWait): LXD started from here must not inherit the
        // test process's blocked signals.
        let thread = Thread {
            let out = (try? spawnAndWait([script, "--down", String(downSeconds)])) ?? Output(status: -1, stdout: "", stderr: "cannot run \(script)")
            result.set(out)
        }
        thread.start()
        _ = try await eventually("LXD killed", timeout: .seconds(150), poll: .milliseconds(20)) {
            if let r = result.value { throw HarnessError("lxd-restart ended before LXD went down: \(r.stdout) \(r.stderr)") }
            return LXDSocket.probe(lxd.socketPath) != nil ? true : nil
        }
    }

    var finished: Output? { result.value }

    /// Waits until LXD is back (the script returned) and checks the script did what it says.
    @discardableResult
    func waitBack() async throws -> Output {
        let r = try await eventually("LXD back", timeout: .seconds(180), poll: .milliseconds(100)) { finished }
        #expect(r.status == 0, "scripts/lxd-restart failed: \(r.stdout) \(r.stderr)")
        guard r.status == 0 else { throw HarnessError("LXD did not come back: \(r.stderr)") }
        print("lxd-restart: \(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "\n", with: "; "))")
        return r
    }
}

extension GatewayFixture {
    /// Starts the daemon set to hold at `point` until the file it creates is removed.
    func startPaused(testbed: Testbed, at point: String) async throws -> URL {
        let file = dir.appendingPathComponent("paused-\(starts + 1)")
        try? FileManager.default.removeItem(at: file)
        try await start(testbed: testbed, extraEnv: [CrashPoint.pauseVariable: point, CrashPoint.pauseFileVariable: file.path])
        return file
    }

    /// Waits until the daemon holds at its pause point.
    func waitPaused(_ file: URL, timeout: Duration = .seconds(120)) async throws {
        _ = try await eventually("daemon paused", timeout: timeout) {
            if let d = daemon, !d.isRunning { throw HarnessError("gateway daemon exited:\n\(d.output.suffix(3000))") }
            return FileManager.default.fileExists(atPath: file.path) ? true : nil
        }
    }

    func release(_ file: URL) throws { try FileManager.default.removeItem(at: file) }

    /// Lines of the daemon's log (all its starts) containing `text`.
    func logLines(_ text: String) -> [Substring] {
        (1...max(starts, 1)).flatMap { n -> [Substring] in
            let log = dir.appendingPathComponent("iot-gateway-client-\(n).log")
            let all = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            return all.split(separator: "\n").filter { $0.contains(text) }
        }
    }
}

extension EndToEndTests {
    /// LXD dies as a container is being created, twice: once already down when the create is sent, once
    /// killed with the create request sent and unanswered. Each time the daemon shows LXD down (status and log), records nothing
    /// as failed, does not retry in a loop, and once LXD is back finishes: one container, started, the
    /// approved device inside, applied version recorded, no failure reported to the vendor.
    @Test func lxdRestartDuringCreateResumes() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let image = E2E.image("iotgw-busybox")
        let fingerprint = try await lxd.imageAlias(image).target
        // (inFlight: the create request is sent to an LXD frozen with SIGSTOP, which is then killed with the request
        // unanswered, so the daemon cannot know whether it happened; else LXD is already down when the create is sent.)
        for (tag, inFlight) in [("lxdc", false), ("lxdm", true)] {
            let dir = root.appendingPathComponent(tag)
            let serial = "\(tag.uppercased())-1"
            let vendor = try VendorFixture(id: E2E.vendorID(tag), usbVendorID: "0403", serials: [serial], image: image,
                                           fingerprint: fingerprint, root: dir)
            let gateway = try GatewayFixture(vendors: [(vendor, .ask)], root: dir)
            try vendor.enroll(try gateway.identity())
            let container = ProvisioningPlan.containerName(forVendor: vendor.id)
            try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
                try await vendor.start()
                let testbed = try Testbed()
                let tty = try CharNode()
                let pause = try await gateway.startPaused(testbed: testbed, at: "before:step:create")
                try testbed.plug(vendorID: "0403", productID: "6001", serial: serial, ttyName: "ttyUSB63", devnode: tty.path)
                let pending = try await eventually("a pending approval") { try gateway.approvals().first { $0.devices.first?.hostNode != nil } }
                #expect(try gateway.cli(["approve", "--yes", "\(pending.id)"]).status == 0)
                try await gateway.waitPaused(pause)

                let outage: LXDOutage
                if inFlight {
                    let pid = try #require(try await lxd.server().environment?.serverPID)
                    #expect(kill(pid_t(pid), SIGSTOP) == 0)
                    try gateway.release(pause)
                    // The create is sent and sits unanswered in the frozen LXD's socket.
                    try await Task.sleep(for: .seconds(1))
                    outage = try await LXDOutage(downSeconds: 3, lxd: lxd)
                } else {
                    outage = try await LXDOutage(downSeconds: 3, lxd: lxd)
                    try gateway.release(pause)
                }
                // While LXD is away: the owner sees it down, and no failure is recorded for the vendor.
                let down = try await eventually("status shows LXD down", timeout: .seconds(60)) {
                    let s = try gateway.status()
                    return s.lxdDownSince != nil ? s : nil
                }
                #expect(down.lxd.hasPrefix("down since"), "\(down.lxd)")
                var sawFailure: [String] = []
                while outage.finished == nil {
                    if let v = try? gateway.status().vendors.first(where: { $0.id == vendor.id }), let e = v.error { sawFailure.append(e) }
                    try await Task.sleep(for: .milliseconds(250))
                }
                try await outage.waitBack()
                #expect(sawFailure.isEmpty, "a failure was recorded while LXD was down: \(sawFailure)")

                // Back: the work is finished without anyone's help.
                let done = try await eventually("device attached after LXD returned", timeout: .seconds(120)) {
                    let v = try gateway.status().vendors.first { $0.id == vendor.id }
                    return try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") && v?.appliedPlanVersion == 1
                        && v?.attachedDevices == [serial] ? v : nil
                }
                #expect(done.error == nil)
                #expect(done.containerStatus == "Running")
                let status = try gateway.status()
                #expect(status.lxdDownSince == nil && status.lxd.hasPrefix("up"), "\(status.lxd)")
                let mine = try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id])
                #expect(mine.map(\.name) == [container], "exactly one container: \(mine.map(\.name))")
                #expect(try gateway.approvals().isEmpty, "no approval lost or asked again")
                #expect(gateway.logLines("LXD is down: waiting for it").count >= 1)
                #expect(gateway.logLines("LXD is back").count >= 1)
                // The create was cut by the outage, once: waiting is not retrying in a loop.
                let attempts = gateway.logLines("provision step failed").count
                #expect(attempts >= 1 && attempts <= 3, "\(attempts) failed provision steps while LXD was away")
                // The vendor never heard of a failure.
                let reports = try await eventually("'applied' report at the vendor") {
                    let r = try vendor.reports()
                    return r.contains { $0.outcome == .applied } ? r : nil
                }
                #expect(!reports.contains { $0.outcome == .failed }, "\(reports.map(\.outcome))")
                print("LXD restart during create (\(inFlight ? "killed with the create request in flight" : "down when the create was sent")): "
                      + "one container, device attached, \(attempts) step(s) interrupted, no failure recorded")
            }
        }
    }

    /// LXD dies while the vendor's app converges (real ansible-playbook in the Debian test image): the
    /// delivery is neither failed nor rolled back for it; once LXD is back, the container returns to the
    /// delivery's snapshot (the converge's fate is unknown) and the delivery runs again to its real verdict.
    @Test func lxdRestartDuringDeliveryResumes() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let (vendor, gateway) = try await E2E.ansibleVendor("lxdd", serial: "LXDD-1", lxd: lxd, root: root)
        let container = ProvisioningPlan.containerName(forVendor: vendor.id)
        func status() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == vendor.id } }

        try await E2EContext.cleaningUp(lxd, [container], daemons: { [vendor.daemon, gateway.daemon] }) {
            try await vendor.start()
            let testbed = try Testbed()
            let tty = try CharNode()
            let pause = try await gateway.startPaused(testbed: testbed, at: "delivery:converging")
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "LXDD-1", ttyName: "ttyUSB64", devnode: tty.path)
            try await gateway.waitPaused(pause, timeout: .seconds(180))
            // The snapshot is taken and the converging phase journaled: let the converge start, then kill LXD under it.
            try gateway.release(pause)
            try await Task.sleep(for: .seconds(1))
            let outage = try await LXDOutage(downSeconds: 2, lxd: lxd)
            _ = try await eventually("status shows LXD down", timeout: .seconds(60)) { try gateway.status().lxdDownSince != nil ? true : nil }
            var seen: [String] = []
            while outage.finished == nil {
                if let v = try? status() {
                    if let d = v.delivery { seen.append("delivery \(d)") }
                    if let e = v.error { seen.append("error \(e)") }
                }
                try await Task.sleep(for: .milliseconds(250))
            }
            try await outage.waitBack()
            #expect(seen.isEmpty, "an outcome was recorded while LXD was down: \(seen)")

            let delivered = try await eventually("delivery finished after LXD returned", timeout: .seconds(480)) {
                try status().flatMap { $0.deliveredPlanVersion == 1 && $0.deliveryPhase == nil ? $0 : nil }
            }
            #expect(delivered.delivery?.hasPrefix("applied") == true, "\(delivered.delivery ?? "") \(delivered.error ?? "")")
            #expect(delivered.error == nil)
            #expect(delivered.failingControls.isEmpty)
            #expect(try await lxd.exec(container, ["/opt/sensor-agent/bin/sensor-agent", "--version"]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines) == "sensor-agent 1.0.0")
            _ = try await eventually("device inside after the restore") {
                let attached = try status()?.attachedDevices
                return try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") && attached == ["LXDD-1"] ? true : nil
            }
            // The interrupted delivery was repaired from its transaction, not judged.
            #expect(gateway.logLines("recovering an interrupted delivery").count >= 1)
            #expect(gateway.logLines("rolling back").isEmpty, "\(gateway.logLines("rolling back"))")
            let mine = try await lxd.listInstances(userFilter: ["iotgw.vendor": vendor.id])
            #expect(mine.map(\.name) == [container])
            let reports = try await eventually("'delivered' report at the vendor") {
                let r = try vendor.reports()
                return r.contains { $0.outcome == .delivered } ? r : nil
            }
            #expect(!reports.contains { [ProvisioningReport.Outcome.failed, .rolledBack].contains($0.outcome) }, "\(reports.map(\.outcome))")
            // Retries add no snapshots beyond what is kept.
            #expect(try await lxd.snapshots(container).count <= 2)
            print("LXD restart during delivery: converge interrupted, snapshot restored after LXD returned, delivered again: "
                  + "\(delivered.delivery ?? "")")
        }
    }
}
