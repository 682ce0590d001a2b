import Foundation

/// The vendor's desired state on one gateway: its one container, the devices passed into it and the
/// apps to install. Signed by the vendor; versioned per (gateway, vendor); expires.
public struct ProvisioningPlan: Sendable, Codable, Equatable {
    /// The only schema this code understands.
    public static let currentSchema = 1

    public var schema: Int
    public var vendor: String
    public var gatewayID: String
    /// Strictly increasing per (gateway, vendor); the gateway never goes back.
    public var version: Int
    public var issuedAt: Date
    public var expiresAt: Date
    public var container: ContainerSpec
    public var devices: [DeviceGrant]
    public var apps: [AppSpec]

    public init(schema: Int = ProvisioningPlan.currentSchema, vendor: String, gatewayID: String, version: Int, issuedAt: Date,
                expiresAt: Date, container: ContainerSpec, devices: [DeviceGrant], apps: [AppSpec]) {
        self.schema = schema
        self.vendor = vendor
        self.gatewayID = gatewayID
        self.version = version
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.container = container
        self.devices = devices
        self.apps = apps
    }
}

extension ProvisioningPlan {
    /// A signed plan granting nothing (no device, no app): the vendor withdraws from this gateway. The
    /// gateway detaches everything, stops the container and deletes it after the owner's grace period.
    public var isDecommission: Bool { devices.isEmpty && apps.isEmpty }
}

public struct ContainerSpec: Sendable, Codable, Equatable {
    public var name: String
    public var image: ImageRef
    public var limits: ResourceLimits
    /// `nat`: outbound access through the gateway's NAT bridge; `none`: no network device.
    public var network: NetworkAccess

    public init(name: String, image: ImageRef, limits: ResourceLimits, network: NetworkAccess) {
        self.name = name
        self.image = image
        self.limits = limits
        self.network = network
    }
}

public enum NetworkAccess: String, Sendable, Codable, Equatable { case nat, none }

public struct ImageRef: Sendable, Codable, Equatable {
    public var alias: String
    /// SHA-256 the gateway's local image must have.
    public var fingerprint: String
    /// Where the gateway may download the image when it does not have it: LXD's unified tarball on the
    /// vendor's image server. The gateway imports it only if its SHA-256 is `fingerprint`, and creates the
    /// container from that fingerprint (never from the alias). Nil: the image must already be on the gateway.
    public var url: String?

    public init(alias: String, fingerprint: String, url: String? = nil) {
        self.alias = alias
        self.fingerprint = fingerprint
        self.url = url
    }
}

/// Limits in LXD's own notation; validated by `PlanValidator`.
public struct ResourceLimits: Sendable, Codable, Equatable {
    /// Number of CPUs, e.g. 1.
    public var cpus: Int
    /// Memory in MiB.
    public var memoryMiB: Int
    /// Root disk in MiB.
    public var diskMiB: Int
    /// Maximum processes.
    public var processes: Int

    public init(cpus: Int, memoryMiB: Int, diskMiB: Int, processes: Int) {
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.diskMiB = diskMiB
        self.processes = processes
    }
}

/// One of the vendor's devices and where it appears inside the container.
public struct DeviceGrant: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case unixChar = "unix-char", usb }
    public var serial: String
    public var vendorID: String
    public var productID: String
    public var kind: Kind
    /// Path inside the container for `unix-char` (e.g. `/dev/ttyUSB0`); ignored for `usb`.
    public var path: String?

    public init(serial: String, vendorID: String, productID: String, kind: Kind, path: String?) {
        self.serial = serial
        self.vendorID = vendorID.lowercased()
        self.productID = productID.lowercased()
        self.kind = kind
        self.path = path
    }
}

/// An app the vendor installs: run-list entries for its provisioner and the InSpec profile proving it.
public struct AppSpec: Sendable, Codable, Equatable {
    public var name: String
    public var version: String
    public var runList: [String]
    public var inspecProfile: String?

    public init(name: String, version: String, runList: [String], inspecProfile: String? = nil) {
        self.name = name
        self.version = version
        self.runList = runList
        self.inspecProfile = inspecProfile
    }
}

extension ProvisioningPlan {
    /// The name of a vendor's container on every gateway: derived, never chosen freely, so a plan
    /// from one vendor cannot name another vendor's container.
    public static func containerName(forVendor vendor: String) -> String { "iotgw-\(vendor)" }

    /// Everything the vendor gets from this plan: what the owner approves. Two plans with equal grants
    /// give the vendor exactly the same thing (their versions and expiry may differ).
    public var grant: Grant {
        Grant(container: container, devices: devices.sorted { $0.serial < $1.serial },
              apps: apps.map { Grant.App(name: $0.name, version: $0.version, runList: $0.runList, inspecProfile: $0.inspecProfile) }
                  .sorted { $0.name < $1.name })
    }

    /// What an approval binds: the container spec (image, limits, network), every device with its
    /// serial, kind, USB IDs and container path, and every app with its version, run list and profile.
    public struct Grant: Sendable, Codable, Equatable {
        public struct App: Sendable, Codable, Equatable {
            public var name: String
            public var version: String
            public var runList: [String]
            public var inspecProfile: String?
        }
        public var container: ContainerSpec
        /// Sorted by serial.
        public var devices: [DeviceGrant]
        /// Sorted by name.
        public var apps: [App]

        /// How a newer grant relates to the approved one.
        public enum Change: Sendable, Equatable {
            /// Nothing the vendor gets changes.
            case identical
            /// Fewer devices, every remaining one exactly as approved, everything else the same.
            case subset
            /// Only app versions and run lists change (the same apps with the same profiles); the
            /// devices are the approved ones or a subset, the container is the same.
            case appUpdate
            /// Anything else: the owner must approve again.
            case widened
        }

        /// Classifies this grant against the one the owner approved.
        public func change(from approved: Grant) -> Change {
            guard container == approved.container else { return .widened }
            let approvedDevices = Dictionary(approved.devices.map { ($0.serial, $0) }, uniquingKeysWith: { a, _ in a })
            guard devices.allSatisfy({ approvedDevices[$0.serial] == $0 }) else { return .widened }
            let fewer = devices.count < approved.devices.count
            if apps == approved.apps { return fewer ? .subset : .identical }
            guard apps.map(\.name) == approved.apps.map(\.name),
                  apps.map(\.inspecProfile) == approved.apps.map(\.inspecProfile) else { return .widened }
            return .appUpdate
        }

        /// One line per difference from `approved`, for the owner's prompt.
        public func differences(from approved: Grant) -> [String] {
            var out: [String] = []
            let (c, a) = (container, approved.container)
            if c.name != a.name { out.append("container: \(a.name) -> \(c.name)") }
            if c.image != a.image {
                out.append("image: \(a.image.alias) sha256:\(a.image.fingerprint.prefix(12)) -> \(c.image.alias) sha256:\(c.image.fingerprint.prefix(12))"
                           + (c.image.url != a.image.url ? " from \(c.image.url.map(Fields.quote) ?? "the gateway's own images")" : ""))
            }
            let (l, m) = (c.limits, a.limits)
            if l.cpus != m.cpus { out.append("limits: cpus \(m.cpus) -> \(l.cpus)") }
            if l.memoryMiB != m.memoryMiB { out.append("limits: memory \(m.memoryMiB) -> \(l.memoryMiB) MiB") }
            if l.diskMiB != m.diskMiB { out.append("limits: disk \(m.diskMiB) -> \(l.diskMiB) MiB") }
            if l.processes != m.processes { out.append("limits: processes \(m.processes) -> \(l.processes)") }
            if c.network != a.network { out.append("network: \(a.network.rawValue) -> \(c.network.rawValue)") }
            let mine = Dictionary(devices.map { ($0.serial, $0) }, uniquingKeysWith: { a, _ in a })
            let theirs = Dictionary(approved.devices.map { ($0.serial, $0) }, uniquingKeysWith: { a, _ in a })
            for serial in Set(mine.keys).union(theirs.keys).sorted() {
                switch (theirs[serial], mine[serial]) {
                case (nil, let d?): out.append("device \(serial): new, \(d.summary)")
                case (_?, nil): out.append("device \(serial): removed")
                case (let old?, let new?) where old != new: out.append("device \(serial): \(old.summary) -> \(new.summary)")
                default: break
                }
            }
            let myApps = Dictionary(apps.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            let theirApps = Dictionary(approved.apps.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for name in Set(myApps.keys).union(theirApps.keys).sorted() {
                switch (theirApps[name], myApps[name]) {
                case (nil, let n?): out.append("app \(name): new, \(n.version) \(n.runList.joined(separator: ","))")
                case (_?, nil): out.append("app \(name): removed")
                case (let o?, let n?):
                    if o.version != n.version { out.append("app \(name): version \(o.version) -> \(n.version)") }
                    if o.runList != n.runList {
                        out.append("app \(name): run list \(o.runList.joined(separator: ",")) -> \(n.runList.joined(separator: ","))")
                    }
                    if o.inspecProfile != n.inspecProfile {
                        out.append("app \(name): InSpec profile \(o.inspecProfile ?? "none") -> \(n.inspecProfile ?? "none")")
                    }
                default: break
                }
            }
            return out
        }
    }
}

extension DeviceGrant {
    /// `USB 0403:6001 unix-char -> /dev/ttyUSB0`, for prompts and diffs.
    public var summary: String {
        "USB \(vendorID):\(productID) \(kind.rawValue)" + (kind == .unixChar ? " -> \(path ?? "?")" : "")
    }
}
