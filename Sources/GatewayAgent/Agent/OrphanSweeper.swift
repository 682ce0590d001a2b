import Foundation
import GatewayProtocol
import Logging
import LXD

/// A managed container whose vendor is not in the owner's configuration any more, or withdrew (a signed
/// empty plan).
public struct Orphan: Sendable, Codable, Equatable {
    public var container: String
    /// The container's vendor label (nil when the label is missing).
    public var vendor: String?
    public var status: String
    /// When the gateway stopped it (its `user.iotgw.orphaned-at` label).
    public var orphanedAt: Date?
    /// When it will be deleted.
    public var deleteAfter: Date?
}

/// Finds and retires orphans: managed containers (`user.iotgw.managed=true` and `user.iotgw.gateway` =
/// this gateway's id, set only on containers this gateway created) whose vendor left the owner's
/// configuration. An orphan is stopped at once and
/// labelled with the time (`user.iotgw.orphaned-at`, so the grace period survives restarts and needs no
/// state of ours), then deleted with its snapshots once `graceSeconds` passed, or at once on
/// `iot-gateway remove VENDOR`. A container without the managed label is never touched, whatever its name.
public struct OrphanSweeper: Sendable {
    public static let orphanedAtKey = "user.iotgw.orphaned-at"

    let host: any ContainerHost
    let gatewayID: String
    let configured: Set<String>
    let graceSeconds: Double
    let logger: Logger
    let now: @Sendable () -> Date
    /// Configured vendors whose approved plan is a decommission (read at every pass).
    let withdrawn: @Sendable () async throws -> Set<String>
    /// The deleted container's project goes with it.
    let projects: VendorProjects?
    /// Exports a container before it is deleted, returning the file (`orphans.exportDirectory`; nil: no export).
    let exporter: (@Sendable (String) async throws -> String)?

    public init(host: any ContainerHost, gatewayID: String, config: GatewayConfig, logger: Logger, now: @escaping @Sendable () -> Date,
                projects: VendorProjects? = nil, exporter: (@Sendable (String) async throws -> String)? = nil,
                withdrawn: @escaping @Sendable () async throws -> Set<String> = { [] }) {
        self.projects = projects
        self.exporter = exporter
        self.withdrawn = withdrawn
        self.host = host
        self.gatewayID = gatewayID
        configured = Set(config.vendors.map(\.id))
        graceSeconds = config.orphans.graceSeconds
        self.logger = logger
        self.now = now
    }

    /// The orphans as they are now, touching nothing.
    public func orphans() async throws -> [Orphan] {
        let withdrawn = try await withdrawn()
        return try await host.listInstances(userFilter: ["iotgw.managed": "true", "iotgw.gateway": gatewayID]).compactMap { instance in
            let vendor = instance.config[ContainerPlanner.vendorKey]
            guard vendor.map({ !configured.contains($0) || withdrawn.contains($0) }) ?? true else { return nil }
            let at = instance.config[Self.orphanedAtKey].flatMap { try? Date.ISO8601FormatStyle().parse($0) }
            return Orphan(container: instance.name, vendor: vendor, status: instance.status, orphanedAt: at,
                          deleteAfter: at?.addingTimeInterval(graceSeconds))
        }.sorted { $0.container < $1.container }
    }

    /// One pass: stops and labels new orphans, deletes those past their grace period. A container that
    /// fails is logged and tried again at the next pass; the others go on.
    /// - Returns: the orphans left (stopped, waiting for their deletion).
    @discardableResult
    public func sweep() async throws -> [Orphan] {
        var left: [Orphan] = []
        for var orphan in try await orphans() {
            var logger = logger
            logger[metadataKey: "lxd.instance"] = "\(orphan.container)"
            logger[metadataKey: "iotgw.vendor"] = "\(orphan.vendor ?? "-")"
            do {
                if let deleteAfter = orphan.deleteAfter, now() >= deleteAfter {
                    try await delete(orphan.container)
                    logger.notice("orphaned container deleted after its grace period")
                    continue
                }
                if orphan.orphanedAt == nil, let v = orphan.vendor, configured.contains(v) {
                    // A withdrawn vendor's worker detaches its devices and retires the container itself.
                } else if orphan.orphanedAt == nil {
                    let at = try await retire(orphan.container)
                    orphan.orphanedAt = at
                    orphan.deleteAfter = at.addingTimeInterval(graceSeconds)
                    orphan.status = "Stopped"
                    logger.notice("container of a vendor no longer configured stopped", metadata: [
                        "iotgw.deleteAfter": "\(orphan.deleteAfter!.formatted(.iso8601))",
                    ])
                } else if orphan.status != "Stopped" {
                    // Started again by someone else: an orphan stays stopped.
                    try await stop(orphan.container)
                    orphan.status = "Stopped"
                }
            } catch {
                logger.warning("orphaned container not retired", metadata: ["iotgw.error": "\(error.safeDescription)"])
            }
            left.append(orphan)
        }
        return left
    }

    /// `iot-gateway remove VENDOR`: deletes the vendor's managed containers now. Refused (``GatewayError/Code/conflict``)
    /// while the vendor is in the configuration: its worker would only create the container again.
    /// - Returns: the containers deleted.
    public func remove(vendor: String) async throws -> [String] {
        let withdrawn = try await withdrawn()
        guard !configured.contains(vendor) || withdrawn.contains(vendor) else {
            throw GatewayError(.conflict, "vendor \(vendor) is still in the configuration: remove it there and restart first")
        }
        var deleted: [String] = []
        for orphan in try await orphans() where orphan.vendor == vendor {
            try await delete(orphan.container)
            logger.notice("orphaned container deleted by the owner", metadata: ["lxd.instance": "\(orphan.container)", "iotgw.vendor": "\(vendor)"])
            deleted.append(orphan.container)
        }
        return deleted
    }

    /// Stops a container and labels it with the time, which starts its grace period.
    /// - Returns: that time.
    @discardableResult
    public func retire(_ name: String) async throws -> Date {
        try await stop(name)
        let at = now()
        try await host.patchInstance(name, config: [Self.orphanedAtKey: at.formatted(.iso8601)], devices: [:], ifMatch: nil)
        return at
    }

    private func stop(_ name: String) async throws { try await host.stopGracefully(name) }

    /// The owner's export (`orphans.exportDirectory`): `<directory>/<container>-<unix time>.tar.gz`, LXD's backup
    /// tarball with the snapshots (`lxc import` brings it back); the directory is made 0700 (it holds vendors' data).
    public static func exporter(lxd: LXDClient, directory: String, projects: VendorProjects?) -> @Sendable (String) async throws -> String {
        { name in
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            // A vendor's restricted project refuses backups; it is deleted with the container right after.
            try await projects?.allowBackups(container: name)
            let file = "\(directory)/\(name)-\(Int(Date().timeIntervalSince1970)).tar.gz"
            try await lxd.exportInstance(name, to: file)
            return file
        }
    }

    private func delete(_ name: String) async throws {
        try await stop(name)
        if let exporter {
            // Nothing is deleted that the owner asked to keep a copy of: a failed export keeps the container.
            let file = try await exporter(name)
            logger.notice("orphaned container exported", metadata: ["lxd.instance": "\(name)", "iotgw.file": "\(file)"])
        }
        try await host.deleteInstance(name)
        try await projects?.remove(container: name)
    }
}
