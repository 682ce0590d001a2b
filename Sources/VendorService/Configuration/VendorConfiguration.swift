import Foundation
import GatewayProtocol

/// The IoT daemon's configuration file (`vendor.yaml`): who the vendor is, where the daemon keeps its
/// state, and the app catalog that decides what a gateway is asked to provision.
///
/// ```yaml
/// vendor: acme
/// listen: {host: 127.0.0.1, port: 8470}
/// database: /var/lib/iot-daemon/acme.sqlite
/// signingKey: /etc/iot-daemon/acme.key
/// planTTLSeconds: 86400
/// image: {alias: iotgw-debian12, fingerprint: <64 hex>}
/// container: {cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300, network: nat}
/// models:
///   - {name: thermo-v1, vendorID: "0403", productID: "6001", devicePath: /dev/ttyUSB0, kind: unix-char, apps: [thermo-agent]}
/// apps:
///   - {name: thermo-agent, version: 1.0.0, runList: ["recipe[thermo_agent]"], inspecProfile: thermo-agent}
/// ```
///
/// Load it with ``load(from:)``, which also validates it; a value built in code is checked with ``validate()``.
public struct VendorConfiguration: Sendable, Codable, Equatable {
    /// The vendor id: `[a-z][a-z0-9-]{0,30}`. Names the container (`iotgw-<vendor>`) on every gateway.
    public var vendor: String
    public var listen: Listen
    /// SQLite database file. A relative path is resolved against the configuration file's folder.
    public var database: String
    /// File holding the vendor's Ed25519 private key (base64 of the raw 32 bytes), created by `iot-daemon init`.
    /// A relative path is resolved against the configuration file's folder.
    public var signingKey: String
    /// How long an issued plan stays valid. Default 86400 (one day).
    public var planTTLSeconds: Int
    public var image: ImageRef
    public var container: ContainerSettings
    /// Device models this vendor makes, and which apps each one gets.
    public var models: [DeviceModel]
    /// The app catalog.
    public var apps: [AppSpec]

    public struct Listen: Sendable, Codable, Equatable {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// The limits and network of the vendor's container, in plan notation.
    public struct ContainerSettings: Sendable, Codable, Equatable {
        public var cpus: Int
        public var memoryMiB: Int
        public var diskMiB: Int
        public var processes: Int
        public var network: NetworkAccess

        public init(cpus: Int, memoryMiB: Int, diskMiB: Int, processes: Int, network: NetworkAccess) {
            self.cpus = cpus
            self.memoryMiB = memoryMiB
            self.diskMiB = diskMiB
            self.processes = processes
            self.network = network
        }

        public var limits: ResourceLimits { ResourceLimits(cpus: cpus, memoryMiB: memoryMiB, diskMiB: diskMiB, processes: processes) }
    }

    /// A device model: how it looks on USB, how it is passed into the container, which apps it needs.
    public struct DeviceModel: Sendable, Codable, Equatable {
        public var name: String
        /// USB vendor ID, 4 hex digits (stored lowercase).
        public var vendorID: String
        /// USB product ID, 4 hex digits (stored lowercase).
        public var productID: String
        /// Path inside the container; required for `unix-char`, ignored for `usb`.
        public var devicePath: String?
        public var kind: DeviceGrant.Kind
        /// Names of apps from the catalog.
        public var apps: [String]

        public init(name: String, vendorID: String, productID: String, devicePath: String?, kind: DeviceGrant.Kind, apps: [String]) {
            self.name = name
            self.vendorID = vendorID.lowercased()
            self.productID = productID.lowercased()
            self.devicePath = devicePath
            self.kind = kind
            self.apps = apps
        }

        enum CodingKeys: String, CodingKey { case name, vendorID, productID, devicePath, kind, apps }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                name: try c.decode(String.self, forKey: .name),
                vendorID: try c.decode(String.self, forKey: .vendorID),
                productID: try c.decode(String.self, forKey: .productID),
                devicePath: try c.decodeIfPresent(String.self, forKey: .devicePath),
                kind: try c.decode(DeviceGrant.Kind.self, forKey: .kind),
                apps: try c.decodeIfPresent([String].self, forKey: .apps) ?? []
            )
        }
    }

    public static let defaultPlanTTLSeconds = 86_400

    public init(vendor: String, listen: Listen, database: String, signingKey: String, planTTLSeconds: Int = defaultPlanTTLSeconds,
                image: ImageRef, container: ContainerSettings, models: [DeviceModel], apps: [AppSpec]) {
        self.vendor = vendor
        self.listen = listen
        self.database = database
        self.signingKey = signingKey
        self.planTTLSeconds = planTTLSeconds
        self.image = ImageRef(alias: image.alias, fingerprint: image.fingerprint.lowercased())
        self.container = container
        self.models = models
        self.apps = apps
    }

    enum CodingKeys: String, CodingKey {
        case vendor, listen, database, signingKey, planTTLSeconds, image, container, models, apps
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            vendor: try c.decode(String.self, forKey: .vendor),
            listen: try c.decode(Listen.self, forKey: .listen),
            database: try c.decode(String.self, forKey: .database),
            signingKey: try c.decode(String.self, forKey: .signingKey),
            planTTLSeconds: try c.decodeIfPresent(Int.self, forKey: .planTTLSeconds) ?? Self.defaultPlanTTLSeconds,
            image: try c.decode(ImageRef.self, forKey: .image),
            container: try c.decode(ContainerSettings.self, forKey: .container),
            models: try c.decodeIfPresent([DeviceModel].self, forKey: .models) ?? [],
            apps: try c.decodeIfPresent([AppSpec].self, forKey: .apps) ?? []
        )
    }

    /// The model with this name, if the catalog has it.
    public func model(named name: String) -> DeviceModel? { models.first { $0.name == name } }

    /// The app with this name, if the catalog has it.
    public func app(named name: String) -> AppSpec? { apps.first { $0.name == name } }
}
