import Crypto
import Foundation
import GatewayProtocol
import LXD

/// What LXD (and the gateway's device directory) show of a vendor's container right now.
public struct ContainerObservation: Sendable, Equatable {
    public var exists: Bool
    public var running: Bool
    /// `user.iotgw.vendor` on the instance (nil if absent: not ours).
    public var labelledVendor: String?
    public var config: [String: String]
    public var devices: [String: Device]
    /// The vendor's node files on disk: path → device number.
    public var nodes: [String: DeviceNumber]

    public static let absent = ContainerObservation(exists: false, running: false, labelledVendor: nil, config: [:], devices: [:], nodes: [:])

    public init(exists: Bool, running: Bool, labelledVendor: String?, config: [String: String], devices: [String: Device],
                nodes: [String: DeviceNumber] = [:]) {
        self.exists = exists
        self.running = running
        self.labelledVendor = labelledVendor
        self.config = config
        self.devices = devices
        self.nodes = nodes
    }

    public init(_ i: Instance, nodes: [String: DeviceNumber] = [:]) {
        self.init(exists: true, running: i.isRunning, labelledVendor: i.config[ContainerPlanner.vendorKey], config: i.config,
                  devices: i.devices, nodes: nodes)
    }
}

/// One thing to do to LXD or to the gateway's device nodes. Plain data: planned purely, executed and
/// journaled separately.
public enum ProvisionStep: Sendable, Equatable, CustomStringConvertible {
    case verifyImage(alias: String, fingerprint: String)
    /// Download the image from the vendor's image server unless LXD has it (see `ImageFetcher`).
    case fetchImage(ImageRef)
    /// Make the node for a plugged, granted device (before LXD is told about it).
    case ensureNode(ManagedNode)
    case create(InstancesPostSummary)
    case updateConfig([String: String])
    /// Put a base device (root disk, NIC) back as the gateway wants it.
    case setDevice(name: String, device: Device)
    case start
    case attach(name: String, device: Device)
    case detach(name: String)
    /// Remove a node no device of the plan needs any more.
    case removeNode(path: String)

    public var description: String {
        switch self {
        case .verifyImage(let a, let f): "verify-image \(a) \(f.prefix(12))"
        case .fetchImage(let r): "fetch-image \(r.fingerprint.prefix(12))"
        case .ensureNode(let n): "ensure-node \((n.path as NSString).lastPathComponent) \(n.number)"
        case .create(let s): "create \(s.post.name)"
        case .updateConfig(let c): "update-config \(c.keys.sorted().joined(separator: ","))"
        case .setDevice(let n, _): "set-device \(n)"
        case .start: "start"
        case .attach(let n, _): "attach \(n)"
        case .detach(let n): "detach \(n)"
        case .removeNode(let p): "remove-node \((p as NSString).lastPathComponent)"
        }
    }

    /// Whether the step changes what the vendor's container is or has (node upkeep alone is not news).
    var changesContainer: Bool {
        switch self {
        case .verifyImage, .fetchImage, .ensureNode, .removeNode: false
        default: true
        }
    }
}

/// `InstancesPost` made Equatable for planning tests.
public struct InstancesPostSummary: Sendable, Equatable {
    public var post: InstancesPost
    public static func == (a: Self, b: Self) -> Bool {
        a.post.name == b.post.name && a.post.config == b.post.config && a.post.devices == b.post.devices
            && a.post.profiles == b.post.profiles && a.post.source == b.post.source
    }
}

/// A physical device of the vendor that is plugged in now (one per serial and USB IDs), with the
/// nodes udev reported for it.
public struct PresentDevice: Sendable, Equatable {
    /// One udev device with a character node.
    public struct Node: Sendable, Equatable {
        public var syspath: String
        /// The kernel's node, e.g. `/dev/ttyUSB0` or `/dev/bus/usb/001/004`.
        public var devnode: String
        public var number: DeviceNumber

        public init(syspath: String, devnode: String, number: DeviceNumber) {
            self.syspath = syspath
            self.devnode = devnode
            self.number = number
        }
    }

    public var serial: String
    public var vendorID: String
    public var productID: String
    /// Its tty (what `unix-char` grants pass in).
    public var tty: Node?
    /// Its USB device node (what `usb` grants pass in).
    public var usb: Node?

    public init(serial: String, vendorID: String, productID: String, tty: Node? = nil, usb: Node? = nil) {
        self.serial = serial
        self.vendorID = vendorID
        self.productID = productID
        self.tty = tty
        self.usb = usb
    }
}

/// Pure: turns (approved plan, present devices, observed container) into steps.
public enum ContainerPlanner {
    public static let vendorKey = "user.iotgw.vendor"
    public static let managedKey = "user.iotgw.managed"
    /// The id of the gateway that manages the container: only that gateway ever retires it.
    public static let gatewayKey = "user.iotgw.gateway"
    public static let planVersionKey = "user.iotgw.plan-version"
    /// Prefix of the LXD device names this gateway manages inside a container.
    public static let devicePrefix = "iotgw-"
    /// On a container being built beside the vendor's own for a new image (see ``VendorWorker/rebuild``):
    /// the fingerprint it is built from. Removed when it becomes the vendor's container.
    public static let candidateKey = "user.iotgw.rebuild-candidate"
    /// LXD's record of the image an instance was created from.
    public static let baseImageKey = "volatile.base_image"

    /// The name of the container a rebuild builds beside `iotgw-<vendor>` (vendor ids are at most 31
    /// characters, so this stays a valid LXD name of at most 42).
    public static func candidateName(vendor: String) -> String { ProvisioningPlan.containerName(forVendor: vendor) + "-next" }
    /// The old container's name between the switch and its deletion.
    public static func previousName(vendor: String) -> String { ProvisioningPlan.containerName(forVendor: vendor) + "-prev" }

    /// Whether the vendor's existing container was made from another image than the plan's: LXD cannot
    /// change an instance's image, so it is rebuilt. An instance that does not say (no `volatile.base_image`)
    /// is left as it is rather than rebuilt on a guess.
    public static func needsRebuild(plan: ProvisioningPlan, observed: ContainerObservation) -> Bool {
        guard observed.exists, !plan.isDecommission, let base = observed.config[baseImageKey], !base.isEmpty else { return false }
        return base != plan.container.image.fingerprint
    }

    /// The image step (download or check) a container for `plan` needs first.
    static func imageStep(_ plan: ProvisioningPlan) -> ProvisionStep {
        let image = plan.container.image
        // An image the vendor serves is downloaded unless LXD has its fingerprint; one the owner keeps is checked by alias.
        return image.url == nil ? .verifyImage(alias: image.alias, fingerprint: image.fingerprint) : .fetchImage(image)
    }

    /// Made from the image by the fingerprint the vendor signed, not by alias: an alias moved after
    /// verify-image (or while its check was a cached one) cannot swap the image under the container.
    static func post(_ plan: ProvisioningPlan, name: String, config: GatewayConfig, extraConfig: [String: String] = [:],
                     devices: [String: Device]) -> InstancesPost {
        InstancesPost(name: name, source: .image(fingerprint: plan.container.image.fingerprint), profiles: config.lxd.profiles,
                      config: desiredConfig(plan, caps: config.caps).merging(extraConfig) { _, b in b },
                      devices: baseDevices(plan, lxd: config.lxd).merging(devices) { a, _ in a },
                      description: "iot-gateway container of vendor \(plan.vendor)")
    }

    /// Steps that build the rebuild candidate: the image first, then the container with the base devices
    /// only (the vendor's devices stay with the running old container until the switch: never two
    /// containers holding one device), started.
    public static func candidateSteps(plan: ProvisioningPlan, config: GatewayConfig) -> [ProvisionStep] {
        let post = post(plan, name: candidateName(vendor: plan.vendor), config: config,
                        extraConfig: [candidateKey: plan.container.image.fingerprint], devices: [:])
        return [imageStep(plan), .create(InstancesPostSummary(post: post)), .start]
    }

    /// `/dev/bus/usb/BBB/DDD` (three digits each), where libusb looks for a USB device.
    static func isUSBDeviceNode(_ path: String) -> Bool {
        let u = Array(path.utf8), prefix = Array("/dev/bus/usb/".utf8)
        guard u.count == prefix.count + 7, u.starts(with: prefix) else { return false }
        let rest = u[prefix.count...]
        return rest.enumerated().allSatisfy { i, b in i == 3 ? b == UInt8(ascii: "/") : (b >= 0x30 && b <= 0x39) }
    }

    /// The LXD device (and node file) name for a vendor device: the serial itself when it is plain
    /// (`[A-Za-z0-9_-]`, up to 48), else a digest of it, so that two serials never share a name.
    public static func deviceName(serial: String) -> String {
        let plain = serial.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")
        }
        if plain && (1...48).contains(serial.utf8.count) {
            return devicePrefix + serial
        }
        return devicePrefix + "x" + SHA256.hash(data: Data(serial.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// Config keys the gateway owns on a vendor container.
    public static func desiredConfig(_ plan: ProvisioningPlan, caps: GatewayConfig.Caps) -> [String: String] {
        let l = plan.container.limits
        return [
            "security.privileged": "false",
            "security.nesting": caps.allowNesting ? "true" : "false",
            "security.idmap.isolated": "true",
            // No /dev/lxd: a container could read its own config through it and send lifecycle events.
            "security.devlxd": "false",
            "limits.cpu": String(l.cpus),
            "limits.memory": "\(l.memoryMiB)MiB",
            "limits.processes": String(l.processes),
            "boot.autostart": "true",
            vendorKey: plan.vendor,
            managedKey: "true",
            gatewayKey: plan.gatewayID,
            planVersionKey: String(plan.version),
        ]
    }

    /// The NIC every vendor container with network gets: on the owner's NAT bridge, unable to use
    /// another MAC or IP than LXD gave it (IPv6 too, should the owner give the bridge IPv6), and isolated
    /// from every other vendor's port on the bridge.
    public static func nic(network: String) -> Device {
        Device(["type": "nic", "network": network, "name": "eth0", "security.mac_filtering": "true", "security.ipv4_filtering": "true",
                "security.ipv6_filtering": "true", "security.port_isolation": "true"])
    }

    /// Root disk and NIC, set on the instance itself (so a profile cannot weaken them). The root disk
    /// holds the vendor to the owner's disk rate, so that one vendor's I/O does not starve the others'.
    static func baseDevices(_ plan: ProvisioningPlan, lxd: GatewayConfig.LXDSettings) -> [String: Device] {
        var root = Device.disk(path: "/", pool: lxd.storagePool, size: "\(plan.container.limits.diskMiB)MiB")
        if lxd.vendorDiskMBps > 0 { root.config["limits.max"] = "\(lxd.vendorDiskMBps)MB" }
        var d: [String: Device] = ["root": root]
        switch plan.container.network {
        case .nat: d["eth0"] = nic(network: lxd.network)
        case .none: d["eth0"] = Device(["type": "none"])  // masks the profile's NIC
        }
        return d
    }

    /// What a granted, plugged device becomes: the LXD device and the node it is passed in from.
    static func mapping(_ grant: DeviceGrant, _ present: PresentDevice, nodePath: String) -> (device: Device, node: ManagedNode)? {
        guard grant.vendorID == present.vendorID, grant.productID == present.productID else { return nil }
        switch grant.kind {
        case .unixChar:
            guard let tty = present.tty, let path = grant.path else { return nil }
            return (.unixChar(source: nodePath, path: path, mode: "0660", required: false),
                    ManagedNode(path: nodePath, syspath: tty.syspath, number: tty.number))
        case .usb:
            // That one device, where libusb looks for it: /dev/bus/usb/BBB/DDD of the device itself.
            guard let usb = present.usb, isUSBDeviceNode(usb.devnode) else { return nil }
            return (.unixChar(source: nodePath, path: usb.devnode, mode: "0660", required: false),
                    ManagedNode(path: nodePath, syspath: usb.syspath, number: usb.number))
        }
    }

    /// The devices the plan grants that are plugged in now and can be passed in, by LXD device name.
    public static func wanted(plan: ProvisioningPlan, present: [PresentDevice],
                              nodePath: (String) -> String) -> [String: (serial: String, device: Device, node: ManagedNode)] {
        var out: [String: (serial: String, device: Device, node: ManagedNode)] = [:]
        let grants = Dictionary(plan.devices.map { ($0.serial, $0) }, uniquingKeysWith: { a, _ in a })
        for p in present {
            guard let g = grants[p.serial] else { continue }
            let name = deviceName(serial: p.serial)
            if let m = mapping(g, p, nodePath: nodePath(name)) { out[name] = (p.serial, m.device, m.node) }
        }
        return out
    }

    /// Serials of the present devices the plan grants and that can be passed into the container.
    public static func attachable(plan: ProvisioningPlan, present: [PresentDevice], nodePath: (String) -> String) -> [String] {
        wanted(plan: plan, present: present, nodePath: nodePath).values.map(\.serial).sorted()
    }

    /// - Parameter refresh: LXD restarted: every managed device it kept is removed and (if still
    ///   wanted) added again, so LXD copies each node afresh instead of trusting a copy it made before
    ///   it went down.
    public static func steps(plan: ProvisioningPlan, present: [PresentDevice], observed: ContainerObservation, config: GatewayConfig,
                             refresh: Bool = false, nodePath: (String) -> String) throws -> [ProvisionStep] {
        let name = plan.container.name
        if observed.exists && observed.labelledVendor != plan.vendor {
            throw GatewayError(.notManaged, "instance \(name) exists but is not managed for vendor \(plan.vendor); refusing to touch it")
        }
        let wanted = wanted(plan: plan, present: present, nodePath: nodePath)
        var steps: [ProvisionStep] = []
        // Nodes first: LXD is told about a device only once its node stands for the right device.
        for (_, w) in wanted.sorted(by: { $0.key < $1.key }) where observed.nodes[w.node.path] != w.node.number {
            steps.append(.ensureNode(w.node))
        }
        let wantedPaths = Set(wanted.values.map(\.node.path))
        let staleNodes = observed.nodes.keys.filter { !wantedPaths.contains($0) }.sorted()
        let desired = desiredConfig(plan, caps: config.caps)
        let base = baseDevices(plan, lxd: config.lxd)
        if !observed.exists {
            steps.append(imageStep(plan))
            // Devices go in with the create: one LXD operation, so no half-configured container exists.
            steps.append(.create(InstancesPostSummary(post: post(plan, name: name, config: config, devices: wanted.mapValues(\.device)))))
            steps.append(.start)
            steps += staleNodes.map { .removeNode(path: $0) }
            return steps
        }
        var changed = desired.filter { observed.config[$0.key] != $0.value }
        // A vendor that withdrew and then granted something again (approved by the owner): its container is no
        // longer an orphan, so the grace period's label goes ("" unsets a key in LXD's PATCH).
        if observed.config[OrphanSweeper.orphanedAtKey] != nil { changed[OrphanSweeper.orphanedAtKey] = "" }
        if !changed.isEmpty { steps.append(.updateConfig(changed)) }
        for (n, d) in base.sorted(by: { $0.key < $1.key }) where observed.devices[n] != d {
            steps.append(.setDevice(name: n, device: d))
        }
        if !observed.running { steps.append(.start) }
        let detached = observed.devices.keys.sorted().filter { $0.hasPrefix(devicePrefix) && (refresh || wanted[$0] == nil) }
        steps += detached.map { .detach(name: $0) }
        for (n, w) in wanted.sorted(by: { $0.key < $1.key }) where detached.contains(n) || observed.devices[n] != w.device {
            steps.append(.attach(name: n, device: w.device))
        }
        steps += staleNodes.map { .removeNode(path: $0) }
        return steps
    }
}
