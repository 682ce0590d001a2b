import Foundation
import GatewayProtocol

/// The IoT daemon's configuration file (`vendor.yaml`): who the vendor is, where the daemon keeps its
/// state, and the app catalog that decides what a gateway is asked to provision.
///
/// ```yaml
/// vendor: acme
/// listen: {host: 127.0.0.1, port: 8470}
/// metrics: {host: 127.0.0.1, port: 9470}   # optional: GET /metrics (Prometheus) on its own listener
/// publicHosts: [iot.acme.example]           # optional: the host names gateways sign their requests for
/// database: /var/lib/iot-daemon/acme.sqlite
/// signingKey: /etc/iot-daemon/acme.key
/// planTTLSeconds: 86400
/// image: {alias: iotgw-debian12, fingerprint: <64 hex>, url: https://images.example/x.tar.gz}   # url: optional, gateways download it
/// container: {cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300, network: nat}
/// models:
///   - {name: thermo-v1, vendorID: "0403", productID: "6001", devicePath: /dev/ttyUSB0, kind: unix-char, apps: [thermo-agent]}
/// apps:
///   - {name: thermo-agent, version: 1.0.0, runList: ["recipe[thermo_agent]"], inspecProfile: thermo-agent}
/// chef:                                   # optional: deliver apps through a Chef server
///   serverURL: http://127.0.0.1:4545
///   containerServerURL: http://chef.acme.example:4545   # optional
///   organization: null                    # Chef Infra Server organization; absent for goiardi
///   adminName: admin
///   adminKey: /var/lib/iotgw-goiardi/admin.pem
///   environment: null
/// ```
///
/// The `apps` here are the baseline catalog; `iot-daemon publish-app` records releases that override an
/// app's version and run list (see ``AppCatalog``).
///
/// Load it with ``load(from:)``, which also validates it; a value built in code is checked with ``validate()``.
public struct VendorConfiguration: Sendable, Codable, Equatable {
    /// The vendor id: `[a-z][a-z0-9-]{0,30}`. Names the container (`iotgw-<vendor>`) on every gateway.
    public var vendor: String
    public var listen: Listen
    /// Where `GET /metrics` (Prometheus text format) is served; `nil` (the default): nowhere. Always a
    /// listener of its own, never the public `listen` one: metrics reveal fleet size and traffic, and the
    /// public listener faces gateways on the internet. Keep it on loopback (`127.0.0.1`) or a private
    /// address only the vendor's Prometheus reaches; it has no authentication.
    public var metrics: Listen?
    /// The host names gateways use to reach this daemon (lowercase, no port, each valid as `Fields.host`), e.g.
    /// `iot.acme.example` for a gateway whose `daemonURL` is `https://iot.acme.example`. A gateway signs the
    /// host it connects to; a request signed for any other host is refused, so a request captured on its way
    /// to another server (another daemon of this vendor, a staging host) cannot be replayed here.
    ///
    /// `nil`: the host of the request's own `Host` header is the only one accepted. That is weaker: whoever
    /// relays a request chooses its `Host` header, so a request signed for another host of this vendor passes.
    /// The vendor-id audience (a request signed for another vendor is refused) and the nonce (a request is
    /// accepted once) still stop cross-vendor and repeated replays.
    public var publicHosts: [String]?
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
    /// The Chef server apps are delivered through; `nil`: the daemon delivers no apps itself
    /// (`POST /v1/bootstrap` answers `kind: none`).
    public var chef: ChefSettings?
    /// Deliver apps as an Ansible playbook instead (exclusive with `chef`).
    public var ansible: AnsibleSettings?
    /// The vendor's MQTT broker (fleet channel): plans are pushed, statuses and command results come back.
    public var fleet: FleetSettings?
    /// Keep the daemon's state in PostgreSQL instead of the SQLite file `database` (see ``PostgresSettings``).
    public var postgres: PostgresSettings?

    /// The fleet channel's broker and the vendor's certificate authority for gateways (README "Fleet channel").
    public struct FleetSettings: Sendable, Codable, Equatable {
        public var host: String
        public var port: Int
        /// The broker's CA (PEM): the broker must present a certificate it signed.
        public var caCertificate: String
        /// The control plane's own client certificate and key (its CN has the ACL's vendor rights).
        public var certificate: String
        public var key: String
        /// Issues a gateway's client certificate at enrollment: argv with `{gateway}` (the id), `{publicKey}`
        /// (base64 Ed25519) and `{out}` (where the PEM must be written) replaced. The CN must be the gateway id.
        public var issueCommand: [String]?
        /// Makes the broker refuse a gateway from now on (CRL and reload): argv with `{gateway}` replaced.
        public var revokeCommand: [String]?
        /// Where issued gateway certificates are kept (`<id>.crt`).
        public var certificateDirectory: String?
    }

    public struct AnsibleSettings: Sendable, Codable, Equatable {
        /// Directory with `site.yml` at its top; shipped to gateways in the bootstrap bundle.
        public var playbookDirectory: String
    }

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

    /// Where and as whom the daemon registers gateways' containers as Chef nodes.
    ///
    /// Each gateway's container becomes the node (and client) `<gatewayID>-<vendor>`, e.g.
    /// `gw-0123456789abcdef-acme`: unique per gateway and vendor, and valid as a Chef name.
    public struct ChefSettings: Sendable, Codable, Equatable {
        /// The Chef server as the daemon reaches it: `http(s)://host[:port]`, no organization path.
        public var serverURL: String
        /// The Chef server as containers reach it (written into their `client.rb`); default `serverURL`.
        public var containerServerURL: String?
        /// Chef Infra Server organization name; requests go to `/organizations/NAME`. `nil` for goiardi.
        /// Written either as `NAME` or as `/organizations/NAME`; kept as `NAME`.
        public var organization: String?
        /// The Chef user (or admin client) that creates clients; knife's validatorless flow.
        public var adminName: String
        /// PEM file of `adminName`'s private key. A relative path is resolved against the configuration file's folder.
        public var adminKey: String
        /// Chef environment of the nodes; `nil`: `_default`.
        public var environment: String?

        public init(serverURL: String, containerServerURL: String? = nil, organization: String? = nil, adminName: String,
                    adminKey: String, environment: String? = nil) {
            self.serverURL = serverURL
            self.containerServerURL = containerServerURL
            self.organization = organization.map(Self.organizationName)
            self.adminName = adminName
            self.adminKey = adminKey
            self.environment = environment
        }

        enum CodingKeys: String, CodingKey { case serverURL, containerServerURL, organization, adminName, adminKey, environment }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                serverURL: try c.decode(String.self, forKey: .serverURL),
                containerServerURL: try c.decodeIfPresent(String.self, forKey: .containerServerURL),
                organization: try c.decodeIfPresent(String.self, forKey: .organization),
                adminName: try c.decode(String.self, forKey: .adminName),
                adminKey: try c.decode(String.self, forKey: .adminKey),
                environment: try c.decodeIfPresent(String.self, forKey: .environment)
            )
        }

        /// `/organizations/NAME` → `NAME`; anything else as written.
        static func organizationName(_ value: String) -> String {
            let prefix = "/organizations/"
            guard value.hasPrefix(prefix) else { return value }
            var name = value.dropFirst(prefix.count)
            while name.hasSuffix("/") { name = name.dropLast() }
            return String(name)
        }

        /// The `chef_server_url` containers use: `containerServerURL ?? serverURL`, plus the organization path.
        public var containerChefServerURL: String {
            var url = containerServerURL ?? serverURL
            while url.hasSuffix("/") { url.removeLast() }
            return url + (organization.map { "/organizations/\($0)" } ?? "")
        }
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

    public init(vendor: String, listen: Listen, publicHosts: [String]? = nil, database: String, signingKey: String,
                planTTLSeconds: Int = defaultPlanTTLSeconds, image: ImageRef, container: ContainerSettings, models: [DeviceModel],
                apps: [AppSpec], chef: ChefSettings? = nil) {
        self.vendor = vendor
        self.listen = listen
        self.publicHosts = publicHosts
        self.database = database
        self.signingKey = signingKey
        self.planTTLSeconds = planTTLSeconds
        self.image = ImageRef(alias: image.alias, fingerprint: image.fingerprint.lowercased(), url: image.url)
        self.container = container
        self.models = models
        self.apps = apps
        self.chef = chef
    }

    enum CodingKeys: String, CodingKey {
        case vendor, listen, metrics, publicHosts, database, signingKey, planTTLSeconds, image, container, models, apps, chef, ansible, fleet, postgres
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            vendor: try c.decode(String.self, forKey: .vendor),
            listen: try c.decode(Listen.self, forKey: .listen),
            publicHosts: try c.decodeIfPresent([String].self, forKey: .publicHosts),
            database: try c.decode(String.self, forKey: .database),
            signingKey: try c.decode(String.self, forKey: .signingKey),
            planTTLSeconds: try c.decodeIfPresent(Int.self, forKey: .planTTLSeconds) ?? Self.defaultPlanTTLSeconds,
            image: try c.decode(ImageRef.self, forKey: .image),
            container: try c.decode(ContainerSettings.self, forKey: .container),
            models: try c.decodeIfPresent([DeviceModel].self, forKey: .models) ?? [],
            apps: try c.decodeIfPresent([AppSpec].self, forKey: .apps) ?? [],
            chef: try c.decodeIfPresent(ChefSettings.self, forKey: .chef)
        )
        metrics = try c.decodeIfPresent(Listen.self, forKey: .metrics)
        ansible = try c.decodeIfPresent(AnsibleSettings.self, forKey: .ansible)
        fleet = try c.decodeIfPresent(FleetSettings.self, forKey: .fleet)
        postgres = try c.decodeIfPresent(PostgresSettings.self, forKey: .postgres)
    }

    /// The model with this name, if the catalog has it.
    public func model(named name: String) -> DeviceModel? { models.first { $0.name == name } }

    /// The app with this name, if the catalog has it.
    public func app(named name: String) -> AppSpec? { apps.first { $0.name == name } }
}
