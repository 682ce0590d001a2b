import Foundation
import GatewayProtocol

/// Checks a plan's device grants against this gateway's own facts before anything is shown to the
/// owner or done: a vendor may only be granted devices this gateway has seen, with the USB IDs udev
/// reported, that the owner's match rules give to that vendor.
public enum GrantCheck {
    /// - Parameters:
    ///   - seen: every device record (plugged now or before).
    /// - Throws: ``GatewayError/Code/unknownDevice`` or ``GatewayError/Code/foreignDevice``.
    public static func check(_ plan: ProvisioningPlan, vendor: String, config: GatewayConfig, seen: [DeviceRecord]) throws {
        for g in plan.devices {
            let sameSerial = seen.filter { $0.serial == g.serial }
            guard !sameSerial.isEmpty else {
                throw GatewayError(.unknownDevice, "plan v\(plan.version) grants device \(g.serial), which this gateway has never seen")
            }
            guard sameSerial.contains(where: { $0.vendorID == g.vendorID && $0.productID == g.productID }) else {
                let ids = Set(sameSerial.map { "\($0.vendorID ?? "?"):\($0.productID ?? "?")" }).sorted().joined(separator: ", ")
                throw GatewayError(.unknownDevice,
                                   "plan v\(plan.version) grants device \(g.serial) as USB \(g.vendorID):\(g.productID), udev reports \(ids)")
            }
            let owner = config.vendor(forUSB: g.vendorID, productID: g.productID)?.id
            guard owner == vendor else {
                throw GatewayError(.foreignDevice, "plan v\(plan.version) grants device \(g.serial) (USB \(g.vendorID):\(g.productID)), "
                                   + "which the owner's configuration gives to \(owner.map { "vendor \($0)" } ?? "no vendor")")
            }
        }
    }

    /// Rejects an image URL (`container.image.url`) on a host the owner did not give the vendor (its
    /// `imageHosts`, by default the host of its `daemonURL`), or over plain `http` unless the owner allowed
    /// it for that vendor: the gateway, as root, fetches from nowhere else (not the owner's LAN, say).
    /// - Throws: ``GatewayError/Code/imageSource``.
    public static func checkImage(_ plan: ProvisioningPlan, vendor: GatewayConfig.VendorEntry) throws {
        guard let text = plan.container.image.url else { return }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased() else {
            throw GatewayError(.imageSource, "plan v\(plan.version): image URL \(Fields.quote(text)) is not a URL")
        }
        guard scheme == "https" || (scheme == "http" && vendor.allowInsecureHTTP) else {
            throw GatewayError(.imageSource, "plan v\(plan.version): image URL must be https (the owner did not allow plain http for \(vendor.id))")
        }
        guard vendor.allowedImageHosts.contains(host) else {
            throw GatewayError(.imageSource, "plan v\(plan.version): image host \(Fields.quote(host)) is not one the owner allows for \(vendor.id) "
                               + "(\(vendor.allowedImageHosts.joined(separator: ", ")))")
        }
    }

    /// Rejects a plan asking for more than the owner's caps allow.
    public static func checkCaps(_ plan: ProvisioningPlan, caps: GatewayConfig.Caps) throws {
        let l = plan.container.limits
        var over: [String] = []
        if l.cpus > caps.cpus { over.append("cpus \(l.cpus) > \(caps.cpus)") }
        if l.memoryMiB > caps.memoryMiB { over.append("memory \(l.memoryMiB)MiB > \(caps.memoryMiB)MiB") }
        if l.diskMiB > caps.diskMiB { over.append("disk \(l.diskMiB)MiB > \(caps.diskMiB)MiB") }
        if l.processes > caps.processes { over.append("processes \(l.processes) > \(caps.processes)") }
        guard over.isEmpty else {
            throw GatewayError(.overCaps, "plan v\(plan.version) from \(plan.vendor) exceeds this gateway's caps: \(over.joined(separator: ", "))")
        }
    }
}

/// What happens to a newly recorded plan, by the owner's policy for the vendor.
public enum ApprovalPolicy {
    public enum Outcome: Sendable, Equatable {
        /// Approved without asking; `by` is recorded as the decider.
        case approve(by: String)
        /// The owner is asked; `changes` lists the differences from the approved plan (nil: none approved yet).
        case ask(changes: [String]?)
        case deny(by: String)
    }

    /// Under `ask`, only a plan that gives the vendor nothing new goes through unasked: the same grant,
    /// fewer devices, or (if the owner lets app updates through) new app versions or run lists for the
    /// approved apps with their approved profiles.
    public static func decide(_ plan: ProvisioningPlan.Grant, approved: ProvisioningPlan.Grant?,
                              vendor: GatewayConfig.VendorEntry) -> Outcome {
        switch vendor.policy {
        case .deny: return .deny(by: "policy:deny")
        case .auto: return .approve(by: "policy:auto")
        case .ask: break
        }
        guard let approved else { return .ask(changes: nil) }
        switch plan.change(from: approved) {
        case .identical: return .approve(by: "covered")
        case .subset: return .approve(by: "covered:subset")
        case .appUpdate where vendor.appUpdates == .auto: return .approve(by: "covered:app-update")
        case .appUpdate, .widened: return .ask(changes: plan.differences(from: approved))
        }
    }
}
