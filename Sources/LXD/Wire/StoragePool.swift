/// `GET /1.0/storage-pools/<name>` (`definitions.StoragePool`).
public struct StoragePool: Sendable, Decodable, Equatable {
    public var name: String
    /// `btrfs`, `dir`, `lvm`, `zfs`, `ceph`, ...
    public var driver: String
    public var status: String?
    public var config: [String: String]

    public init(name: String, driver: String, status: String?, config: [String: String]) {
        self.name = name
        self.driver = driver
        self.status = status
        self.config = config
    }

    /// Whether the driver enforces a root disk `size` on containers. `dir` does not (without
    /// project quotas, which LXD does not set up by itself); the block and copy-on-write drivers do.
    public var enforcesDiskLimits: Bool { driver != "dir" }
}

/// `GET /1.0/storage-pools/<name>/resources` (`definitions.ResourcesStoragePool`): bytes used and total.
public struct StoragePoolResources: Sendable, Decodable, Equatable {
    public struct Space: Sendable, Decodable, Equatable {
        public var used: Int64
        public var total: Int64
        public init(used: Int64, total: Int64) {
            self.used = used
            self.total = total
        }
    }
    public var space: Space

    public init(space: Space) { self.space = space }

    public var free: Int64 { max(0, space.total - space.used) }
}
