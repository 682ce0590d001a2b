import ArgumentParser
import Foundation
import GatewayProtocol
import VendorService

/// Lists the registry of genuine devices.
struct DevicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "devices", abstract: "List registered devices.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let configuration = try options.load()
        let devices = try await options.withStore(configuration) { try await $0.devices() }
        if output.json { return try printJSON(devices) }
        printTable(["SERIAL", "MODEL", "USB ID", "REGISTERED"],
                   devices.map { [$0.serial, $0.model, "\($0.vendorID):\($0.productID)", $0.registeredAt.iso8601] })
    }
}

/// Lists enrolled gateways with their devices and plan version.
struct GatewaysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateways", abstract: "List enrolled gateways.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let configuration = try options.load()
        let gateways = try await options.withStore(configuration) { try await $0.gateways() }
        if output.json { return try printJSON(gateways) }
        printTable(["GATEWAY", "ENROLLED", "PLAN", "DEVICES", "FLEET", "LAST SEEN", "STATUS"], gateways.map { g in
            let fleet = g.revokedAt != nil ? "revoked" : g.online.map { $0 ? "online" : "offline" } ?? "-"
            return [g.id, g.enrolledAt.iso8601, g.planVersion.map { "v\($0)" } ?? "-", g.devices.isEmpty ? "-" : g.devices.joined(separator: ","),
                    fleet, g.lastSeenAt?.iso8601 ?? "-", g.status.map(Self.describe) ?? "-"]
        })
    }
}

extension GatewaysCommand {
    /// One line of a verified status: container, devices attached, plan versions, last delivery.
    static func describe(_ s: GatewayStatus) -> String {
        var parts: [String] = []
        if let c = s.container {
            var text = "\(c.name) \(c.state)"
            if let m = c.memoryBytes { text += " mem \(m / 1_048_576)MiB" }
            if let d = c.diskBytes { text += " disk \(d / 1_048_576)MiB" }
            parts.append(text)
        }
        parts.append("devices " + (s.devices.isEmpty ? "-" : s.devices.joined(separator: ",")))
        let v = { (n: Int?) in n.map { "v\($0)" } ?? "-" }
        parts.append("plan received \(v(s.plan.received)) approved \(v(s.plan.approved)) applied \(v(s.plan.applied)) delivered \(v(s.plan.delivered))")
        if let d = s.lastDelivery {
            parts.append("last delivery v\(d.planVersion) \(d.result)" + (d.failingControls.isEmpty ? "" : " failing " + d.failingControls.joined(separator: ",")))
        }
        parts.append("agent \(s.agentVersion) up \(s.uptimeSeconds)s")
        return parts.joined(separator: "; ")
    }
}

/// Lists what gateways reported.
struct ReportsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reports", abstract: "List provisioning reports, oldest first.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    /// A report as listed: the stored row with the gateway's report decoded.
    struct Entry: Encodable {
        var id: Int64?
        var gatewayID: String
        var planVersion: Int
        var outcome: String
        var receivedAt: Date
        var report: ProvisioningReport?
    }

    func run() async throws {
        let configuration = try options.load()
        let reports = try await options.withStore(configuration) { try await $0.reports() }
        let entries = reports.map {
            Entry(id: $0.id, gatewayID: $0.gatewayID, planVersion: $0.planVersion, outcome: $0.outcome, receivedAt: $0.receivedAt,
                  report: try? WireJSON.decoder().decode(ProvisioningReport.self, from: Data($0.json.utf8)))
        }
        if output.json { return try printJSON(entries) }
        printTable(["ID", "RECEIVED", "GATEWAY", "PLAN", "OUTCOME", "DETAIL"], entries.map { e in
            [e.id.map(String.init) ?? "-", e.receivedAt.iso8601, e.gatewayID, "v\(e.planVersion)", e.outcome, e.report.map(Self.detail) ?? ""]
        })
    }

    /// The error, the delivery (result, failing controls, restored snapshot) and the attached devices,
    /// escaped: reports come from gateways (and rows stored before reports were validated may hold
    /// anything), so nothing in them reaches the terminal raw.
    static func detail(_ report: ProvisioningReport) -> String {
        var parts: [String] = []
        if let error = report.error { parts.append(error) }
        if let d = report.delivery {
            var delivery = "delivery \(d.result) (\(d.provisioner))"
            if !d.failingControls.isEmpty { delivery += ", failing: " + d.failingControls.joined(separator: ",") }
            if let snapshot = d.restoredSnapshot { delivery += ", restored \(snapshot)" }
            if report.error == nil, d.result != "applied", !d.message.isEmpty { delivery += ": \(d.message)" }
            parts.append(delivery)
        }
        if !report.attachedDevices.isEmpty { parts.append("devices: " + report.attachedDevices.joined(separator: ",")) }
        return Fields.escaped(parts.joined(separator: "; "))
    }
}
