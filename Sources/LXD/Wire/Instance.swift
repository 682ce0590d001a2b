/// An LXD device: a flat string map on the wire (`"type": "usb"`, `"vendorid": "0403"`, ...).
/// Constructors below cover the device types the gateway uses; any other map works too.
public struct Device: Sendable, Hashable, Codable {
    public var config: [String: String]

    public init(_ config: [String: String]) { self.config = config }

    public init(from decoder: any Decoder) throws {
        config = try decoder.singleValueContainer().decode([String: String].self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(config)
    }

    public var type: String? { config["type"] }
    public subscript(key: String) -> String? { config[key] }

    /// A raw USB device matched by vendor and product ID (4 hex digits each); hot-pluggable.
    public static func usb(vendorID: String, productID: String, mode: String = "0660", required: Bool = false) -> Device {
        Device(["type": "usb", "vendorid": vendorID, "productid": productID, "mode": mode, "required": String(required)])
    }

    /// A character device node. Hotplug needs `source` and `required=false` (LXD 5.0 devices_unix_char).
    public static func unixChar(source: String, path: String? = nil, mode: String = "0660", uid: Int? = nil, gid: Int? = nil, required: Bool = false) -> Device {
        var c = ["type": "unix-char", "source": source, "mode": mode, "required": String(required)]
        if let path { c["path"] = path }
        if let uid { c["uid"] = String(uid) }
        if let gid { c["gid"] = String(gid) }
        return Device(c)
    }

    /// A NIC on a managed network.
    public static func nic(network: String, name: String = "eth0") -> Device {
        Device(["type": "nic", "network": network, "name": name])
    }

    /// A disk: a host path mounted at `path`, or the root disk when `path == "/"` and `source == nil`.
    public static func disk(path: String, source: String? = nil, pool: String? = nil, size: String? = nil, readonly: Bool = false) -> Device {
        var c = ["type": "disk", "path": path]
        if let source { c["source"] = source }
        if let pool { c["pool"] = pool }
        if let size { c["size"] = size }
        if readonly { c["readonly"] = "true" }
        return Device(c)
    }
}

/// `GET /1.0/instances/<name>` (`definitions.Instance`).
public struct Instance: Sendable, Decodable {
    public var name: String
    public var type: String
    public var status: String
    public var statusCode: Int
    public var architecture: String
    public var config: [String: String]
    public var devices: [String: Device]
    /// Config with profiles applied.
    public var expandedConfig: [String: String]
    public var expandedDevices: [String: Device]
    public var profiles: [String]
    public var ephemeral: Bool
    public var stateful: Bool
    public var description: String
    public var createdAt: String
    public var location: String?
    /// The instance's project (LXD sets it in listings).
    public var project: String?
    /// Present with `recursion=2` listings.
    public var state: InstanceState?

    enum CodingKeys: String, CodingKey {
        case name, type, status, architecture, config, devices, profiles, ephemeral, stateful, description, location, state, project
        case statusCode = "status_code"
        case expandedConfig = "expanded_config"
        case expandedDevices = "expanded_devices"
        case createdAt = "created_at"
    }

    /// Whether the instance is running (status code 103).
    public var isRunning: Bool { statusCode == 103 }

    /// The writable part of this instance, for a read-modify-write `PUT`.
    public var put: InstancePut {
        InstancePut(architecture: architecture, config: config, devices: devices, ephemeral: ephemeral,
                    profiles: profiles, description: description)
    }
}

/// `PUT /1.0/instances/<name>` (`definitions.InstancePut`): replaces the whole writable object.
public struct InstancePut: Sendable, Codable {
    public var architecture: String?
    public var config: [String: String]
    public var devices: [String: Device]
    public var ephemeral: Bool
    public var profiles: [String]
    public var description: String
    /// Snapshot name to restore; when set, the rest is ignored by LXD.
    public var restore: String?

    public init(architecture: String? = nil, config: [String: String] = [:], devices: [String: Device] = [:],
                ephemeral: Bool = false, profiles: [String] = ["default"], description: String = "", restore: String? = nil) {
        self.architecture = architecture
        self.config = config
        self.devices = devices
        self.ephemeral = ephemeral
        self.profiles = profiles
        self.description = description
        self.restore = restore
    }
}

/// Where a new instance comes from (`definitions.InstanceSource`); only local images here.
public struct InstanceSource: Sendable, Codable, Hashable {
    public var type: String
    public var alias: String?
    public var fingerprint: String?

    /// A local image by alias.
    public static func image(alias: String) -> InstanceSource { .init(type: "image", alias: alias) }
    /// A local image by fingerprint (or a unique prefix of it).
    public static func image(fingerprint: String) -> InstanceSource { .init(type: "image", fingerprint: fingerprint) }
    /// No rootfs (used only in tests of failure paths).
    public static let none = InstanceSource(type: "none")
}

/// `POST /1.0/instances` (`definitions.InstancesPost`).
public struct InstancesPost: Sendable, Codable {
    public var name: String
    public var type: String
    public var source: InstanceSource
    public var profiles: [String]
    public var config: [String: String]
    public var devices: [String: Device]
    public var ephemeral: Bool
    public var description: String

    public init(name: String, source: InstanceSource, profiles: [String] = ["default"], config: [String: String] = [:],
                devices: [String: Device] = [:], ephemeral: Bool = false, description: String = "") {
        self.name = name
        self.type = "container"
        self.source = source
        self.profiles = profiles
        self.config = config
        self.devices = devices
        self.ephemeral = ephemeral
        self.description = description
    }
}

/// `GET /1.0/instances/<name>/state` (`definitions.InstanceState`).
public struct InstanceState: Sendable, Decodable {
    public struct Address: Sendable, Decodable, Hashable {
        public var family: String
        public var address: String
        public var netmask: String
        public var scope: String
    }
    public struct Network: Sendable, Decodable {
        public var addresses: [Address]
        public var hwaddr: String
        public var hostName: String
        public var state: String
        public var type: String
        enum CodingKeys: String, CodingKey {
            case addresses, hwaddr, state, type
            case hostName = "host_name"
        }
    }
    public struct Memory: Sendable, Decodable {
        public var usage: Int64
        public var usagePeak: Int64
        enum CodingKeys: String, CodingKey {
            case usage
            case usagePeak = "usage_peak"
        }
    }
    public struct CPU: Sendable, Decodable {
        /// CPU time used, in nanoseconds.
        public var usage: Int64
    }
    public struct Disk: Sendable, Decodable {
        /// Bytes used (reported by pools that can tell, e.g. btrfs with quotas, zfs, lvm).
        public var usage: Int64
    }

    public var status: String
    public var statusCode: Int
    public var pid: Int64
    public var processes: Int64
    public var cpu: CPU?
    public var memory: Memory?
    /// Per disk device (`root`...); absent where the pool cannot tell.
    public var disk: [String: Disk]?
    /// `nil` while stopped.
    public var network: [String: Network]?

    enum CodingKeys: String, CodingKey {
        case status, pid, processes, cpu, memory, disk, network
        case statusCode = "status_code"
    }

    /// Global IPv4 addresses, across interfaces except `lo` (appear only after DHCP).
    public var ipv4Addresses: [String] {
        (network ?? [:]).filter { $0.key != "lo" }.sorted { $0.key < $1.key }
            .flatMap { $0.value.addresses }
            .filter { $0.family == "inet" && $0.scope == "global" }
            .map(\.address)
    }
}

/// `PUT /1.0/instances/<name>/state` (`definitions.InstanceStatePut`).
public struct InstanceStatePut: Sendable, Encodable {
    public enum Action: String, Sendable, Encodable { case start, stop, restart, freeze, unfreeze }
    public var action: Action
    /// Seconds; LXD treats an omitted timeout as -1 (forever), so it is always sent.
    public var timeout: Int
    public var force: Bool
    public var stateful: Bool = false
}

/// `GET /1.0/instances/<name>/snapshots/<snap>` (`definitions.InstanceSnapshot`).
public struct InstanceSnapshot: Sendable, Decodable {
    public var name: String
    public var createdAt: String
    public var stateful: Bool
    public var config: [String: String]

    enum CodingKeys: String, CodingKey {
        case name, stateful, config
        case createdAt = "created_at"
    }
}
