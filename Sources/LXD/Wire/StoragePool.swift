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
