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

    public init(alias: String, fingerprint: String) {
        self.alias = alias
        self.fingerprint = fingerprint
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

    /// What the owner is asked to approve; two plans with the same grant need no second approval.
    public var grant: Grant {
        // App names, not versions: the owner approves which apps run; their updates then flow
        // (each one is validated and rolled back if it fails).
        Grant(container: container, devices: devices.map(\.serial).sorted(), apps: apps.map(\.name).sorted())
    }

    public struct Grant: Sendable, Codable, Equatable {
        public var container: ContainerSpec
        public var devices: [String]
        public var apps: [String]

        /// Whether this grant asks for nothing beyond `other` (same container and apps, devices a subset).
        public func isCovered(by other: Grant) -> Bool {
            container == other.container && apps == other.apps && Set(devices).isSubset(of: Set(other.devices))
        }
    }
}
