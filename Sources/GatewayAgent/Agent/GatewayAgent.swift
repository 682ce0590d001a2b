import Foundation
import GatewayProtocol
import Logging
import LXD
import ServiceLifecycle
import Synchronization

/// The gateway's core: records what udev reports in the shared device registry and hands each
/// vendor's work to that vendor's ``VendorWorker``.
///
/// The agent itself only does quick things, in udev order: it records a device, removes the nodes of
/// an unplugged device at once (so a device leaves every container before anything else happens),
/// and wakes the device's vendor. Everything slow (vendors' daemons, LXD operations, converges) runs
/// in the workers, one per vendor, so no vendor's work waits behind another's.
public final class GatewayAgent: Service, Sendable {
    public enum Event: Sendable {
        case added(PluggedDevice)
        case removed(syspath: String)
        /// After start-up enumeration: everything not in `present` was unplugged while we were down.
        case sweep(present: Set<String>)
    }

    public let config: GatewayConfig
    public let store: GatewayStore
    public let identity: GatewayIdentity
    public let registry: DeviceRegistry
    /// LXD, for the owner's status views.
    public let host: any ContainerHost
    let workers: [String: VendorWorker]
    /// The same workers by their container's name.
    let workersByContainer: [String: VendorWorker]
    /// Fleet channels of the vendors with a broker (made in `run`).
    let channels = Mutex<[String: FleetChannel]>([:])
    let environment: AgentEnvironment
    let logger: Logger
    let now: @Sendable () -> Date
    let tickInterval: Duration
    let events: AsyncStream<Event>
    let input: AsyncStream<Event>.Continuation
    let network: any NetworkGuard
    /// Whether LXD answers (shared with the workers).
    var lxd: LXDAvailability { environment.lxdAvailability }
    /// Retires the containers of vendors no longer configured, at start and every `orphans.checkSeconds`.
    public let orphans: OrphanSweeper

    public init(environment env: AgentEnvironment, tickInterval: Duration? = nil) {
        environment = env
        config = env.config
        store = env.store
        identity = env.identity
        registry = env.registry
        host = env.host
        logger = env.logger
        now = env.now
        self.tickInterval = tickInterval ?? .milliseconds(Int64(env.config.retrySeconds * 1000))
        workers = Dictionary(uniqueKeysWithValues: env.config.vendors.map { ($0.id, VendorWorker(vendor: $0, environment: env)) })
        workersByContainer = Dictionary(workers.values.map { ($0.container, $0) }, uniquingKeysWith: { a, _ in a })
        network = env.network
        (events, input) = AsyncStream.makeStream(of: Event.self)
        let store = env.store
        orphans = OrphanSweeper(host: env.host, gatewayID: env.identity.id, config: env.config, logger: env.logger, now: env.now,
                                projects: env.projects, exporter: env.exporter) {
            try await Self.withdrawnVendors(store)
        }
    }

    /// Queues a udev event; never blocks.
    public func submit(_ event: Event) { input.yield(event) }

    /// The worker of a vendor in the owner's configuration.
    public func worker(_ vendor: String) -> VendorWorker? { workers[vendor] }

    public func run() async throws {
        try registry.prepare()
        do { try await network.ensure() } catch {
            // Not fatal: vendors without network still work; a container with network waits until it is in place.
            logger.error("vendor network isolation not in place", metadata: ["iotgw.error": "\(error.safeDescription)"])
        }
        await withTaskGroup(of: Void.self) { group in
            for w in workers.values { group.addTask { await w.run() } }
            group.addTask { [self] in
                // Containers first go where `lxd.projects` says, or a worker would not find its own and make another;
                // until then the container lanes skip their passes (vendors and approvals go on), then all are woken.
                await placeContainers()
                for w in workers.values {
                    w.kickReconcile()
                    w.kickDelivery()
                }
            }
            if let instances = environment.instances {
                group.addTask { [self] in await instances.follow { self.instanceChanged($0) } }
            }
            for channel in makeChannels() { group.addTask { await channel.run() } }
            group.addTask { [self] in await IdleMemory.watch(quietSeconds: config.memory.idleTrimSeconds, logger: logger) }
            group.addTask { [self] in
                // Retries (vendor unreachable, LXD down, deliveries backing off) and plan syncs are driven by a tick.
                var nextOrphanSweep = now()
                while !Task.isCancelled {
                    if now() >= nextOrphanSweep, environment.containersPlaced.isSet {
                        do { try await orphans.sweep() } catch {
                            logger.warning("orphans not checked", metadata: ["iotgw.error": "\(error.safeDescription)"])
                        }
                        do { try await environment.pruner?.prune() } catch {
                            logger.warning("nothing pruned", metadata: ["iotgw.error": "\(error.safeDescription)"])
                        }
                        nextOrphanSweep = now().addingTimeInterval(config.orphans.checkSeconds)
                    }
                    do { try await Task.sleep(for: tickInterval) } catch { break }
                    await watchLXD()
                    for w in workers.values { await w.tick() }
                }
            }
            for await event in events.cancelOnGracefulShutdown() {
                do { try await handle(event) } catch {
                    logger.error("event failed", metadata: ["iotgw.event": "\(event)", "iotgw.error": "\(error.safeDescription)"])
                }
            }
            for w in workers.values { w.stop() }
            group.cancelAll()
        }
    }

    /// Runs ``ProjectPlacement`` until it succeeds (LXD away or a move refused: logged, tried again after the
    /// retry interval), or the agent stops.
    func placeContainers() async {
        guard let placement = environment.placement else { return environment.containersPlaced.set() }
        var attempts = 0
        while !Task.isCancelled {
            do {
                try await placement.run()
                environment.containersPlaced.set()
                return
            } catch {
                attempts += 1
                // LXD away is reported by the status already (and is what a gateway without LXD looks like at boot).
                logger.log(level: error.isLXDOutage ? .debug : .error, "containers not moved to their projects yet; vendors wait",
                           metadata: ["iotgw.error": "\(error.safeDescription)"])
                let wait = environment.backoff.delay(afterAttempts: attempts)
                do { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) } catch { return }
            }
        }
    }

    /// One reconcile pass of every vendor, all at once as their lanes would run them, for tools that
    /// drive the core without ``run()`` (benchmarks). Never call it while ``run()`` runs: a vendor's
    /// passes would overlap. Returns the vendors whose pass failed, with the error.
    public func reconcileAllOnce() async -> [String: any Error] {
        await withTaskGroup(of: (String, (any Error)?).self) { group in
            for (id, w) in workers {
                group.addTask {
                    do { try await w.reconcilePass() } catch { return (id, error) }
                    return (id, nil)
                }
            }
            var failed: [String: any Error] = [:]
            for await (id, error) in group { if let error { failed[id] = error } }
            return failed
        }
    }

    /// LXD reported a change of a container (nil: of any container, or changes may have gone unseen):
    /// its vendor's reconcile looks again, so drift (a device removed by hand, a container stopped or
    /// deleted, its config edited) is repaired at once rather than at the next plug.
    func instanceChanged(_ container: String?) {
        guard let container else {
            // Also when LXD's events are followed again after the stream ended: LXD may have restarted.
            lxd.requestProbe()
            for w in workers.values { w.kickReconcile() }
            return
        }
        workersByContainer[container]?.kickReconcile()
    }

    /// The gateway software's version, as statuses report it.
    public static let version = "0.8.0"

    /// One fleet channel per vendor with a broker in the configuration. A channel that cannot be made
    /// (an unreadable certificate, say) is logged; that vendor's plans are then polled over HTTP only.
    func makeChannels() -> [FleetChannel] {
        guard let makeLink = environment.fleetLinks else { return [] }
        var made: [String: FleetChannel] = [:]
        for (id, worker) in workers.sorted(by: { $0.key < $1.key }) {
            guard let fleet = worker.vendor.fleet else { continue }
            do {
                made[id] = try FleetChannel(worker: worker, fleet: fleet, environment: environment, journal: environment.journal, makeLink: makeLink)
            } catch {
                logger.error("fleet channel not started", metadata: ["iotgw.vendor": "\(id)", "iotgw.error": "\(error.safeDescription)"])
            }
        }
        channels.withLock { $0 = made }
        return Array(made.values)
    }

    /// A vendor's fleet channel, if it has one.
    public func channel(_ vendor: String) -> FleetChannel? { channels.withLock { $0[vendor] } }

    /// Notices LXD going away and coming back (or restarting unseen: a new daemon pid). While it is down
    /// it is probed with backoff; when it answers again, every worker passes its devices in afresh (LXD
    /// does not follow node changes while it is down) and finishes the work the outage left waiting.
    func watchLXD() async {
        let at = now()
        guard lxd.probeDue(at: at, eventsLive: environment.instances?.isLive ?? false) else { return }
        let pid: Int
        do {
            guard let p = try await host.server().environment?.serverPID else {
                throw LXDError(code: .invalidResponse, message: "LXD did not say its pid")
            }
            pid = p
        } catch {
            let wasDown = lxd.isDown
            lxd.probeFailed(error.safeDescription, at: at)
            if !wasDown { logger.warning("LXD is down: waiting for it", metadata: ["iotgw.error": "\(error.safeDescription)"]) }
            return
        }
        guard case .back(let downFor) = lxd.probeSucceeded(pid: pid, at: now()) else { return }
        logger.notice("LXD is back: resuming work and passing devices in afresh",
                      metadata: ["lxd.pid": "\(pid)", "iotgw.downSeconds": "\(downFor.map { String(format: "%.1f", $0) } ?? "-")"])
        for w in workers.values { await w.lxdRestarted() }
    }

    /// What the gateway counts (rendered by the control socket's `GET /v1/metrics`).
    public var metrics: GatewayMetrics { environment.metrics }

    func handle(_ event: Event) async throws {
        switch event {
        case .added: metrics.udevEvent(.added)
        case .removed: metrics.udevEvent(.removed)
        case .sweep: metrics.udevEvent(.sweep)
        }
        switch event {
        case .added(let d): try await deviceAdded(d)
        case .removed(let syspath): try await deviceRemoved(syspath)
        case .sweep(let present): try await sweep(present)
        }
    }

    func deviceAdded(_ d: PluggedDevice) async throws {
        if let n = d.number { registry.plugged(syspath: d.syspath, number: n) }
        let previous = try await store.device(d.syspath)
        let vendor = d.vendorID.flatMap { vid in d.productID.flatMap { config.vendor(forUSB: vid, productID: $0) } }
        var rec = DeviceRecord(syspath: d.syspath, subsystem: d.subsystem, devnode: d.devnode, vendorID: d.vendorID,
                               productID: d.productID, serial: d.serial, manufacturer: d.manufacturer, product: d.product,
                               busPath: d.busPath, vendor: vendor?.id, present: true, state: .unknown, lastError: nil,
                               attempts: 0, nextAttemptAt: nil, updatedAt: now())
        // The owner's "no" sticks to the device across replugs.
        if let previous, previous.serial == d.serial, previous.vendor == vendor?.id, previous.state == .denied {
            rec.state = .denied
            rec.lastError = previous.lastError
        }
        try await store.save(rec)
        guard let vendor, let worker = workers[vendor.id] else {
            logger.info("device ignored: no trusted vendor", metadata: ["udev.syspath": "\(d.syspath)",
                                                                        "usb.id": "\(d.vendorID ?? "?"):\(d.productID ?? "?")"])
            return
        }
        try await worker.deviceAdded(syspath: d.syspath)
    }

    func deviceRemoved(_ syspath: String) async throws {
        // First of all: the device's nodes go, so it leaves its container now, whatever the worker is doing.
        let removed = registry.unplugged(syspath: syspath)
        guard var rec = try await store.device(syspath) else { return }
        rec.present = false
        if [.attached, .attaching].contains(rec.state) { rec.state = .detached }
        rec.updatedAt = now()
        try await store.save(rec)
        logger.info("device unplugged", metadata: ["udev.syspath": "\(syspath)", "iotgw.vendor": "\(rec.vendor ?? "-")",
                                                   "iotgw.nodesRemoved": "\(removed.count)"])
        if let v = rec.vendor { workers[v]?.deviceRemoved() }
    }

    func sweep(_ present: Set<String>) async throws {
        let gone = try await store.markOnlyPresent(present)
        for d in gone {
            registry.unplugged(syspath: d.syspath)
            logger.info("device gone while stopped", metadata: ["udev.syspath": "\(d.syspath)"])
        }
        // Node files from before the restart stay only where they stand for the same device now.
        var expected: [String: Set<String>] = [:]
        for d in try await store.devices() where d.present {
            guard let v = d.vendor, let serial = d.serial, workers[v] != nil else { continue }
            expected[registry.path(vendor: v, device: ContainerPlanner.deviceName(serial: serial)), default: []].insert(d.syspath)
        }
        registry.sweep(expected: expected)
        // Every vendor independently: one that fails does not keep the others from being reconciled.
        for w in workers.values {
            w.kickReconcile()
            w.kickDelivery()
        }
    }

    /// After the owner decided on an approval.
    public func decided(planID: Int64) async throws {
        guard let rec = try await store.plan(id: planID), let worker = workers[rec.vendor] else { return }
        try await worker.decided(planID: planID)
    }

    /// A stored plan, decoded from its signed bytes (verified when it was recorded).
    /// Vendors whose approved plan is a decommission.
    static func withdrawnVendors(_ store: GatewayStore) async throws -> Set<String> {
        Set(try await approvedPlans(store).filter(\.value.isDecommission).keys)
    }

    /// Every vendor's approved plan, by vendor (a stored plan that no longer decodes is left out).
    static func approvedPlans(_ store: GatewayStore) async throws -> [String: ProvisioningPlan] {
        var out: [String: ProvisioningPlan] = [:]
        for s in try await store.vendorStates() {
            guard let id = s.approvedPlanID, let rec = try await store.plan(id: id), let plan = try? decodePlan(rec) else { continue }
            out[s.vendor] = plan
        }
        return out
    }

    static func decodePlan(_ rec: PlanRecord) throws -> ProvisioningPlan {
        let signed = try WireJSON.decoder().decode(SignedPlan.self, from: rec.signedJSON)
        guard let payload = Data(base64Encoded: signed.payload) else {
            throw GatewayError(.corruptState, "stored plan \(rec.id ?? 0) is corrupt")
        }
        return try WireJSON.decoder().decode(ProvisioningPlan.self, from: payload)
    }
}
