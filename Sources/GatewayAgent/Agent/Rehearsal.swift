import Crypto
import Foundation
import GatewayProtocol
import Logging
import LXD
import ServiceLifecycle

/// Runs once at start, on made-up data and a throwaway store, the code a first provisioning runs, so that
/// the first device plugged after a start does not pay for what a process does only the first time.
///
/// What it pays for: the Swift runtime resolves a generic type or a protocol conformance the first time
/// code needs it, by scanning every conformance record of the executable (about 11,700 in the static
/// `iot-gateway-client`), then caches the answer for the life of the process. A first provisioning needs
/// hundreds (every `Codable` of the wire, the store's records and LXD's answers, GRDB's generic queries,
/// ISO-8601 dates): `perf` put the gateway at a full processor for the 50 ms between the plug and LXD's
/// create. With another vendor's provisioning run before in the same process, a first plug of the benchmark
/// vendor reached the running container 20 ms sooner (`scripts/bench-provision`'s setup, December 5).
///
/// Nothing outside the process sees it: no LXD call, no vendor call, no node; the store is a file of its
/// own beside the real one (``fileName``), removed before and after (and at the next start, after a crash).
/// It runs at background priority, so a device plugged meanwhile goes first; a failure is logged, never fatal.
public struct Rehearsal: Service {
    public static let fileName = "rehearsal.sqlite"
    let config: GatewayConfig
    let logger: Logger

    public init(config: GatewayConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    public func run() async {
        let task = Task(priority: .background) { [config] in
            let clock = ContinuousClock(), started = clock.now
            try await Self.perform(config: config)
            return started.duration(to: clock.now)
        }
        do {
            let took = try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
            logger.info("rehearsed a provisioning", metadata: ["iotgw.ms": "\(ContainerExecutor.milliseconds(took))"])
        } catch {
            logger.warning("provisioning not rehearsed", metadata: ["iotgw.error": "\(error.safeDescription)"])
        }
    }

    /// The rehearsal itself: a plan signed and admitted, a device and the plan through the store, the
    /// container's steps planned and LXD's side coded. Throws if any of it fails.
    public static func perform(config: GatewayConfig) async throws {
        let vendor = "rehearsal", gatewayID = "gw-rehearsal", serial = "REHEARSAL-1", now = Date()
        // The vendor's side of the exchange: a signed plan, as it comes over the wire.
        let key = Curve25519.Signing.PrivateKey()
        let plan = ProvisioningPlan(
            vendor: vendor, gatewayID: gatewayID, version: 1, issuedAt: now, expiresAt: now.addingTimeInterval(3600),
            container: ContainerSpec(name: ProvisioningPlan.containerName(forVendor: vendor),
                                     image: ImageRef(alias: vendor, fingerprint: String(repeating: "0", count: 64)),
                                     limits: ResourceLimits(cpus: 1, memoryMiB: 64, diskMiB: 256, processes: 64), network: .nat),
            devices: [DeviceGrant(serial: serial, vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB0")],
            apps: [AppSpec(name: "app", version: "1", runList: ["recipe[app]"])])
        let body = try WireJSON.encoder().encode(try PlanSigner(privateKey: key).sign(plan))
        // The gateway's side: the announcement it signs, the plan it admits.
        let announcement = Announcement(gatewayID: gatewayID, device: DeviceIdentity(vendorID: "0403", productID: "6001", serial: serial,
                                                                                subsystem: "tty"),
                                        currentPlanVersion: 0)
        let announced = try WireJSON.encoder().encode(announcement)
        _ = try RequestSignature.headers(gatewayID: gatewayID, key: key, method: "POST", path: "/v1/announce",
                                         audience: .init(vendor: vendor, host: "localhost"), body: announced)
        let validator = PlanValidator(vendor: vendor, vendorKey: key.publicKey, gatewayID: gatewayID)
        let (admitted, payload) = try validator.validate(rawBody: body, held: PlanHeld(version: 0, payloadSHA256: nil), now: now)
        _ = admitted.grant
        // Its store passes the crash points too: the crash-point sweep's point is not among them here.
        try await CrashPoint.$rehearsing.withValue(true) {
            try await rehearseStore(config: config, vendor: vendor, serial: serial, body: body, payload: payload)
        }
        // The container's steps, and LXD's side of them.
        let present = PresentDevice(serial: serial, vendorID: "0403", productID: "6001",
                                    tty: .init(syspath: "/sys/rehearsal/tty", devnode: "/dev/ttyUSB0", number: DeviceNumber(major: 188, minor: 0)))
        let steps = try ContainerPlanner.steps(plan: admitted, present: [present], observed: .absent, config: config) { "/rehearsal/\($0)" }
        for case .create(let summary) in steps { try LXDClient.rehearseCoding(creating: summary.post) }
        _ = try WireJSON.encoder().encode(ProvisioningReport(gatewayID: gatewayID, vendor: vendor, planVersion: 1, outcome: .applied,
                                                             container: plan.container.name))
    }

    /// The store calls of a plug, an answer, an approval and a create, on a store of its own, closed before its
    /// files go.
    static func rehearseStore(config: GatewayConfig, vendor: String, serial: String, body: Data, payload: Data) async throws {
        let path = "\(config.stateDirectory)/\(fileName)"
        let remove = { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        remove()
        defer { remove() }
        try await rehearse(on: try GatewayStore(path: path), vendor: vendor, serial: serial, body: body, payload: payload)
    }

    static func rehearse(on store: GatewayStore, vendor: String, serial: String, body: Data, payload: Data) async throws {
        let syspath = "/sys/rehearsal/tty"
        try await store.save(DeviceRecord(syspath: syspath, subsystem: "tty", devnode: "/dev/ttyUSB0", vendorID: "0403", productID: "6001",
                                          serial: serial, manufacturer: nil, product: nil, busPath: nil, vendor: vendor, present: true,
                                          state: .unknown, lastError: nil, attempts: 0, nextAttemptAt: nil, updatedAt: Date()))
        _ = try await store.device(syspath)
        try await store.setDeviceState(syspath, .announcing)
        _ = try await store.devices()
        _ = try await store.heldPlan(vendor)
        let record = try await store.recordPlan(vendor: vendor, version: 1, signedJSON: body, payloadSHA256: Keys.sha256Hex(payload),
                                                syncedAt: Date())
        try await store.setRejection(vendor, nil, at: Date())
        if let id = record.id { try await store.decide(planID: id, approve: true, by: "policy") }
        _ = try await store.vendorState(vendor)
        _ = try await store.plans(decision: .approved)
        try await store.setDeviceState(syspath, .attaching)
        try await store.journal(vendor: vendor, step: "create", status: "begin")
        try await store.journal(vendor: vendor, step: "create", status: "done")
        try await store.setVendorResult(vendor, appliedVersion: 1, container: ProvisioningPlan.containerName(forVendor: vendor), error: nil)
        try await store.setDeviceState(syspath, .attached)
        _ = try await store.journal(vendor: vendor, limit: 1)
    }
}
