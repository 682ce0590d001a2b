import Foundation
import GatewayAgent
import GatewayProtocol

/// Plain-text tables for the owner. Every string shown passes through ``safe(_:max:)``: whatever the
/// daemon hands over (and much of it comes from vendors), nothing non-printable reaches the terminal.
enum Render {
    /// `value` with control characters, escape sequences and bidi overrides escaped, cut to `max`.
    static func safe(_ value: String, max: Int = 4096) -> String { Fields.escaped(value, max: max) }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows.map { $0.map { safe($0, max: 200) } }
        let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
        return all.map { row in row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces) }.joined(separator: "\n")
    }

    static func approvals(_ list: [ControlAPI.Approval]) -> String {
        table(["ID", "VENDOR", "PLAN", "CONTAINER", "DEVICES", "APPS", "STATUS"],
              list.map { ["\($0.id)", $0.vendor, "v\($0.planVersion)", $0.container, "\($0.devices.count)",
                          $0.apps.map(\.name).joined(separator: ","), $0.decision] })
    }

    static func vendors(_ list: [ControlAPI.Vendor]) -> String {
        table(["VENDOR", "POLICY", "PLAN", "CONTAINER", "STATE", "ADDRESS", "DEVICES", "FLEET", "APPS", "ERROR"],
              list.map { v in [v.id, v.policy, v.appliedPlanVersion.map { "v\($0)" } ?? (v.lastPlanVersion.map { "v\($0) (not applied)" } ?? "-"),
                               v.container ?? "-", v.containerStatus ?? "-", v.addresses.first ?? "-",
                               v.attachedDevices.joined(separator: ","),
                               (v.fleet ?? "-") + (v.logRelay == true ? " (logs)" : ""),
                               v.delivery.map { d in "v\(v.deliveredPlanVersion ?? 0) " + String(d.prefix(50))
                                   + (v.failingControls.isEmpty ? "" : " [\(v.failingControls.joined(separator: ","))]") } ?? "-",
                               note(v)] })
    }

    /// A vendor's problems, each cut on its own so that neither hides the other: a refused plan or
    /// answer first (what the vendor tried), then the current error (what is stuck).
    static func note(_ v: ControlAPI.Vendor) -> String {
        [v.rejection.map { "refused: " + String($0.prefix(90)) }, v.error.map { String($0.prefix(70)) }].compactMap { $0 }
            .joined(separator: "; ")
    }

    static func devices(_ list: [ControlAPI.Device]) -> String {
        table(["NODE", "USB ID", "SERIAL", "VENDOR", "STATE", "PRESENT", "NOTE"],
              list.map { d in [d.devnode ?? d.syspath, d.usbID ?? "-", d.serial ?? "-", d.vendor ?? "(unknown)", d.state,
                               d.present ? "yes" : "no", d.error.map { String($0.prefix(60)) } ?? ""] })
    }

    /// Everything the vendor will get, for the approval prompt.
    static func detail(_ a: ControlAPI.Approval) -> String { safeLines(rawDetail(a)) }

    /// Escapes each line on its own (the line breaks are ours, everything inside them is data).
    static func safeLines(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { safe(String($0)) }.joined(separator: "\n")
    }

    static func rawDetail(_ a: ControlAPI.Approval) -> String {
        var s = """
        Approval \(a.id): vendor \(a.vendor)\(a.vendorName.map { " (\($0))" } ?? ""), plan v\(a.planVersion)
          signature     \(a.signatureVerified ? "verified with the vendor key in your configuration" : "NOT VERIFIED")
          expires       \(ISO8601DateFormatter().string(from: a.expiresAt))
          container     \(a.container) (unprivileged, isolated id map, nesting \(a.nesting ? "on" : "off"))
          image         \(a.image) sha256:\(a.imageFingerprint.prefix(16))…
          limits        \(a.cpus) CPU, \(a.memoryMiB) MiB memory, \(a.diskMiB) MiB disk, \(a.processes) processes
          network       \(a.network == "nat" ? "outbound through the gateway's NAT bridge" : "none")
          devices
        """
        for d in a.devices {
            s += "\n    \(d.serial) (USB \(d.usbID), \(d.kind)): \(d.hostNode ?? "not plugged") -> \(d.containerPath ?? "-")"
        }
        s += "\n  apps"
        for app in a.apps {
            s += "\n    \(app.name) \(app.version): \(app.runList.joined(separator: ", "))"
                + (app.inspecProfile.map { " (validated by InSpec profile \($0))" } ?? "")
        }
        if a.apps.isEmpty { s += "\n    (none)" }
        if let changes = a.changes, let from = a.approvedPlanVersion {
            s += "\n  changes from the approved plan v\(from)"
            for c in changes { s += "\n    \(c)" }
            if changes.isEmpty { s += "\n    (none)" }
        }
        s += "\n  digest        sha256:\(a.digest)"
        return s
    }
}
