import Crypto
import Foundation
import GatewayProtocol
import Logging
import LXD
import Synchronization
import Testing
@testable import GatewayAgent

/// LXD in memory: instances with config and devices, snapshots, a pool driver. Counts writes, and
/// can be told to fail every call about one instance.
final class FakeHost: ContainerHost, Sendable {
    struct State {
        var instances: [String: Instance] = [:]
        var snapshots: [String: [String]] = [:]
        var failing: Set<String> = []
        var writes = 0
        /// `instance(_:)` calls (what the instance cache saves).
        var reads = 0
        var imageChecks = 0
        /// While set, `instance(_:)` waits on it after reading (a read LXD is slow to answer).
        var readGate: Gate?
        var deviceLog: [String] = []
        var poolDriver = "btrfs"
        /// LXD's pid as `server()` reports it; nil: LXD is down.
        var pid: Int? = 1
        /// LXD away: every call fails as a killed LXD's do (`setDown`).
        var down = false
        var image: (alias: String, fingerprint: String) = ("iotgw-busybox", String(repeating: "a", count: 64))
        /// Creations under way now, and the most ever at once.
        var creating = 0
        var maxCreating = 0
        /// Creations recording their instance and picking its id map (LXD 5.0 must never run two at once), and
        /// the most ever at once.
        var allocating = 0
        var maxAllocating = 0
        /// Creations held, by instance name, after their id map is picked (a large image being copied and shifted).
        var createGates: [String: Gate] = [:]
        /// Starts refused, by instance name, as LXD refuses them while another operation (a create) runs.
        var busyStarts: [String: Int] = [:]
        /// Host id bases LXD picks for the next creations, in order (`volatile.idmap.next`, 65,536 ids); none: no map.
        var idmapBases: [Int64] = []
    }
    let state = Mutex(State())

    func failCalls(for name: String, _ on: Bool = true) {
        state.withLock { s in
            if on { s.failing.insert(name) } else { s.failing.remove(name) }
        }
    }
    var writes: Int { state.withLock { $0.writes } }
    var reads: Int { state.withLock { $0.reads } }
    /// Changes an instance as someone at the host would with `lxc`: not through the gateway, no write counted.
    func byHand(_ name: String, _ change: (inout Instance?) -> Void) { state.withLock { change(&$0.instances[name]) } }
    func instanceNow(_ name: String) -> Instance? { state.withLock { $0.instances[name] } }

    /// LXD dies (every call unreachable, no pid) or comes back with a new pid.
    func setDown(_ down: Bool) {
        state.withLock { s in
            s.down = down
            s.pid = down ? nil : (s.pid ?? 1) + 1000
        }
    }

    func guardUp(_ name: String) throws {
        if state.withLock({ $0.down }) { throw LXDError(code: .unreachable, message: "LXD is not answering: connection refused") }
        // A failure LXD decided (not an outage, which the gateway waits out without counting a failure).
        if state.withLock({ $0.failing.contains(name) }) { throw LXDError(code: .serverError, status: 500, message: "fake LXD fails calls on \(name)") }
    }

    func write<T>(_ name: String, _ body: (inout State) throws -> T) throws -> T {
        try guardUp(name)
        return try state.withLock { s in
            s.writes += 1
            return try body(&s)
        }
    }

    static func notFound(_ name: String) -> LXDError { LXDError(code: .notFound, status: 404, message: "Instance not found") }

    func instance(_ name: String) async throws -> (instance: Instance, etag: String?) {
        try guardUp(name)
        let (i, gate) = state.withLock { s in
            s.reads += 1
            return (s.instances[name], s.readGate)
        }
        if let gate { await gate.wait() }
        guard let i else { throw Self.notFound(name) }
        return (i, nil)
    }

    func createInstance(_ spec: InstancesPost, timeout: Duration?) async throws {
        try await createInstance(spec, timeout: timeout) {}
    }

    func createInstance(_ spec: InstancesPost, timeout: Duration?, idmapAllocated: @escaping @Sendable () async -> Void) async throws {
        state.withLock { s in
            s.creating += 1
            s.maxCreating = max(s.maxCreating, s.creating)
            s.allocating += 1
            s.maxAllocating = max(s.maxAllocating, s.allocating)
        }
        defer { state.withLock { $0.creating -= 1 } }
        try await Task.sleep(for: .milliseconds(30))  // LXD takes a while; concurrent allocations would overlap here
        let gate = state.withLock { s in
            s.allocating -= 1
            return s.createGates[spec.name]
        }
        await idmapAllocated()
        if let gate { await gate.wait() }
        try write(spec.name) { s in
            guard s.instances[spec.name] == nil else { throw LXDError(code: .conflict, status: 409, message: "already exists") }
            var spec = spec
            if !s.idmapBases.isEmpty { spec.config["volatile.idmap.next"] = Self.idmap(base: s.idmapBases.removeFirst()) }
            s.instances[spec.name] = try Self.makeInstance(spec)
        }
    }

    /// An isolated map as LXD 5.0 records it: 65,536 uids and gids from `base`.
    static func idmap(base: Int64) -> String {
        "[{\"Isuid\":true,\"Isgid\":false,\"Hostid\":\(base),\"Nsid\":0,\"Maprange\":65536},"
            + "{\"Isuid\":false,\"Isgid\":true,\"Hostid\":\(base),\"Nsid\":0,\"Maprange\":65536}]"
    }

    static func makeInstance(_ spec: InstancesPost) throws -> Instance {
        var config = spec.config
        // As LXD records it: what a rebuild compares with the plan's image.
        if let fp = spec.source.fingerprint { config["volatile.base_image"] = fp }
        let json: [String: Any] = [
            "name": spec.name, "type": "container", "status": "Stopped", "status_code": 102, "architecture": "x86_64",
            "config": config, "devices": spec.devices.mapValues(\.config), "expanded_config": spec.config,
            "expanded_devices": spec.devices.mapValues(\.config), "profiles": spec.profiles, "ephemeral": false, "stateful": false,
            "description": spec.description, "created_at": "2026-12-03T00:00:00Z",
        ]
        return try JSONDecoder().decode(Instance.self, from: try JSONSerialization.data(withJSONObject: json))
    }

    func patchInstance(_ name: String, config: [String: String], devices: [String: Device], ifMatch etag: String?) async throws {
        try write(name) { s in
            guard var i = s.instances[name] else { throw Self.notFound(name) }
            i.config.merge(config) { $1 }
            i.config = i.config.filter { !$0.value.isEmpty }  // as LXD: "" unsets a key
            i.devices.merge(devices) { $1 }
            s.instances[name] = i
        }
    }

    func setState(_ name: String, _ action: InstanceStatePut.Action, timeout: Int, force: Bool) async throws {
        try write(name) { s in
            guard var i = s.instances[name] else { throw Self.notFound(name) }
            if let busy = s.busyStarts[name], busy > 0 {
                s.busyStarts[name] = busy - 1
                throw LXDError(code: .operationFailed, status: 400,
                               message: "Failed to create instance update operation: Instance is busy running a \"create\" operation")
            }
            switch action {
            case .start, .restart:
                i.statusCode = 103
                i.status = "Running"
            default:
                i.statusCode = 102
                i.status = "Stopped"
            }
            s.instances[name] = i
        }
    }

    func addDevice(_ instance: String, name: String, _ device: Device) async throws {
        try await patchInstance(instance, config: [:], devices: [name: device], ifMatch: nil)
        state.withLock { $0.deviceLog.append("add \(name)") }
    }

    func removeDevice(_ instance: String, name: String) async throws {
        try write(instance) { s in
            guard var i = s.instances[instance] else { throw Self.notFound(instance) }
            i.devices[name] = nil
            s.instances[instance] = i
            s.deviceLog.append("remove \(name)")
        }
    }

    func state(_ name: String) async throws -> InstanceState {
        try guardUp(name)
        return try JSONDecoder().decode(InstanceState.self, from: Data(#"{"status":"Running","status_code":103,"pid":4242,"processes":7,"cpu":{"usage":1500000000},"memory":{"usage":8388608,"usage_peak":9000000},"disk":{"root":{"usage":1048576}},"network":{}}"#.utf8))
    }

    func verifyImage(alias: String, fingerprint: String) async throws {
        let image = state.withLock { s in
            s.imageChecks += 1
            return s.image
        }
        guard image.alias == alias, image.fingerprint == fingerprint else {
            throw LXDError(code: .fingerprintMismatch, message: "image \(alias) differs")
        }
    }

    func storagePool(_ name: String) async throws -> StoragePool {
        StoragePool(name: name, driver: state.withLock { $0.poolDriver }, status: "Created", config: [:])
    }

    func createSnapshot(_ instance: String, name: String) async throws {
        try write(instance) { $0.snapshots[instance, default: []].append(name) }
    }

    func restoreSnapshot(_ instance: String, name: String) async throws {
        try write(instance) { s in
            guard s.snapshots[instance]?.contains(name) == true else { throw LXDError(code: .notFound, message: "no snapshot") }
        }
    }

    func listInstances(userFilter: [String: String]) async throws -> [Instance] {
        state.withLock { s in
            s.instances.values.filter { i in userFilter.allSatisfy { i.config["user." + $0.key] == $0.value } }.sorted { $0.name < $1.name }
        }
    }

    func deleteInstance(_ name: String) async throws {
        try write(name) { s in
            guard let i = s.instances[name] else { throw Self.notFound(name) }
            guard !i.isRunning else { throw LXDError(code: .badRequest, status: 400, message: "Instance is running") }
            s.instances[name] = nil
        }
    }

    func renameInstance(_ name: String, to newName: String) async throws {
        try write(name) { s in
            guard var i = s.instances[name] else { throw Self.notFound(name) }
            guard !i.isRunning else { throw LXDError(code: .badRequest, status: 400, message: "Renaming of running instance not allowed") }
            guard s.instances[newName] == nil else { throw LXDError(code: .conflict, status: 409, message: "already exists") }
            i.name = newName
            s.instances[name] = nil
            s.instances[newName] = i
        }
    }

    func snapshots(_ instance: String) async throws -> [InstanceSnapshot] { [] }
    func deleteSnapshot(_ instance: String, name: String) async throws {
        try write(instance) { $0.snapshots[instance]?.removeAll { $0 == name } }
    }

    func server() async throws -> Server {
        guard let pid = state.withLock({ $0.pid }) else { throw LXDError(code: .unreachable, message: "fake LXD is down") }
        let json = #"{"api_extensions":[],"api_status":"stable","api_version":"1.0","auth":"trusted","environment":{"server_version":"5.0.2","server_pid":"# + "\(pid)}}"
        return try JSONDecoder().decode(Server.self, from: Data(json.utf8))
    }
    /// Device removals and additions LXD was asked for, in order.
    var deviceLog: [String] { state.withLock { $0.deviceLog } }
}

/// Device nodes in memory (no root needed).
final class MemoryNodeFiles: DeviceNodeFiles, Sendable {
    let files = Mutex<[String: DeviceNumber]>([:])
    func prepare(directory: String) throws {}
    func make(path: String, number: DeviceNumber) throws { files.withLock { $0[path] = number } }
    func remove(path: String) { _ = files.withLock { $0.removeValue(forKey: path) } }
    func number(at path: String) -> DeviceNumber? { files.withLock { $0[path] } }
    func list(_ directory: String) -> [String] {
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        return Array(Set(files.withLock { $0.keys.filter { $0.hasPrefix(prefix) } }.compactMap {
            $0.dropFirst(prefix.count).split(separator: "/").first.map(String.init)
        })).sorted()
    }
    var paths: [String] { files.withLock { $0.keys.sorted() } }
}

/// A one-shot gate a fake can wait on until a test opens it.
final class Gate: Sendable {
    let opened = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func wait() async {
        await withCheckedContinuation { c in
            let resume = opened.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if resume { c.resume() }
        }
    }
    func open() {
        for c in opened.withLock({ s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }) { c.resume() }
    }
}

/// Vendors' daemons in memory: each vendor answers with plans it signs for the devices it is told
/// about, or with whatever a test sets.
final class FakeVendors: VendorAPI, Sendable {
    struct Vendor: Sendable {
        var rawKey: Data
        var key: Curve25519.Signing.PrivateKey {
            // Invariant: rawKey came from a valid key.
            try! Curve25519.Signing.PrivateKey(rawRepresentation: rawKey)
        }
        var plan: (@Sendable (Announcement?) throws -> ProvisioningPlan)?
        var rawAnswer: Data?
        var failure: VendorError?
        var bootstrapGate: Gate?
        var announceGate: Gate?
    }
    let vendors: Mutex<[String: Vendor]>
    let reports = Mutex<[ProvisioningReport]>([])
    let calls = Mutex<[String]>([])

    init(_ vendors: [String: Curve25519.Signing.PrivateKey]) {
        self.vendors = Mutex(vendors.mapValues { Vendor(rawKey: $0.rawRepresentation) })
    }

    func update(_ id: String, _ body: (inout Vendor) -> Void) { vendors.withLock { body(&$0[id]!) } }
    func vendor(_ id: String) -> Vendor { vendors.withLock { $0[id]! } }
    func reported(_ vendor: String) -> [ProvisioningReport] { reports.withLock { $0.filter { $0.vendor == vendor } } }

    func signedPlan(_ v: Vendor, _ a: Announcement?) throws -> Data {
        if let raw = v.rawAnswer { return raw }
        guard let plan = try v.plan?(a) else { throw VendorError(kind: .refused(code: "noPlan"), message: "no plan") }
        return try WireJSON.encoder().encode(try PlanSigner(privateKey: v.key).sign(plan))
    }

    func announce(_ announcement: Announcement, to vendor: GatewayConfig.VendorEntry) async throws -> Data {
        calls.withLock { $0.append("announce \(vendor.id) \(announcement.device.serial)") }
        let v = self.vendor(vendor.id)
        if let g = v.announceGate { await g.wait() }
        if let f = v.failure { throw f }
        return try signedPlan(v, announcement)
    }

    func currentPlan(_ request: PlanRequest, from vendor: GatewayConfig.VendorEntry) async throws -> Data {
        calls.withLock { $0.append("plan \(vendor.id)") }
        let v = self.vendor(vendor.id)
        if let f = v.failure { throw f }
        return try signedPlan(v, nil)
    }

    func bootstrap(_ request: BootstrapRequest, from vendor: GatewayConfig.VendorEntry) async throws -> Data {
        calls.withLock { $0.append("bootstrap \(vendor.id) v\(request.planVersion)") }
        let v = self.vendor(vendor.id)
        if let g = v.bootstrapGate { await g.wait() }
        // What the vendor says once the gate opens (a test may have changed it meanwhile).
        if let f = self.vendor(vendor.id).failure { throw f }
        let bundle = BootstrapBundle(kind: .none, gatewayID: request.gatewayID, vendor: vendor.id, planVersion: request.planVersion,
                                     expiresAt: Date().addingTimeInterval(600))
        return try WireJSON.encoder().encode(try PlanSigner(privateKey: v.key).sign(bundle))
    }

    func report(_ report: ProvisioningReport, to vendor: GatewayConfig.VendorEntry) async throws {
        reports.withLock { $0.append(report) }
    }
}

/// A delivery driver that records what it was asked and can hold a converge until a test opens a gate.
final class FakeDelivery: DeliveryDriver, Sendable {
    let gates = Mutex<[String: Gate]>([:])
    let phases = Mutex<[String]>([])
    let recovered = Mutex<[DeliveryTransaction]>([])
    let failNext = Mutex<[String: Error]>([:])
    /// Every delivery of the vendor fails with it while set.
    let failing = Mutex<[String: Error]>([:])

    func hold(_ vendor: String) -> Gate {
        let g = Gate()
        gates.withLock { $0[vendor] = g }
        return g
    }

    func deliver(_ job: DeliveryJob, journal: @escaping DeliveryJournal) async throws -> DeliveryReport {
        try await journal(.snapshotting)
        try await journal(.converging)
        phases.withLock { $0.append("\(job.vendor) converging v\(job.planVersion)") }
        if let g = gates.withLock({ $0[job.vendor] }) { await g.wait() }
        if let e = failNext.withLock({ $0.removeValue(forKey: job.vendor) }) { throw e }
        if let e = failing.withLock({ $0[job.vendor] }) { throw e }
        try await journal(.committing)
        phases.withLock { $0.append("\(job.vendor) delivered v\(job.planVersion)") }
        return DeliveryReport(result: .applied, provisioner: "fake", converge: nil, validation: [:], failingControls: [], controls: nil,
                              snapshot: job.snapshot, restoredSnapshot: nil, message: "ok")
    }

    func recover(_ txn: DeliveryTransaction, container: String, lock: AsyncMutex) async throws {
        recovered.withLock { $0.append(txn) }
    }
}

/// A gateway core wired to fakes, with its own temporary store. ``restart()`` makes a new agent over
/// the same store, LXD and node files, as a process restart would.
final class Rig {
    static let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
    let keys: [String: Curve25519.Signing.PrivateKey]
    let config: GatewayConfig
    let store: GatewayStore
    let host = FakeHost()
    let vendors: FakeVendors
    let files = MemoryNodeFiles()
    var registry: DeviceRegistry
    let delivery = FakeDelivery()
    /// LXD's events, when the agent reads containers through an ``InstanceCache`` (`cached: true`).
    let events: FakeEvents?
    var agent: GatewayAgent
    let now: @Sendable () -> Date
    let tickInterval: Duration

    /// Vendors `acme` (USB 0403) and `globex` (USB 10c4), both `policy`.
    /// - Parameter controlSocket: where a test serves the control API (default: the sample's path, unused).
    /// - Parameter now: the agent's clock; `tickInterval` how often its workers are woken to retry.
    init(policy: GatewayConfig.Policy = .ask, appUpdates: GatewayConfig.UpdatePolicy = .auto, apps: Bool = false,
         controlSocket: String? = nil, cached: Bool = false, now: @escaping @Sendable () -> Date = { Date() },
         tickInterval: Duration = .milliseconds(50)) throws {
        self.now = now
        self.tickInterval = tickInterval
        events = cached ? FakeEvents() : nil
        let keys = ["acme": Curve25519.Signing.PrivateKey(), "globex": Curve25519.Signing.PrivateKey()]
        self.keys = keys
        var config = Sample.config(policy: policy)
        config.vendors = [
            .init(id: "acme", match: [.init(vendorID: "0403", productID: nil)], daemonURL: "https://acme.example",
                  publicKey: Keys.encode(keys["acme"]!.publicKey), policy: policy, appUpdates: appUpdates),
            .init(id: "globex", match: [.init(vendorID: "10c4", productID: nil)], daemonURL: "https://globex.example",
                  publicKey: Keys.encode(keys["globex"]!.publicKey), policy: policy, appUpdates: appUpdates),
        ]
        config.retrySeconds = 0.05
        config.maxRetrySeconds = 0.4
        config.delivery.maxRetrySeconds = 0.4
        config.deviceDirectory = "/run/test-devices"
        if let controlSocket { config.controlSocket = controlSocket }
        self.config = config
        store = try GatewayStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UUID().uuidString).sqlite").path)
        vendors = FakeVendors(keys)
        (registry, agent) = Self.makeAgent(config: config, store: store, host: host, vendors: vendors, files: files, delivery: delivery,
                                           events: events, now: now, tickInterval: tickInterval)
        for id in ["acme", "globex"] {
            vendors.update(id) { v in v.plan = { a in Rig.plan(vendor: id, serials: a.map { [$0.device.serial] } ?? ["\(id.uppercased())-1"], apps: apps) } }
        }
    }

    static func makeAgent(config: GatewayConfig, store: GatewayStore, host: FakeHost, vendors: FakeVendors, files: MemoryNodeFiles,
                          delivery: FakeDelivery, events: FakeEvents? = nil, now: @escaping @Sendable () -> Date = { Date() },
                          tickInterval: Duration = .milliseconds(50)) -> (DeviceRegistry, GatewayAgent) {
        let registry = DeviceRegistry(directory: config.deviceDirectory, files: files)
        let cache = events.map { InstanceCache(host: host, events: $0, logger: Logger(label: "test"), settle: .zero) }
        let env = AgentEnvironment(config: config, store: store, identity: Self.gateway, host: cache ?? host, vendors: vendors,
                                   registry: registry, delivery: delivery, logger: Logger(label: "test"), now: now, instances: cache)
        return (registry, GatewayAgent(environment: env, tickInterval: tickInterval))
    }

    /// A new agent (fresh workers and registry) over the same store, LXD and node files.
    func restart() {
        (registry, agent) = Self.makeAgent(config: config, store: store, host: host, vendors: vendors, files: files, delivery: delivery,
                                           events: events, now: now, tickInterval: tickInterval)
    }

    /// Waits until the vendor's container runs with the device inside and the plan is applied.
    func provisioned(_ vendor: String, _ serial: String, timeout: Duration = .seconds(30)) async throws {
        try await until("\(serial) inside iotgw-\(vendor)", timeout: timeout) {
            guard let i = host.instanceNow("iotgw-\(vendor)"), i.isRunning, i.devices[ContainerPlanner.deviceName(serial: serial)] != nil else {
                return false
            }
            return try await store.vendorState(vendor)?.appliedVersion != nil
        }
    }

    static func usbID(_ vendor: String) -> (String, String) { vendor == "acme" ? ("0403", "6001") : ("10c4", "ea60") }

    /// One issue time for every plan a fake vendor signs in this process: a vendor answers the same version
    /// with the very same bytes (the real iot-daemon keeps its signed plan), and the gateway refuses a version
    /// reused with other content. With `Date()` here, two asks a second apart got different bytes for version 1
    /// (CI on 6257549 failed whileLXDIsDown... on exactly that).
    static let issuedAt = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))

    static func plan(vendor: String, version: Int = 1, serials: [String], apps: Bool = false, path: String = "/dev/ttyUSB0",
                     kind: DeviceGrant.Kind = .unixChar) -> ProvisioningPlan {
        let (vid, pid) = usbID(vendor)
        return ProvisioningPlan(vendor: vendor, gatewayID: gateway.id, version: version, issuedAt: issuedAt, expiresAt: issuedAt.addingTimeInterval(86_400),
                                container: ContainerSpec(name: "iotgw-\(vendor)",
                                                         image: ImageRef(alias: "iotgw-busybox", fingerprint: String(repeating: "a", count: 64)),
                                                         limits: ResourceLimits(cpus: 1, memoryMiB: 128, diskMiB: 512, processes: 100), network: .nat),
                                devices: serials.enumerated().map { i, s in
                                    DeviceGrant(serial: s, vendorID: vid, productID: pid, kind: kind, path: kind == .usb ? nil : (i == 0 ? path : path + "-\(i)"))
                                },
                                apps: apps ? [AppSpec(name: "agent", version: "1.0.0", runList: ["recipe[agent]"])] : [])
    }

    /// Plugs a USB serial adapter: its usb_device and its tty, as udev reports them.
    @discardableResult
    func plug(_ vendor: String, serial: String, tty: String = "ttyUSB0", minor: UInt32 = 0) async throws -> (usb: String, tty: String) {
        let (vid, pid) = Self.usbID(vendor)
        let usb = "/sys/devices/usb1/1-\(serial)", ttyPath = usb + "/1-\(serial):1.0/\(tty)"
        try await agent.handle(.added(PluggedDevice(syspath: usb, subsystem: "usb", devnode: nil, vendorID: vid, productID: pid, serial: serial)))
        try await agent.handle(.added(PluggedDevice(syspath: ttyPath, subsystem: "tty", devnode: "/dev/\(tty)", vendorID: vid, productID: pid,
                                                    serial: serial, number: DeviceNumber(major: 188, minor: minor))))
        return (usb, ttyPath)
    }

    func unplug(_ device: (usb: String, tty: String)) async throws {
        try await agent.handle(.removed(syspath: device.tty))
        try await agent.handle(.removed(syspath: device.usb))
    }

    /// Runs the agent's workers (their lanes and ticks) while `body` runs.
    func running(_ body: () async throws -> Void) async throws {
        let workers = Array(agent.workers.values)
        let agent = agent
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in workers { group.addTask { await w.run() } }
            if let cache = agent.environment.instances {
                group.addTask { await cache.follow { agent.instanceChanged($0) } }
                try await until("LXD's events followed") { cache.isLive }
            }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(30))
                    for w in workers { await w.tick() }
                }
            }
            defer { for w in workers { w.stop() }; group.cancelAll() }
            try await body()
        }
    }

    func pending() async throws -> [PlanRecord] { try await store.plans(decision: .pending) }

    /// Waits for the one pending approval and approves it as the owner would (by its digest).
    func approvePending() async throws {
        try await until("an approval") { try await pending().count == 1 }
        let p = try #require(try await pending().first)
        try await store.decide(planID: p.id!, approve: true, by: "owner", digest: p.payloadSHA256)
        try await agent.decided(planID: p.id!)
    }
    /// Rows the store has inserted, updated or deleted so far (SQLite's total_changes on its one writer
    /// connection): unchanged across work that wrote nothing.
    func storeChanges() async throws -> Int {
        try await store.db.writeWithoutTransaction { $0.totalChangesCount }
    }

    func nodePath(_ vendor: String, _ serial: String) -> String {
        registry.path(vendor: vendor, device: ContainerPlanner.deviceName(serial: serial))
    }
}

/// Polls until `condition` holds (at most `timeout`: generous, as CI runs suites side by side on two cores).
func until(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("timed out waiting for \(what)")
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// LXD's events stream, fed by the test: each subscription is a new stream; `fail()` breaks the current one.
final class FakeEvents: InstanceEventSource, Sendable {
    let streams = Mutex<[AsyncThrowingStream<LXDChange, any Error>.Continuation]>([])
    var subscriptions: Int { streams.withLock { $0.count } }

    func followInstanceEvents(subscribed: @Sendable () async -> Void, changed: @Sendable (LXDChange) async -> Void) async throws {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: LXDChange.self)
        streams.withLock { $0.append(continuation) }
        await subscribed()
        for try await e in stream { await changed(e) }
    }

    /// LXD reports a lifecycle event about `name`.
    func send(_ name: String, _ action: String) { send(.instance(InstanceEvent(name: name, action: action))) }
    func send(_ change: LXDChange) { streams.withLock { _ = $0.last?.yield(change) } }
    /// The stream breaks (LXD was killed, say).
    func fail() { streams.withLock { $0.last?.finish(throwing: LXDError(code: .unreachable, message: "fake LXD went away")) } }
}
