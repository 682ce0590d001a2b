import GatewayProtocol
import LXD

/// What LXD shows of a vendor's container right now.
public struct ContainerObservation: Sendable, Equatable {
    public var exists: Bool
    public var running: Bool
    /// `user.iotgw.vendor` on the instance (nil if absent: not ours).
    public var labelledVendor: String?
    public var config: [String: String]
    public var devices: [String: Device]

    public static let absent = ContainerObservation(exists: false, running: false, labelledVendor: nil, config: [:], devices: [:])

    public init(exists: Bool, running: Bool, labelledVendor: String?, config: [String: String], devices: [String: Device]) {
        self.exists = exists
        self.running = running
        self.labelledVendor = labelledVendor
        self.config = config
        self.devices = devices
    }

    public init(_ i: Instance) {
        self.init(exists: true, running: i.isRunning, labelledVendor: i.config[ContainerPlanner.vendorKey], config: i.config,
                  devices: i.devices)
    }
}

/// One thing to do to LXD. Plain data: planned purely, executed and journaled separately.
public enum ProvisionStep: Sendable, Equatable, CustomStringConvertible {
    case verifyImage(alias: String, fingerprint: String)
    case create(InstancesPostSummary)
    case updateConfig([String: String])
    case start
    case attach(name: String, device: Device)
    case detach(name: String)

    public var description: String {
        switch self {
        case .verifyImage(let a, let f): "verify-image \(a) \(f.prefix(12))"
        case .create(let s): "create \(s.post.name)"
        case .updateConfig(let c): "update-config \(c.keys.sorted().joined(separator: ","))"
        case .start: "start"
        case .attach(let n, _): "attach \(n)"
        case .detach(let n): "detach \(n)"
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

/// A device of the vendor that is plugged in now (one per serial, whatever udev nodes it has).
public struct PresentDevice: Sendable, Equatable {
    public var serial: String
    /// Its tty node on the host, e.g. `/dev/ttyUSB0`, when it has one (needed by `unix-char` grants).
    public var ttyNode: String?

    public init(serial: String, ttyNode: String?) {
        self.serial = serial
        self.ttyNode = ttyNode
    }
}

/// Why a plan cannot be applied on this gateway (checked before the owner is even asked).
public struct PolicyViolation: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Pure: turns (approved plan, present devices, observed container) into steps.
public enum ContainerPlanner {
    public static let vendorKey = "user.iotgw.vendor"
    public static let managedKey = "user.iotgw.managed"
    public static let planVersionKey = "user.iotgw.plan-version"
    /// Prefix of the LXD device names this gateway manages inside a container.
    public static let devicePrefix = "iotgw-"

    /// Rejects a plan asking for more than the owner's caps allow.
    public static func checkCaps(_ plan: ProvisioningPlan, caps: GatewayConfig.Caps) throws {
        let l = plan.container.limits
        var over: [String] = []
        if l.cpus > caps.cpus { over.append("cpus \(l.cpus) > \(caps.cpus)") }
        if l.memoryMiB > caps.memoryMiB { over.append("memory \(l.memoryMiB)MiB > \(caps.memoryMiB)MiB") }
        if l.diskMiB > caps.diskMiB { over.append("disk \(l.diskMiB)MiB > \(caps.diskMiB)MiB") }
        if l.processes > caps.processes { over.append("processes \(l.processes) > \(caps.processes)") }
        guard over.isEmpty else {
            throw PolicyViolation(message: "plan v\(plan.version) from \(plan.vendor) exceeds this gateway's caps: \(over.joined(separator: ", "))")
        }
    }

    /// The LXD device name for a vendor device (serials may hold characters LXD names should not).
    public static func deviceName(serial: String) -> String {
        devicePrefix + String(serial.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : "_" }.prefix(48))
    }

    /// Config keys the gateway owns on a vendor container.
    public static func desiredConfig(_ plan: ProvisioningPlan, caps: GatewayConfig.Caps) -> [String: String] {
        let l = plan.container.limits
        return [
            "security.privileged": "false",
            "security.nesting": caps.allowNesting ? "true" : "false",
            "security.idmap.isolated": "true",
            "limits.cpu": String(l.cpus),
            "limits.memory": "\(l.memoryMiB)MiB",
            "limits.processes": String(l.processes),
            "boot.autostart": "true",
            vendorKey: plan.vendor,
            managedKey: "true",
            planVersionKey: String(plan.version),
        ]
    }

    static func baseDevices(_ plan: ProvisioningPlan, lxd: GatewayConfig.LXDSettings) -> [String: Device] {
        var d: [String: Device] = ["root": .disk(path: "/", pool: lxd.storagePool, size: "\(plan.container.limits.diskMiB)MiB")]
        switch plan.container.network {
        case .nat: d["eth0"] = .nic(network: lxd.network)
        case .none: d["eth0"] = Device(["type": "none"])  // masks the profile's NIC
        }
        return d
    }

    /// The LXD device for a granted device that is plugged in, or nil if it cannot be mapped.
    static func lxdDevice(_ grant: DeviceGrant, _ present: PresentDevice) -> Device? {
        switch grant.kind {
        case .unixChar:
            guard let node = present.ttyNode, let path = grant.path else { return nil }
            return .unixChar(source: node, path: path, mode: "0660", required: false)
        case .usb:
            return .usb(vendorID: grant.vendorID, productID: grant.productID)
        }
    }

    /// Serials of the present devices the plan grants and that can be mapped into the container.
    public static func attachable(plan: ProvisioningPlan, present: [PresentDevice]) -> [String] {
        let bySerial = Dictionary(plan.devices.map { ($0.serial, $0) }, uniquingKeysWith: { a, _ in a })
        return present.filter { p in bySerial[p.serial].flatMap { lxdDevice($0, p) } != nil }.map(\.serial).sorted()
    }

    public static func steps(plan: ProvisioningPlan, present: [PresentDevice], observed: ContainerObservation,
                             config: GatewayConfig) throws -> [ProvisionStep] {
        let name = plan.container.name
        if observed.exists && observed.labelledVendor != plan.vendor {
            throw PolicyViolation(message: "instance \(name) exists but is not managed for vendor \(plan.vendor); refusing to touch it")
        }
        let bySerial = Dictionary(plan.devices.map { ($0.serial, $0) }, uniquingKeysWith: { a, _ in a })
        var wanted: [String: Device] = [:]
        for p in present {
            if let g = bySerial[p.serial], let dev = lxdDevice(g, p) { wanted[deviceName(serial: p.serial)] = dev }
        }
        var steps: [ProvisionStep] = []
        let desired = desiredConfig(plan, caps: config.caps)
        if !observed.exists {
            steps.append(.verifyImage(alias: plan.container.image.alias, fingerprint: plan.container.image.fingerprint))
            // Devices go in with the create: one LXD operation, so no half-configured container exists.
            let post = InstancesPost(name: name, source: .image(alias: plan.container.image.alias), profiles: config.lxd.profiles,
                                     config: desired, devices: baseDevices(plan, lxd: config.lxd).merging(wanted) { a, _ in a },
                                     description: "iot-gateway container of vendor \(plan.vendor)")
            steps.append(.create(InstancesPostSummary(post: post)))
            steps.append(.start)
            return steps
        }
        let changed = desired.filter { observed.config[$0.key] != $0.value }
        if !changed.isEmpty { steps.append(.updateConfig(changed)) }
        if !observed.running { steps.append(.start) }
        for (n, d) in wanted.sorted(by: { $0.key < $1.key }) where observed.devices[n] != d {
            steps.append(.attach(name: n, device: d))
        }
        for n in observed.devices.keys.sorted() where n.hasPrefix(devicePrefix) && wanted[n] == nil {
            steps.append(.detach(name: n))
        }
        return steps
    }
}
