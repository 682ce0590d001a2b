import Foundation
import GatewayProtocol
import Yams

/// The gateway owner's configuration file (YAML). See README "Gateway configuration".
public struct GatewayConfig: Sendable, Codable, Equatable {
    /// Where the database and the gateway's key live.
    public var stateDirectory: String
    /// The owner's control socket; its directory is created mode 0700 so only root can connect.
    public var controlSocket: String
    /// udev subsystems watched for end devices.
    public var subsystems: [String]
    public var lxd: LXDSettings
    /// Hard caps on what any vendor's container may get; a plan above them is rejected.
    public var caps: Caps
    public var vendors: [VendorEntry]
    /// Seconds between retries of an unreachable vendor or LXD (doubling up to `maxRetrySeconds`).
    public var retrySeconds: Double
    public var maxRetrySeconds: Double
    /// How often each vendor with an approved plan is asked for its current one (app updates).
    public var planSyncSeconds: Double
    public var delivery: Delivery
    /// Root-only directory for the device nodes the gateway makes for approved devices (see `DeviceRegistry`).
    public var deviceDirectory: String
    /// What happens to managed containers whose vendor left this configuration (see `OrphanSweeper`).
    public var orphans: Orphans
    /// Images the gateway downloads from vendors' image servers (see `ImageFetcher`).
    public var images: Images
    /// Free space the gateway never uses up (see `DiskGuard`).
    public var disk: Disk
    /// The daemon's own memory (see `IdleMemory`).
    public var memory: Memory = Memory()

    /// Once the daemon has been quiet (under 1 % of a processor) for `idleTrimSeconds`, it gives the kernel
    /// back the code pages and free heap it holds without using them; 0 keeps them.
    public struct Memory: Sendable, Codable, Equatable {
        public var idleTrimSeconds: Double

        public init(idleTrimSeconds: Double = 5) { self.idleTrimSeconds = idleTrimSeconds }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            idleTrimSeconds = try c.decodeIfPresent(Double.self, forKey: .idleTrimSeconds) ?? Memory().idleTrimSeconds
        }

        enum CodingKeys: String, CodingKey { case idleTrimSeconds }
    }

    /// Before a download, a container creation or an app delivery, the step's need plus `reserveMiB`
    /// must be free, or the step is deferred.
    public struct Disk: Sendable, Codable, Equatable {
        public var reserveMiB: Int

        public init(reserveMiB: Int = 512) { self.reserveMiB = reserveMiB }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            reserveMiB = try c.decodeIfPresent(Int.self, forKey: .reserveMiB) ?? Disk().reserveMiB
        }

        enum CodingKeys: String, CodingKey { case reserveMiB }
    }

    /// Downloads of vendor images: kept (and resumed) under `stateDirectory/images` until imported.
    public struct Images: Sendable, Codable, Equatable {
        /// The largest image tarball the gateway downloads (default 4 GiB); a bigger one is refused unread.
        public var maxMiB: Int
        /// A downloaded image no instance uses and no plan names is deleted this long after its import or
        /// last use (default 1 day).
        public var graceSeconds: Double

        public init(maxMiB: Int = 4096, graceSeconds: Double = 86_400) {
            self.maxMiB = maxMiB
            self.graceSeconds = graceSeconds
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxMiB = try c.decodeIfPresent(Int.self, forKey: .maxMiB) ?? Images().maxMiB
            graceSeconds = try c.decodeIfPresent(Double.self, forKey: .graceSeconds) ?? Images().graceSeconds
        }

        enum CodingKeys: String, CodingKey { case maxMiB, graceSeconds }
    }

    /// Managed containers (`user.iotgw.managed=true`) of vendors no longer in the configuration are
    /// stopped at once and deleted `graceSeconds` later (or on `iot-gateway remove VENDOR`). Containers
    /// without the label are never touched.
    public struct Orphans: Sendable, Codable, Equatable {
        /// How long a stopped orphan is kept (default 7 days): time to put its vendor back, or to export it.
        public var graceSeconds: Double
        /// How often LXD is checked for orphans (default every 5 minutes, and at start).
        public var checkSeconds: Double
        /// Where each orphan is exported (LXD's backup tarball, with its snapshots) before it is deleted;
        /// nil: deleted without an export. A failed export keeps the container until the next check.
        public var exportDirectory: String?

        public init(graceSeconds: Double = 7 * 86_400, checkSeconds: Double = 300, exportDirectory: String? = nil) {
            self.graceSeconds = graceSeconds
            self.checkSeconds = checkSeconds
            self.exportDirectory = exportDirectory
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            graceSeconds = try c.decodeIfPresent(Double.self, forKey: .graceSeconds) ?? Orphans().graceSeconds
            checkSeconds = try c.decodeIfPresent(Double.self, forKey: .checkSeconds) ?? Orphans().checkSeconds
            exportDirectory = try c.decodeIfPresent(String.self, forKey: .exportDirectory)
            if let d = exportDirectory, !d.hasPrefix("/") {
                throw DecodingError.dataCorruptedError(forKey: .exportDirectory, in: c, debugDescription: "must be an absolute path")
            }
        }

        enum CodingKeys: String, CodingKey { case graceSeconds, checkSeconds, exportDirectory }
    }

    /// How apps are delivered and validated inside vendor containers.
    public struct Delivery: Sendable, Codable, Equatable {
        /// Local InSpec profiles, one directory per profile named as the plan's apps name them.
        public var inspecDirectory: String
        /// `enforced` (roll back on failure) or `report_only`.
        public var validationMode: String
        public var abortOnFailure: Bool
        public var allowList: [String]
        public var denyList: [String]
        /// In `production`, validation runs only when the converge changed something.
        public var environment: String
        /// The gateway's snapshots kept per container, the one a delivery takes included. A vendor can pin
        /// `keepSnapshots + 1` times its disk cap on the pool (each snapshot is capped apart), so it is 1 unless
        /// the owner sized the pool for more.
        public var keepSnapshots: Int
        /// Run in the container when it has no chef-client (e.g. installing the vendor's package).
        public var chefInstallCommand: [String]?
        /// The owner's own mapping of app names to InSpec profiles (directory names in `inspecDirectory`);
        /// it wins over the profile a vendor's plan names.
        public var profiles: [String: String]
        /// Longest wait between failed delivery attempts of one plan version (they back off from `retrySeconds`).
        public var maxRetrySeconds: Double
        /// The owner's hardening, converged before every vendor's own run list or playbook.
        public var hardening: Hardening = .standard

        public static let standard = Delivery(inspecDirectory: "/usr/share/iot-gateway/inspec", validationMode: "enforced",
                                              abortOnFailure: false, allowList: [], denyList: [], environment: "production",
                                              keepSnapshots: 1, chefInstallCommand: nil)

        public init(inspecDirectory: String, validationMode: String, abortOnFailure: Bool, allowList: [String], denyList: [String],
                    environment: String, keepSnapshots: Int, chefInstallCommand: [String]?, profiles: [String: String] = [:],
                    maxRetrySeconds: Double = 3600) {
            self.inspecDirectory = inspecDirectory
            self.validationMode = validationMode
            self.abortOnFailure = abortOnFailure
            self.allowList = allowList
            self.denyList = denyList
            self.environment = environment
            self.keepSnapshots = keepSnapshots
            self.chefInstallCommand = chefInstallCommand
            self.profiles = profiles
            self.maxRetrySeconds = maxRetrySeconds
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Delivery.standard
            inspecDirectory = try c.decodeIfPresent(String.self, forKey: .inspecDirectory) ?? d.inspecDirectory
            validationMode = try c.decodeIfPresent(String.self, forKey: .validationMode) ?? d.validationMode
            abortOnFailure = try c.decodeIfPresent(Bool.self, forKey: .abortOnFailure) ?? d.abortOnFailure
            allowList = try c.decodeIfPresent([String].self, forKey: .allowList) ?? d.allowList
            denyList = try c.decodeIfPresent([String].self, forKey: .denyList) ?? d.denyList
            environment = try c.decodeIfPresent(String.self, forKey: .environment) ?? d.environment
            keepSnapshots = try c.decodeIfPresent(Int.self, forKey: .keepSnapshots) ?? d.keepSnapshots
            chefInstallCommand = try c.decodeIfPresent([String].self, forKey: .chefInstallCommand)
            profiles = try c.decodeIfPresent([String: String].self, forKey: .profiles) ?? [:]
            maxRetrySeconds = try c.decodeIfPresent(Double.self, forKey: .maxRetrySeconds) ?? d.maxRetrySeconds
            hardening = try c.decodeIfPresent(Hardening.self, forKey: .hardening) ?? .standard
        }

        enum CodingKeys: String, CodingKey {
            case inspecDirectory, validationMode, abortOnFailure, allowList, denyList, environment, keepSnapshots, chefInstallCommand
            case profiles, maxRetrySeconds, hardening
        }

        /// Where the owner's hardening cookbook and playbook live: `hardening.cookbookDirectory`, or
        /// `cookbooks` beside `inspecDirectory` (the layout of this repository and of
        /// `/usr/share/iot-gateway`).
        public var hardeningCookbookDirectory: String {
            hardening.cookbookDirectory ?? ((inspecDirectory as NSString).deletingLastPathComponent as NSString)
                .appendingPathComponent("cookbooks")
        }
    }

    /// The owner's hardening of vendor containers (`delivery.hardening`). It belongs to the owner: it
    /// is converged by the gateway before the vendor's own run list or playbook, with the same tool
    /// (Chef's `iotgw_hardening` cookbook in local mode, or the Ansible role `iotgw_hardening`), and
    /// its InSpec profile is validated after every delivery, so a vendor can neither leave it out
    /// (plans cannot express it) nor undo it in its own converge without being rolled back.
    public struct Hardening: Sendable, Codable, Equatable {
        /// On unless the owner turns it off.
        public var enabled: Bool
        /// Holds `iotgw_hardening/` (the Chef cookbook) and `ansible/hardening/` (playbook and role);
        /// nil: `cookbooks` beside `delivery.inspecDirectory`.
        public var cookbookDirectory: String?
        /// The InSpec profile (in `inspecDirectory`) that proves it; nil: not validated.
        public var profile: String?
        /// Install the audit and integrity packages and pending updates with the container's own APT
        /// sources (needs its network); false keeps to configuration only.
        public var packages: Bool

        public static let standard = Hardening(enabled: true, cookbookDirectory: nil, profile: "hardening", packages: true)

        public init(enabled: Bool, cookbookDirectory: String?, profile: String?, packages: Bool) {
            self.enabled = enabled
            self.cookbookDirectory = cookbookDirectory
            self.profile = profile
            self.packages = packages
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Hardening.standard
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? d.enabled
            cookbookDirectory = try c.decodeIfPresent(String.self, forKey: .cookbookDirectory)
            profile = c.contains(.profile) ? try c.decodeIfPresent(String.self, forKey: .profile) : d.profile
            packages = try c.decodeIfPresent(Bool.self, forKey: .packages) ?? d.packages
        }

        enum CodingKeys: String, CodingKey { case enabled, cookbookDirectory, profile, packages }
    }

    public struct LXDSettings: Sendable, Codable, Equatable {
        /// Explicit socket; when absent, `LXD_SOCKET`, `LXD_DIR` and the usual paths are tried.
        public var socket: String?
        /// Profiles applied to every vendor container, in order.
        public var profiles: [String]
        /// Managed network for containers whose plan asks for `nat`.
        public var network: String
        public var storagePool: String
        /// Run even where the storage pool cannot enforce a container's disk limit (`dir`): the owner
        /// accepts that a vendor can fill the disk. Off by default: provisioning is refused instead.
        public var allowUnenforcedDiskLimits: Bool
        /// Keep the nftables table that stops vendor containers reaching each other through the host and
        /// reaching the host's own services (see `HostFirewall`). On by default.
        public var hostFirewall: Bool
        /// What each vendor's container may send and receive through the gateway's uplink, in Mbit/s each
        /// way (enforced by the host firewall's table, per container address; 0: no limit). Default 20.
        public var vendorBandwidthMbit: Int
        /// How many connections each vendor's container may hold open through and to the gateway at once
        /// (tracked by the host's conntrack, whose table all vendors and the owner share; enforced by the
        /// host firewall's table, per container address; 0: no limit). Default 2048.
        public var vendorConnections: Int
        /// What each vendor's container may read from and write to its root disk, in MB/s each way (LXD's
        /// `limits.max` on the root disk: the kernel's blkio throttle on the pool's block device; 0: no
        /// limit). Default 50. On cgroup v1 hosts the kernel holds reads, direct writes and writes the
        /// container syncs, but not the page cache the kernel writes back later on its own; cgroup v2 holds all.
        public var vendorDiskMBps: Int
        /// Each vendor's container in a restricted LXD project of its own (see `VendorProjects`). On by
        /// default; switching it either way moves existing containers at the next start (`ProjectPlacement`).
        public var projects: Bool

        public init(socket: String? = nil, profiles: [String], network: String, storagePool: String, allowUnenforcedDiskLimits: Bool = false,
                    hostFirewall: Bool = true, vendorBandwidthMbit: Int = 20, vendorConnections: Int = 2048, vendorDiskMBps: Int = 50, projects: Bool = true) {
            self.projects = projects
            self.vendorDiskMBps = vendorDiskMBps
            self.vendorBandwidthMbit = vendorBandwidthMbit
            self.vendorConnections = vendorConnections
            self.socket = socket
            self.profiles = profiles
            self.network = network
            self.storagePool = storagePool
            self.allowUnenforcedDiskLimits = allowUnenforcedDiskLimits
            self.hostFirewall = hostFirewall
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            socket = try c.decodeIfPresent(String.self, forKey: .socket)
            profiles = try c.decodeIfPresent([String].self, forKey: .profiles) ?? ["default", "iotgw-vendor"]
            network = try c.decodeIfPresent(String.self, forKey: .network) ?? "iotgwbr0"
            storagePool = try c.decodeIfPresent(String.self, forKey: .storagePool) ?? "default"
            allowUnenforcedDiskLimits = try c.decodeIfPresent(Bool.self, forKey: .allowUnenforcedDiskLimits) ?? false
            hostFirewall = try c.decodeIfPresent(Bool.self, forKey: .hostFirewall) ?? true
            vendorBandwidthMbit = try c.decodeIfPresent(Int.self, forKey: .vendorBandwidthMbit) ?? 20
            vendorConnections = try c.decodeIfPresent(Int.self, forKey: .vendorConnections) ?? 2048
            vendorDiskMBps = try c.decodeIfPresent(Int.self, forKey: .vendorDiskMBps) ?? 50
            projects = try c.decodeIfPresent(Bool.self, forKey: .projects) ?? true
        }

        enum CodingKeys: String, CodingKey {
            case socket, profiles, network, storagePool, allowUnenforcedDiskLimits, hostFirewall, vendorBandwidthMbit, vendorConnections, vendorDiskMBps, projects
        }
    }

    public struct Caps: Sendable, Codable, Equatable {
        public var cpus: Int
        public var memoryMiB: Int
        public var diskMiB: Int
        public var processes: Int
        /// Allow `security.nesting` (never by default).
        public var allowNesting: Bool
    }

    public enum Policy: String, Sendable, Codable { case ask, auto, deny }

    /// Whether app updates (new versions and run lists of approved apps, same profiles) need the owner.
    public enum UpdatePolicy: String, Sendable, Codable { case ask, auto }

    /// A USB device a vendor owns: vendor ID, and optionally one product ID.
    public struct MatchRule: Sendable, Codable, Equatable {
        public var vendorID: String
        public var productID: String?
    }

    /// A trusted vendor.
    public struct VendorEntry: Sendable, Codable, Equatable {
        /// `[a-z][a-z0-9-]{0,30}`; also names the container `iotgw-<id>`.
        public var id: String
        public var name: String?
        public var match: [MatchRule]
        /// Base URL of the vendor's IoT Daemon, e.g. `https://iot.acme.example`.
        public var daemonURL: String
        /// The vendor's plan-signing public key (base64 Ed25519).
        public var publicKey: String
        public var policy: Policy
        /// Under `ask`: `auto` (default) lets app updates of approved apps through, `ask` asks for each.
        public var appUpdates: UpdatePolicy
        /// Allow a plain `http` daemonURL (keys would travel in clear text): off by default.
        public var allowInsecureHTTP: Bool
        /// The vendor's MQTT broker (fleet channel); without it the gateway only polls over HTTP.
        public var fleet: Fleet?
        /// Hosts the vendor's plans may name as their image server (`container.image.url`); nil: only the
        /// host of `daemonURL`. The gateway fetches nothing from any other host.
        public var imageHosts: [String]?

        public init(id: String, name: String? = nil, match: [MatchRule], daemonURL: String, publicKey: String, policy: Policy,
                    appUpdates: UpdatePolicy = .auto, allowInsecureHTTP: Bool = false, fleet: Fleet? = nil, imageHosts: [String]? = nil) {
            self.id = id
            self.name = name
            self.match = match
            self.daemonURL = daemonURL
            self.publicKey = publicKey
            self.policy = policy
            self.appUpdates = appUpdates
            self.allowInsecureHTTP = allowInsecureHTTP
            self.fleet = fleet
            self.imageHosts = imageHosts
        }

        /// The hosts this vendor's images may come from.
        public var allowedImageHosts: [String] {
            imageHosts ?? (URL(string: daemonURL)?.host.map { [$0.lowercased()] } ?? [])
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            name = try c.decodeIfPresent(String.self, forKey: .name)
            match = try c.decode([MatchRule].self, forKey: .match)
            daemonURL = try c.decode(String.self, forKey: .daemonURL)
            publicKey = try c.decode(String.self, forKey: .publicKey)
            policy = try c.decodeIfPresent(Policy.self, forKey: .policy) ?? .ask
            appUpdates = try c.decodeIfPresent(UpdatePolicy.self, forKey: .appUpdates) ?? .auto
            allowInsecureHTTP = try c.decodeIfPresent(Bool.self, forKey: .allowInsecureHTTP) ?? false
            fleet = try c.decodeIfPresent(Fleet.self, forKey: .fleet)
            imageHosts = try c.decodeIfPresent([String].self, forKey: .imageHosts)
        }

        enum CodingKeys: String, CodingKey {
            case id, name, match, daemonURL, publicKey, policy, appUpdates, allowInsecureHTTP, fleet, imageHosts
        }
    }

    /// One vendor's fleet channel: its MQTT broker, and what the owner lets the vendor do over it.
    public struct Fleet: Sendable, Codable, Equatable {
        /// The broker (TLS only). The gateway authenticates with a certificate the vendor issued for the
        /// gateway's own key at enrollment; its CN is the gateway id.
        public var host: String
        public var port: Int
        /// The vendor broker's CA certificate (PEM): the broker must present a certificate it signed.
        public var caFile: String
        /// This gateway's client certificate from `iot-daemon enroll-gateway` (PEM, public).
        public var certificateFile: String
        /// Plan poll interval over HTTP while the broker connection is up (pushes make polls a fallback).
        public var pollSeconds: Double
        /// Status is published on every change and at least this often.
        public var statusSeconds: Double
        /// The commands the owner accepts from this vendor (`FleetCommand.Kind` raw values).
        public var commands: [String]
        /// How many commands a minute the gateway reads from this vendor's broker (up to this many at
        /// once); more are dropped unread. Each one costs a signature check, a signed result and a log line.
        public var commandsPerMinute: Int
        public var logs: Logs

        /// Live relay of the vendor's own container journal: off unless the owner allows it.
        public struct Logs: Sendable, Codable, Equatable {
            public var allowed: Bool
            public var linesPerSecond: Int
            public var bytesPerSecond: Int
            /// The longest relay, whatever the vendor asks for.
            public var maxSeconds: Int

            public init(allowed: Bool = false, linesPerSecond: Int = 20, bytesPerSecond: Int = 4096, maxSeconds: Int = 600) {
                self.allowed = allowed
                self.linesPerSecond = linesPerSecond
                self.bytesPerSecond = bytesPerSecond
                self.maxSeconds = maxSeconds
            }

            public init(from decoder: any Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                let d = Logs()
                allowed = try c.decodeIfPresent(Bool.self, forKey: .allowed) ?? d.allowed
                linesPerSecond = try c.decodeIfPresent(Int.self, forKey: .linesPerSecond) ?? d.linesPerSecond
                bytesPerSecond = try c.decodeIfPresent(Int.self, forKey: .bytesPerSecond) ?? d.bytesPerSecond
                maxSeconds = try c.decodeIfPresent(Int.self, forKey: .maxSeconds) ?? d.maxSeconds
            }

            enum CodingKeys: String, CodingKey { case allowed, linesPerSecond, bytesPerSecond, maxSeconds }
        }

        public static let defaultCommands = ["status", "resync"]

        public init(host: String, port: Int, caFile: String, certificateFile: String, pollSeconds: Double = 3600, statusSeconds: Double = 300,
                    commands: [String] = Fleet.defaultCommands, commandsPerMinute: Int = 30, logs: Logs = Logs()) {
            self.host = host
            self.port = port
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.pollSeconds = pollSeconds
            self.statusSeconds = statusSeconds
            self.commands = commands
            self.commandsPerMinute = commandsPerMinute
            self.logs = logs
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            host = try c.decode(String.self, forKey: .host)
            port = try c.decodeIfPresent(Int.self, forKey: .port) ?? 8883
            caFile = try c.decode(String.self, forKey: .caFile)
            certificateFile = try c.decode(String.self, forKey: .certificateFile)
            pollSeconds = try c.decodeIfPresent(Double.self, forKey: .pollSeconds) ?? 3600
            statusSeconds = try c.decodeIfPresent(Double.self, forKey: .statusSeconds) ?? 300
            commands = try c.decodeIfPresent([String].self, forKey: .commands) ?? Fleet.defaultCommands
            commandsPerMinute = try c.decodeIfPresent(Int.self, forKey: .commandsPerMinute) ?? 30
            logs = try c.decodeIfPresent(Logs.self, forKey: .logs) ?? Logs()
        }

        enum CodingKeys: String, CodingKey { case host, port, caFile, certificateFile, pollSeconds, statusSeconds, commands, commandsPerMinute, logs }

        /// Whether the owner accepts this command from the vendor (logs also need `logs.allowed`).
        public func accepts(_ kind: FleetCommand.Kind) -> Bool {
            guard commands.contains(kind.rawValue) else { return false }
            return kind != .logsStart || logs.allowed
        }

        func validate(vendor: String) throws {
            guard Fields.host.isValid(host), (1...65535).contains(port) else {
                throw ConfigError("vendor \(vendor): fleet.host must be a host name or IPv4 address and fleet.port 1-65535")
            }
            guard caFile.hasPrefix("/"), certificateFile.hasPrefix("/") else {
                throw ConfigError("vendor \(vendor): fleet.caFile and fleet.certificateFile must be absolute paths")
            }
            guard pollSeconds >= 1, statusSeconds >= 1 else { throw ConfigError("vendor \(vendor): fleet.pollSeconds and statusSeconds must be at least 1") }
            guard (1...6000).contains(commandsPerMinute) else { throw ConfigError("vendor \(vendor): fleet.commandsPerMinute must be 1-6000") }
            for c in commands where FleetCommand.Kind(rawValue: c) == nil {
                throw ConfigError("vendor \(vendor): fleet.commands: \(Fields.quote(c)) is not one of "
                                  + FleetCommand.Kind.allCases.map(\.rawValue).joined(separator: ", "))
            }
            guard logs.linesPerSecond >= 1, logs.bytesPerSecond >= 64, (1...86_400).contains(logs.maxSeconds) else {
                throw ConfigError("vendor \(vendor): fleet.logs limits must be linesPerSecond >= 1, bytesPerSecond >= 64, maxSeconds 1-86400")
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case stateDirectory, controlSocket, subsystems, lxd, caps, vendors, retrySeconds, maxRetrySeconds, planSyncSeconds, delivery
        case deviceDirectory, orphans, images, disk, memory
    }

    /// LXD passes only nodes under `/dev` into containers.
    public static let defaultDeviceDirectory = "/dev/iot-gateway"

    public init(stateDirectory: String, controlSocket: String, subsystems: [String] = ["usb", "tty"], lxd: LXDSettings, caps: Caps,
                vendors: [VendorEntry], retrySeconds: Double = 2, maxRetrySeconds: Double = 60, planSyncSeconds: Double = 300,
                delivery: Delivery = .standard, deviceDirectory: String = GatewayConfig.defaultDeviceDirectory,
                orphans: Orphans = Orphans(), images: Images = Images(), disk: Disk = Disk()) {
        self.stateDirectory = stateDirectory
        self.controlSocket = controlSocket
        self.subsystems = subsystems
        self.lxd = lxd
        self.caps = caps
        self.vendors = vendors
        self.retrySeconds = retrySeconds
        self.maxRetrySeconds = maxRetrySeconds
        self.planSyncSeconds = planSyncSeconds
        self.delivery = delivery
        self.deviceDirectory = deviceDirectory
        self.orphans = orphans
        self.images = images
        self.disk = disk
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stateDirectory = try c.decodeIfPresent(String.self, forKey: .stateDirectory) ?? "/var/lib/iot-gateway"
        controlSocket = try c.decodeIfPresent(String.self, forKey: .controlSocket) ?? GatewayConfig.defaultControlSocket
        subsystems = try c.decodeIfPresent([String].self, forKey: .subsystems) ?? ["usb", "tty"]
        lxd = try c.decodeIfPresent(LXDSettings.self, forKey: .lxd)
            ?? LXDSettings(socket: nil, profiles: ["default", "iotgw-vendor"], network: "iotgwbr0", storagePool: "default")
        deviceDirectory = try c.decodeIfPresent(String.self, forKey: .deviceDirectory) ?? GatewayConfig.defaultDeviceDirectory
        caps = try c.decodeIfPresent(Caps.self, forKey: .caps)
            ?? Caps(cpus: 2, memoryMiB: 1024, diskMiB: 8192, processes: 1000, allowNesting: false)
        vendors = try c.decodeIfPresent([VendorEntry].self, forKey: .vendors) ?? []
        retrySeconds = try c.decodeIfPresent(Double.self, forKey: .retrySeconds) ?? 2
        maxRetrySeconds = try c.decodeIfPresent(Double.self, forKey: .maxRetrySeconds) ?? 60
        planSyncSeconds = try c.decodeIfPresent(Double.self, forKey: .planSyncSeconds) ?? 300
        delivery = try c.decodeIfPresent(Delivery.self, forKey: .delivery) ?? .standard
        orphans = try c.decodeIfPresent(Orphans.self, forKey: .orphans) ?? Orphans()
        images = try c.decodeIfPresent(Images.self, forKey: .images) ?? Images()
        disk = try c.decodeIfPresent(Disk.self, forKey: .disk) ?? Disk()
        memory = try c.decodeIfPresent(Memory.self, forKey: .memory) ?? Memory()
    }

    public static let defaultControlSocket = "/run/iot-gateway/control.sock"
    public static let defaultPath = "/etc/iot-gateway/gateway.yaml"

    /// Loads and validates a configuration file; errors name the file and the field.
    public static func load(path: String) throws -> GatewayConfig {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError("cannot read \(path): \(error.localizedDescription)")
        }
        let config: GatewayConfig
        do { config = try YAMLDecoder().decode(GatewayConfig.self, from: text) } catch {
            throw ConfigError("\(path): \(Self.describe(error))")
        }
        try config.validate()
        return config
    }

    /// Checks every field a mistake in would be dangerous or confusing later.
    public func validate() throws {
        guard stateDirectory.hasPrefix("/") else { throw ConfigError("stateDirectory must be an absolute path") }
        guard controlSocket.hasPrefix("/") else { throw ConfigError("controlSocket must be an absolute path") }
        guard deviceDirectory.hasPrefix("/dev/"), deviceDirectory.split(separator: "/").count >= 2,
              deviceDirectory.split(separator: "/").allSatisfy({ Fields.name.isValid(String($0)) }) else {
            throw ConfigError("deviceDirectory must be a directory under /dev/ (LXD passes only nodes under /dev), e.g. /dev/iot-gateway")
        }
        for (app, profile) in delivery.profiles.sorted(by: { $0.key < $1.key }) {
            guard Fields.name.isValid(app), Fields.name.isValid(profile) else {
                throw ConfigError("delivery.profiles: \(Fields.quote(app)): \(Fields.quote(profile)) must be names of [A-Za-z0-9._-]")
            }
        }
        if let profile = delivery.hardening.profile, !Fields.name.isValid(profile) {
            throw ConfigError("delivery.hardening.profile: \(Fields.quote(profile)) must be a name of [A-Za-z0-9._-]")
        }
        if let dir = delivery.hardening.cookbookDirectory, !dir.hasPrefix("/") {
            throw ConfigError("delivery.hardening.cookbookDirectory must be an absolute path")
        }
        guard !subsystems.isEmpty else { throw ConfigError("subsystems must not be empty") }
        guard ["enforced", "report_only"].contains(delivery.validationMode) else {
            throw ConfigError("delivery.validationMode must be enforced or report_only")
        }
        guard delivery.keepSnapshots >= 1 else { throw ConfigError("delivery.keepSnapshots must be at least 1") }
        guard planSyncSeconds >= 1 else { throw ConfigError("planSyncSeconds must be at least 1") }
        guard orphans.graceSeconds >= 0, orphans.checkSeconds >= 1 else {
            throw ConfigError("orphans: graceSeconds must be at least 0 and checkSeconds at least 1")
        }
        guard (1...1 << 20).contains(images.maxMiB), images.graceSeconds >= 0 else {
            throw ConfigError("images: maxMiB must be between 1 and 1048576 and graceSeconds at least 0")
        }
        guard (0...100_000).contains(lxd.vendorBandwidthMbit) else {
            throw ConfigError("lxd.vendorBandwidthMbit must be between 0 (no limit) and 100000")
        }
        guard lxd.vendorConnections == 0 || (16...1_000_000).contains(lxd.vendorConnections) else {
            throw ConfigError("lxd.vendorConnections must be 0 (no limit) or between 16 and 1000000")
        }
        guard (0...100_000).contains(lxd.vendorDiskMBps) else {
            throw ConfigError("lxd.vendorDiskMBps must be between 0 (no limit) and 100000")
        }
        guard (0...1 << 24).contains(disk.reserveMiB) else { throw ConfigError("disk.reserveMiB must be between 0 and 16777216") }
        guard memory.idleTrimSeconds == 0 || (1...86_400).contains(memory.idleTrimSeconds) else {
            throw ConfigError("memory.idleTrimSeconds must be 0 (never) or between 1 and 86400")
        }
        guard caps.cpus >= 1, caps.memoryMiB >= 16, caps.diskMiB >= 64, caps.processes >= 8 else {
            throw ConfigError("caps are below the minimum a container needs")
        }
        var seen = Set<String>()
        for v in vendors {
            guard Fields.vendorID.isValid(v.id) else { throw ConfigError("vendor id \(Fields.quote(v.id)) must match [a-z][a-z0-9-]{0,30}") }
            guard seen.insert(v.id).inserted else { throw ConfigError("vendor \(v.id) is listed twice") }
            guard !v.match.isEmpty else { throw ConfigError("vendor \(v.id): match must list at least one USB vendor ID") }
            for m in v.match {
                guard Self.isHex4(m.vendorID), m.productID.map(Self.isHex4) ?? true else {
                    throw ConfigError("vendor \(v.id): USB IDs must be 4 hex digits")
                }
            }
            guard Fields.url.isValid(v.daemonURL), let url = URL(string: v.daemonURL), let scheme = url.scheme else {
                throw ConfigError("vendor \(v.id): daemonURL must be an https URL without user info")
            }
            guard scheme == "https" || v.allowInsecureHTTP else {
                throw ConfigError("vendor \(v.id): daemonURL must be https (set allowInsecureHTTP: true to allow plain http, "
                                  + "which sends the vendor's keys in clear text)")
            }
            do { _ = try Keys.decodePublic(v.publicKey) } catch {
                throw ConfigError("vendor \(v.id): publicKey must be a base64 Ed25519 public key")
            }
            try v.fleet?.validate(vendor: v.id)
            for h in v.imageHosts ?? [] where !Fields.host.isValid(h) {
                throw ConfigError("vendor \(v.id): imageHosts: \(Fields.quote(h)) must be a lowercase host name or IPv4 address")
            }
        }
        // Two vendors claiming the same device would make ownership ambiguous.
        for (i, a) in vendors.enumerated() {
            for b in vendors[(i + 1)...] {
                for ra in a.match {
                    for rb in b.match where ra.vendorID.lowercased() == rb.vendorID.lowercased()
                        && (ra.productID == nil || rb.productID == nil || ra.productID?.lowercased() == rb.productID?.lowercased()) {
                        throw ConfigError("vendors \(a.id) and \(b.id) both match USB \(ra.vendorID)")
                    }
                }
            }
        }
    }

    /// The vendor owning a USB vendor/product ID, if any (most specific rule wins).
    public func vendor(forUSB vendorID: String, productID: String) -> VendorEntry? {
        let vid = vendorID.lowercased(), pid = productID.lowercased()
        return vendors.first { $0.match.contains { $0.vendorID.lowercased() == vid && $0.productID?.lowercased() == pid } }
            ?? vendors.first { $0.match.contains { $0.vendorID.lowercased() == vid && $0.productID == nil } }
    }

    public func vendor(id: String) -> VendorEntry? { vendors.first { $0.id == id } }

    static func isHex4(_ s: String) -> Bool { s.count == 4 && s.allSatisfy(\.isHexDigit) }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let k, let c):
            return "missing field \((c.codingPath.map(\.stringValue) + [k.stringValue]).joined(separator: "."))"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c), DecodingError.dataCorrupted(let c):
            return "invalid value at \(c.codingPath.map(\.stringValue).joined(separator: ".")): \(c.debugDescription)"
        default: return "\(error)"
        }
    }
}

/// A configuration mistake, with a message naming the field.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
