import Foundation
import GatewayProtocol

/// Composes a gateway's plan from the catalog and the genuine devices it announced. Pure: no I/O, time
/// passed in, so versioning and content rules are unit-tested directly.
///
/// The plan's *content* is everything but `version`, `issuedAt` and `expiresAt`. Its hash decides the
/// version. Gateways accept a version again only as the very same signed bytes, so a plan is never
/// re-signed under its version: the same content is answered with the stored plan itself while that has
/// more than half of `planTTL` to live; new content, or a plan nearing its expiry, gets the next version
/// with a fresh expiry.
public struct PlanComposer: Sendable {
    public var vendor: String
    public var image: ImageRef
    public var container: VendorConfiguration.ContainerSettings
    public var models: [VendorConfiguration.DeviceModel]
    public var apps: [AppSpec]
    public var planTTL: TimeInterval

    public init(configuration: VendorConfiguration) {
        vendor = configuration.vendor
        image = configuration.image
        container = configuration.container
        models = configuration.models
        apps = configuration.apps
        planTTL = TimeInterval(configuration.planTTLSeconds)
    }

    /// The plan a gateway was issued last.
    public struct Previous: Sendable, Equatable {
        public var version: Int
        public var contentHash: String
        /// The plan as it was signed, when it can be answered again; nil (it cannot be decoded, say): the
        /// next plan gets the next version whatever its content.
        public var plan: ProvisioningPlan?

        public init(version: Int, contentHash: String, plan: ProvisioningPlan?) {
            self.version = version
            self.contentHash = contentHash
            self.plan = plan
        }
    }

    /// Everything in a plan but its version and times; what the content hash covers.
    public struct Content: Sendable, Codable, Equatable {
        public var schema: Int
        public var vendor: String
        public var gatewayID: String
        public var container: ContainerSpec
        public var devices: [DeviceGrant]
        public var apps: [AppSpec]

        /// SHA-256 hex of the content as WireJSON (sorted keys, so stable across runs).
        public func hash() throws -> String { Keys.sha256Hex(try WireJSON.encoder().encode(self)) }
    }

    public struct Composed: Sendable, Equatable {
        public var plan: ProvisioningPlan
        public var contentHash: String
        /// Whether `plan.version` is new (first plan, content changed, the previous plan nears its expiry,
        /// or the gateway held a higher version). False: `plan` is the previous plan, to be answered with
        /// its stored signed bytes.
        public var isNewVersion: Bool
        /// Serials of devices left out: the catalog no longer has their model, or the plan already lists
        /// as many devices as gateways accept (`PlanValidator.maxDevices`).
        public var omitted: [String]
    }

    /// The longest suffix a second device of a model gets on the model's path: `-`, 32 characters of its
    /// serial, and `-<n>` when two serials give the same suffix.
    static let maxSuffixLength = 1 + 32 + 4

    /// The content for a gateway's devices.
    ///
    /// - Parameter devices: the genuine devices the gateway announced, in the order it first announced
    ///   them. A device whose model shares a `unix-char` path with a device announced earlier gets the
    ///   path suffixed with its serial (`/dev/ttyUSB0-<serial>`, and `-2`, `-3`... if two serials give the
    ///   same suffix), so every device keeps its path when others arrive. Devices past
    ///   `PlanValidator.maxDevices` are left out. Grants are sorted by serial; apps are the union of the
    ///   models' apps, sorted by name.
    public func content(gatewayID: String, devices: [RegisteredDevice]) -> (content: Content, omitted: [String]) {
        let modelsByName = Dictionary(models.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let appsByName = Dictionary(apps.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var grants: [DeviceGrant] = []
        var omitted: [String] = []
        var usedPaths = Set<String>()
        var appNames = Set<String>()
        var seenSerials = Set<String>()
        for device in devices where seenSerials.insert(device.serial).inserted {
            guard let model = modelsByName[device.model], grants.count < PlanValidator.maxDevices else {
                omitted.append(device.serial)
                continue
            }
            var path: String?
            if model.kind == .unixChar, let base = model.devicePath {
                path = Self.unusedPath(base, serial: device.serial, used: usedPaths)
            }
            if let path { usedPaths.insert(path) }
            grants.append(DeviceGrant(serial: device.serial, vendorID: device.vendorID, productID: device.productID, kind: model.kind,
                                      path: path))
            appNames.formUnion(model.apps)
        }
        let content = Content(
            schema: ProvisioningPlan.currentSchema,
            vendor: vendor,
            gatewayID: gatewayID,
            container: ContainerSpec(name: ProvisioningPlan.containerName(forVendor: vendor), image: image, limits: container.limits,
                                     network: container.network),
            devices: grants.sorted { $0.serial < $1.serial },
            apps: appNames.sorted().compactMap { appsByName[$0] }
        )
        return (content, omitted)
    }

    /// Composes the plan to answer an announcement or a poll with: the previous plan itself while its
    /// content is unchanged and it has more than half of `planTTL` to live, else the next version.
    ///
    /// - Parameters:
    ///   - previous: the plan stored for this gateway, if any.
    ///   - gatewayVersion: the highest version the gateway says it holds. If it is above `previous` (the
    ///     vendor's database was restored from an old backup, say), the new version goes past it, since
    ///     gateways never accept a lower version.
    public func compose(gatewayID: String, devices: [RegisteredDevice], previous: Previous?, gatewayVersion: Int = 0,
                        now: Date) throws -> Composed {
        let (content, omitted) = content(gatewayID: gatewayID, devices: devices)
        let hash = try content.hash()
        if let previous, let plan = previous.plan, plan.version == previous.version, previous.contentHash == hash,
           answersAgain(plan, gatewayVersion: gatewayVersion, now: now) {
            return Composed(plan: plan, contentHash: hash, isNewVersion: false, omitted: omitted)
        }
        let (version, overflow) = max(previous?.version ?? 0, gatewayVersion, 0).addingReportingOverflow(1)
        guard !overflow else { throw ProtocolError(.invalidField, "plan version cannot go past \(Int.max)") }
        let plan = ProvisioningPlan(
            schema: content.schema, vendor: content.vendor, gatewayID: content.gatewayID, version: version, issuedAt: now,
            expiresAt: now.addingTimeInterval(planTTL), container: content.container, devices: content.devices, apps: content.apps
        )
        return Composed(plan: plan, contentHash: hash, isNewVersion: true, omitted: omitted)
    }

    /// Whether `plan`, stored with the content the gateway's inputs give now, is answered again as is: it is
    /// not below the version the gateway holds, and it has more than half of `planTTL` to live.
    public func answersAgain(_ plan: ProvisioningPlan, gatewayVersion: Int, now: Date) -> Bool {
        plan.version >= gatewayVersion && plan.version > 0 && plan.expiresAt.timeIntervalSince(now) > planTTL / 2
    }

    /// `base` if no device uses it yet, else `base-<serial>`, else `base-<serial>-2`, `-3`...
    static func unusedPath(_ base: String, serial: String, used: Set<String>) -> String {
        guard used.contains(base) else { return base }
        let suffixed = "\(base)-\(pathSafe(serial))"
        var candidate = suffixed
        var n = 1
        while used.contains(candidate) {
            n += 1
            candidate = "\(suffixed)-\(n)"
        }
        return candidate
    }

    /// A serial as a path component: `[A-Za-z0-9_-]`, anything else as `_`, at most 32 characters.
    static func pathSafe(_ serial: String) -> String {
        String(serial.prefix(32).map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : "_" })
    }
}
