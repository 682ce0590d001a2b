import AsyncHTTPClient
import Foundation
import GatewayProtocol
import Logging
import LXD

/// The gateway's key pair, kept 0600 in the state directory. Created only when the file does not
/// exist: any other failure to read it stops the daemon, because a new identity would silently
/// break every vendor enrollment.
public enum IdentityStore {
    public static func path(stateDirectory: String) -> String { (stateDirectory as NSString).appendingPathComponent("gateway.key") }

    public static func loadOrCreate(stateDirectory: String) throws -> GatewayIdentity {
        do {
            try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw GatewayError(.identity, "cannot create state directory \(stateDirectory): \(error.localizedDescription)")
        }
        let path = path(stateDirectory: stateDirectory)
        var st = stat()
        if lstat(path, &st) == 0 {
            return try load(path)
        }
        guard errno == ENOENT else {
            throw GatewayError(.identity, "cannot examine \(path) (errno \(errno)); not creating a new identity over it")
        }
        return try create(path)
    }

    static func load(_ path: String) throws -> GatewayIdentity {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw GatewayError(.identity, "cannot read the gateway key \(path): \(error.localizedDescription). Restore it from a backup; "
                               + "deleting it makes a new gateway identity that every vendor must enroll again")
        }
        do { return GatewayIdentity(key: try Keys.decodePrivate(text)) } catch {
            throw GatewayError(.identity, "the gateway key \(path) is not a base64 Ed25519 key. Restore it from a backup; "
                               + "deleting it makes a new gateway identity that every vendor must enroll again")
        }
    }

    static func create(_ path: String) throws -> GatewayIdentity {
        let identity = GatewayIdentity(key: .init())
        // Written to a temp file and linked into place without replacing anything: a crash never leaves
        // half a key, and a key that appeared meanwhile is never overwritten.
        let tmp = path + ".tmp.\(getpid())"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw GatewayError(.identity, "cannot create \(tmp) (errno \(errno))") }
        let bytes = Array((identity.privateKeyBase64 + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        defer { unlink(tmp) }
        guard written == bytes.count, synced else { throw GatewayError(.identity, "cannot write \(tmp) (errno \(errno))") }
        guard link(tmp, path) == 0 else {
            if errno == EEXIST { return try load(path) }
            throw GatewayError(.identity, "cannot create \(path) (errno \(errno))")
        }
        return identity
    }
}

extension GatewayAgent {
    /// Wires an agent from a configuration: state directory, database, identity, device registry,
    /// LXD, the vendors' own HTTP client and the delivery driver.
    /// - Parameters:
    ///   - lxdHTTP: the client for LXD's unix socket.
    ///   - vendorHTTP: a client made with `VendorClient.httpConfiguration` (no redirects).
    public static func make(config: GatewayConfig, lxdHTTP: HTTPClient, vendorHTTP: HTTPClient, logger: Logger) throws -> GatewayAgent {
        let identity = try IdentityStore.loadOrCreate(stateDirectory: config.stateDirectory)
        let store = try GatewayStore(path: (config.stateDirectory as NSString).appendingPathComponent("gateway.sqlite"))
        // LXD may not be running yet: the path is fixed now and calls fail (and are retried) until it is.
        let socket = config.lxd.socket ?? (try? LXDSocket.discover(environment: ProcessInfo.processInfo.environment))
            ?? "/var/lib/lxd/unix.socket"
        var lxd = try LXDClient(socketPath: socket, httpClient: lxdHTTP, logger: logger)
        if config.lxd.projects { lxd.projectRouting = VendorProjects.route }
        let pruner = Pruner(inventory: lxd, store: store, graceSeconds: config.images.graceSeconds, logger: logger, now: { Date() })
        let disk = DiskGuard(space: lxd, pool: config.lxd.storagePool, reserveBytes: Int64(config.disk.reserveMiB) << 20) {
            do { try await pruner.prune() } catch { logger.warning("nothing pruned", metadata: ["iotgw.error": "\(error.safeDescription)"]) }
        }
        let projects = config.lxd.projects ? VendorProjects(lxd: lxd, config: config, logger: logger) : nil
        // Reconcile reads containers from a copy that LXD's events keep true (see InstanceCache).
        let instances = InstanceCache(host: lxd, events: lxd, logger: logger)
        let env = AgentEnvironment(config: config, store: store, identity: identity, host: instances,
                                   vendors: VendorClient(http: vendorHTTP, identity: identity, logger: logger),
                                   registry: DeviceRegistry(directory: config.deviceDirectory),
                                   delivery: LXDDeliveryDriver(lxd: lxd, delivery: config.delivery, logger: logger),
                                   network: config.lxd.hostFirewall
                                       ? HostFirewall(bridge: config.lxd.network, bandwidthMbit: config.lxd.vendorBandwidthMbit,
                                                  connections: config.lxd.vendorConnections) : NoNetworkGuard(),
                                   logger: logger,
                                   fleetLinks: try fleetLinks(config: config, identity: identity, logger: logger),
                                   journal: LXDContainerJournal(lxd: lxd),
                                   images: ImageFetcher(http: vendorHTTP, store: lxd,
                                                        directory: (config.stateDirectory as NSString).appendingPathComponent("images"),
                                                        maxBytes: Int64(config.images.maxMiB) << 20, logger: logger,
                                                        records: store, disk: disk),
                                   disk: disk, pruner: pruner,
                                   projects: projects,
                                   instances: instances,
                                   placement: ProjectPlacement(lxd: lxd, config: config, gatewayID: identity.id, logger: logger),
                                   exporter: config.orphans.exportDirectory.map { OrphanSweeper.exporter(lxd: lxd, directory: $0, projects: projects) })
        return GatewayAgent(environment: env)
    }

    /// Links to vendors' brokers over libmosquitto, authenticated with the gateway's own key (nil when no
    /// vendor has a broker configured).
    static func fleetLinks(config: GatewayConfig, identity: GatewayIdentity, logger: Logger) throws -> FleetLinkFactory? {
        guard config.vendors.contains(where: { $0.fleet != nil }) else { return nil }
        let keyFile = try MQTTFleetLink.writeKeyFile(identity: identity, stateDirectory: config.stateDirectory)
        return { vendor, will in
            guard let fleet = vendor.fleet else { throw GatewayError(.fleet, "vendor \(vendor.id) has no broker configured") }
            return try MQTTFleetLink(vendor: vendor, fleet: fleet, identity: identity, keyFile: keyFile, will: will, logger: logger)
        }
    }
}
