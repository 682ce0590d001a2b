import Foundation
import Logging
import LXD
import Synchronization

/// Each vendor's container in a restricted LXD project of its own (`lxd.projects: true`), named like the
/// container (`iotgw-<vendor>`): defence in depth behind the gateway's own checks. LXD itself then refuses,
/// for anything in the project, privileged or nested containers, low-level config (`raw.*`, syscall
/// interception), disks not backed by a pool, proxies, block, GPU, PCI and hotplug devices, backups, a
/// second instance or any virtual machine, and caps the project's aggregate `limits.*` at the owner's
/// caps. Only the unix-char and usb devices the gateway passes in, pool disks and NICs on managed
/// networks are allowed. The project shares the default project's images and networks; the gateway
/// copies the profiles it uses into it.
public struct VendorProjects: Sendable {
    let lxd: LXDClient
    let config: GatewayConfig
    let logger: Logger

    public init(lxd: LXDClient, config: GatewayConfig, logger: Logger) {
        self.lxd = lxd.inProject(nil)
        self.config = config
        self.logger = logger
    }

    /// The routing `LXDClient.projectRouting` uses: a managed container's project is named like it.
    @Sendable public static func route(_ instance: String) -> String? { instance.hasPrefix("iotgw-") ? instance : nil }

    /// What the project of a vendor's container allows: exactly what the gateway itself would create.
    public static func projectConfig(caps: GatewayConfig.Caps) -> [String: String] {
        [
            "features.images": "false", "features.networks": "false", "features.profiles": "true", "features.storage.volumes": "true",
            "restricted": "true",
            "restricted.containers.privilege": "isolated", "restricted.containers.nesting": caps.allowNesting ? "allow" : "block",
            "restricted.containers.lowlevel": "block", "restricted.containers.interception": "block",
            "restricted.virtual-machines.lowlevel": "block",
            "restricted.devices.unix-char": "allow", "restricted.devices.usb": "allow",
            "restricted.devices.disk": "managed", "restricted.devices.nic": "managed",
            "restricted.devices.unix-block": "block", "restricted.devices.unix-hotplug": "block", "restricted.devices.gpu": "block",
            "restricted.devices.pci": "block", "restricted.devices.infiniband": "block", "restricted.devices.proxy": "block",
            "restricted.backups": "block", "restricted.snapshots": "allow",
            "limits.containers": "1", "limits.virtual-machines": "0",
            "limits.cpu": "\(caps.cpus)", "limits.memory": "\(caps.memoryMiB)MiB", "limits.processes": "\(caps.processes)",
            "limits.disk": "\(caps.diskMiB)MiB",
        ]
    }

    /// Creates the project of `container` or puts its restrictions back, and copies the gateway's profiles into it.
    public func ensure(container: String) async throws {
        let wanted = Self.projectConfig(caps: config.caps)
        do {
            let current = try await lxd.project(container)
            let drift = wanted.filter { current.config[$0.key] != $0.value }
            if !drift.isEmpty {
                logger.warning("project restrictions put back", metadata: ["lxd.project": "\(container)", "iotgw.keys": "\(drift.keys.sorted())"])
                try await lxd.patchProject(container, config: drift)
            }
        } catch let e as LXDError where e.code == .notFound {
            try await lxd.createProject(container, description: "iot-gateway: the restricted project of \(container)", config: wanted)
        }
        let inside = lxd.inProject(container)
        for name in config.lxd.profiles {
            let put = try await lxd.profile(name).profile.put
            if name == "default" {
                let (current, etag) = try await inside.profile(name)
                if current.put != put { try await inside.updateProfile(name, put, ifMatch: etag) }
            } else {
                try await inside.ensureProfile(name, put)
            }
        }
    }

    /// Lets the project of `container` make backups, which it otherwise refuses: for the owner's export of
    /// an orphan just before it is deleted with its project.
    public func allowBackups(container: String) async throws {
        do { try await lxd.patchProject(container, config: ["restricted.backups": "allow"]) } catch let e as LXDError where e.code == .notFound {}
    }

    /// Deletes the (empty) project of a deleted container with its profiles. A project still holding an
    /// instance is left to LXD's refusal.
    ///
    /// Only a project with profiles of its own (`features.profiles`, as ``ensure(container:)`` makes them)
    /// has its profiles deleted: in any other, LXD lists and deletes the default project's profiles under
    /// the project's name, the owner's `iotgw-vendor` among them (a leftover test project did exactly that
    /// to CI's LXD through `scripts/test`'s cleanup).
    public func remove(container: String) async throws {
        let inside = lxd.inProject(container)
        do {
            if try await lxd.project(container).config["features.profiles"] == "true" {
                for p in try await inside.listProfiles() where p.name != "default" { try await inside.deleteProfile(p.name) }
            }
            try await lxd.deleteProject(container)
        } catch let e as LXDError where e.code == .notFound {
            return
        }
    }
}

/// Puts each of this gateway's managed containers where `lxd.projects` says it lives, before anything else
/// touches them: switched on, a container made in the default project moves into its restricted project;
/// switched off, it moves back and its project goes. Without this, the gateway would look for the container
/// where the setting points, not find it, and make a second one beside the first, with the same devices.
///
/// A move needs the container stopped (LXD copies it, snapshots included, and deletes the original in one
/// operation, checking the target project's restrictions): a running one is stopped, moved and started
/// again, once. Run again after a crash, it finds what is left to move; a container found in both places
/// (LXD died between its copy and its delete) is left for the owner, with an error in the log.
public struct ProjectPlacement: Sendable {
    let lxd: LXDClient
    let config: GatewayConfig
    let gatewayID: String
    let logger: Logger

    public init(lxd: LXDClient, config: GatewayConfig, gatewayID: String, logger: Logger) {
        self.lxd = lxd.inProject(nil)
        self.config = config
        self.gatewayID = gatewayID
        self.logger = logger
    }

    /// The project a managed container belongs in.
    func project(of container: String) -> String {
        config.lxd.projects ? (VendorProjects.route(container) ?? "default") : "default"
    }

    /// Moves what is misplaced; returns the containers moved.
    @discardableResult
    public func run() async throws -> [String] {
        let managed = try await lxd.listInstances(userFilter: ["iotgw.managed": "true", "iotgw.gateway": gatewayID], allProjects: true)
        let byName = Dictionary(grouping: managed, by: \.name)
        var moved: [String] = []
        for (name, copies) in byName.sorted(by: { $0.key < $1.key }) {
            let want = project(of: name)
            guard !copies.contains(where: { ($0.project ?? "default") == want }) else {
                if copies.count > 1 {
                    logger.error("container in two projects: the one in its own project is used, the other is left for the owner", metadata: [
                        "lxd.instance": "\(name)", "lxd.projects": "\(copies.map { $0.project ?? "default" }.sorted())",
                    ])
                }
                continue
            }
            guard let found = copies.first else { continue }
            let from = found.project ?? "default"
            var logger = logger
            logger[metadataKey: "lxd.instance"] = "\(name)"
            logger[metadataKey: "lxd.project"] = "\(from) → \(want)"
            let projects = VendorProjects(lxd: lxd, config: config, logger: logger)
            if want != "default" { try await projects.ensure(container: name) }
            let source = lxd.inProject(from)
            if found.isRunning { try await source.stop(name, timeout: 30, force: true) }
            try await source.moveInstance(name, toProject: want)
            if found.isRunning { try await lxd.inProject(want).start(name) }
            if from == name { try await projects.remove(container: from) }
            logger.notice("container moved to the project lxd.projects asks for")
            moved.append(name)
        }
        return moved
    }
}

/// Whether ``ProjectPlacement`` has run (or there is none): until then the lanes that touch containers
/// (reconcile, delivery) and the orphan sweep skip their passes, and are woken when it is done. Talking to
/// vendors and the owner's approvals go on meanwhile (LXD may be away at boot for a long time).
public final class ContainersPlaced: Sendable {
    private let flag: Atomic<Bool>

    public init(_ placed: Bool) { flag = Atomic(placed) }

    public var isSet: Bool { flag.load(ordering: .acquiring) }
    public func set() { flag.store(true, ordering: .releasing) }
}
