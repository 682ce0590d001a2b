import Foundation
import GatewayProtocol
import Logging
import ServiceLifecycle
import Testing
@testable import GatewayAgent

/// The gateway's metrics as the owner gets them: over the control socket, after real work of the workers.
@Suite struct GatewayMetricsTests {
    /// `name{k="v",...} value` lines of a Prometheus text exposition, keyed by name and sorted labels.
    static func series(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let head = line[..<space]
            guard let open = head.firstIndex(of: "{") else {
                out[String(head)] = value
                continue
            }
            let labels = head[head.index(after: open)..<head.index(before: head.endIndex)].split(separator: ",").sorted()
            out["\(head[..<open]){\(labels.joined(separator: ","))}"] = value
        }
        return out
    }

    /// A series key as ``series(_:)`` makes it.
    static func key(_ name: String, _ labels: [String: String]) -> String {
        labels.isEmpty ? name : "\(name){\(labels.map { "\($0.key)=\"\($0.value)\"" }.sorted().joined(separator: ","))}"
    }

    /// Serves the rig's control API on its socket while `body` runs, as `iot-gateway-client run` does.
    static func servingControl<T>(_ rig: Rig, _ body: (ControlClient) async throws -> T) async throws -> T {
        var logger = Logger(label: "control-test")
        logger.logLevel = .warning
        let app = try ControlServer.build(agent: rig.agent, logger: logger)
        let services = ServiceGroup(services: [app], logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            let client = ControlClient(socketPath: rig.config.controlSocket)
            do {
                try await until("the control socket answers") { (try? await client.vendors()) != nil }
                let result = try await body(client)
                await services.triggerGracefulShutdown()
                try await group.waitForAll()
                return result
            } catch {
                await services.triggerGracefulShutdown()
                throw error
            }
        }
    }

    @Test func theOwnerScrapesWhatTheWorkersDidOverTheControlSocket() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gwm-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let rig = try Rig(policy: .ask, apps: true, controlSocket: folder.appendingPathComponent("control.sock").path)
        // globex's plan grants acme's device too: refused as foreignDevice.
        rig.vendors.update("globex") { v in
            v.plan = { a in
                var p = Rig.plan(vendor: "globex", serials: [a?.device.serial ?? "GLX-1"])
                p.devices.append(DeviceGrant(serial: "ACME-1", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB9"))
                return p
            }
        }
        try await rig.running {
            let acme = try await rig.plug("acme", serial: "ACME-1", tty: "ttyUSB0", minor: 0)
            try await rig.approvePending()
            try await rig.provisioned("acme", "ACME-1")
            try await until("acme's apps delivered") { rig.delivery.phases.withLock { $0.contains("acme delivered v1") } }
            try await rig.plug("globex", serial: "GLX-1", tty: "ttyUSB1", minor: 1)
            try await until("globex's plan refused") {
                try await rig.store.devices().first { $0.serial == "GLX-1" && $0.subsystem == "tty" }?.state == .rejected
            }
            try await rig.unplug(acme)
            try await until("acme's device detached") { rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] == nil }

            try await Self.servingControl(rig) { client in
                var s: [String: Double] = [:]
                // The delivery is counted once its report is queued, just after the fake converge ends.
                try await until("the delivery counted") {
                    s = Self.series(try await client.metrics())
                    return s[Self.key("iotgw_deliveries_total", ["vendor": "acme", "result": "delivered"])] == 1
                }
                #expect(s[Self.key("iotgw_udev_events_total", ["kind": "added"])] == 4)
                #expect(s[Self.key("iotgw_udev_events_total", ["kind": "removed"])] == 2)
                #expect(s[Self.key("iotgw_approvals_total", ["vendor": "acme", "decision": "approved", "by": "owner"])] == 1)
                #expect(s[Self.key("iotgw_approvals_pending", [:])] == 0)
                #expect(s[Self.key("iotgw_containers_created_total", ["vendor": "acme"])] == 1)
                #expect(s[Self.key("iotgw_device_attaches_total", ["vendor": "acme"])] == 1)
                #expect(s[Self.key("iotgw_device_detaches_total", ["vendor": "acme"])] == 1)
                #expect(s[Self.key("iotgw_plans_accepted_total", ["vendor": "acme"])] == 1)
                // globex's lane may ask again (a later udev event, a poll) before the scrape: at least once, never accepted.
                #expect((s[Self.key("iotgw_plans_refused_total", ["vendor": "globex", "reason": "foreignDevice"])] ?? 0) >= 1)
                #expect(s[Self.key("iotgw_plans_accepted_total", ["vendor": "globex"])] == nil)
                // Never a device serial, a USB id or a path as a label.
                let text = try await client.metrics()
                #expect(!text.contains("ACME-1") && !text.contains("GLX-1") && !text.contains("/dev/"))
            }
        }
    }

    @Test func labelsStayWithinTheOwnersVendorsAndTheGatewaysOwnCodes() {
        let metrics = GatewayMetrics(vendors: ["acme"])
        #expect(metrics.label("acme") == "acme")
        #expect(metrics.label("evil\"},x{") == "other")
        #expect(GatewayMetrics.reason(GatewayError(.overCaps, "too big")) == "overCaps")
        #expect(GatewayMetrics.reason(ProtocolError(.badSignature, "no")) == "badSignature")
        // What the vendor's daemon answers is its text: never a label.
        #expect(GatewayMetrics.reason(VendorError(kind: .refused(code: "x-\(UUID())"), message: "no")) == "vendorRefused")
        #expect(GatewayMetrics.reason(VendorError(kind: .unreachable, message: "down")) == "vendorUnreachable")
        #expect(GatewayMetrics.reason(GatewayError(.init("not one of ours: \(UUID())"), "odd")) == "other")
        #expect(GatewayMetrics.reason(CancellationError()) == "other")
    }
}
