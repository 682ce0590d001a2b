import Foundation
import Synchronization
import GatewayProtocol
import Logging
import LXD

/// What every vendor worker shares: configuration, the store, the device registry and the ports to
/// LXD and the vendors. Injected, so the workers run against fakes in unit tests.
public struct AgentEnvironment: Sendable {
    public var config: GatewayConfig
    public var store: GatewayStore
    public var identity: GatewayIdentity
    public var host: any ContainerHost
    public var vendors: any VendorAPI
    public var registry: DeviceRegistry
    public var delivery: any DeliveryDriver
    /// The host firewall isolating vendor containers (checked before a container with network is changed).
    public var network: any NetworkGuard
    public var logger: Logger
    public var now: @Sendable () -> Date
    /// Connections to the vendors' brokers (vendors with `fleet` in the configuration); nil: no fleet channel.
    public var fleetLinks: FleetLinkFactory?
    /// Reads a vendor container's journal for the live log relay.
    public var journal: (any ContainerJournal)?
    /// What the gateway counts, for the owner (`GET /v1/metrics` on the control socket).
    public var metrics: GatewayMetrics
    /// The copy of LXD's instances that `host` answers from, if it is one: the agent follows LXD's
    /// events for it and wakes a vendor's reconcile when its container changed (by hand, say).
    public var instances: InstanceCache?
    /// Serializes container creation across vendors until the new container holds its id map: LXD 5.0
    /// allocates an isolated id map while another container being created still has none, so two
    /// creations at once got maps outside the host's subordinate ids (the container never starts) or
    /// could get the same one. The image's copy and shift, after that, overlap freely: a vendor's large
    /// image does not hold up another vendor's creation.
    public let creations = AsyncMutex()
    /// Downloads plans' images from vendors' image servers (nil: images must already be on the gateway).
    public var images: ImageFetcher?
    /// Checks free space before creations and deliveries (nil: unchecked, as in unit tests).
    public var disk: DiskGuard?
    /// Prunes unused downloaded images and old journal rows (nil: nothing is pruned).
    public var pruner: Pruner?
    /// Each vendor's restricted LXD project (nil: every container in the default project).
    public var projects: VendorProjects?
    /// Moves managed containers into (or out of) their projects at start, before any worker runs (nil: nothing is moved).
    public var placement: ProjectPlacement?
    /// Exports an orphan before it is deleted (`orphans.exportDirectory`; nil: no export).
    public var exporter: (@Sendable (String) async throws -> String)?
    /// Set once `placement` ran: container lanes wait for it (see ``ContainersPlaced``).
    public let containersPlaced: ContainersPlaced
    /// Whether LXD answers: lanes that find it away wait for it instead of failing (see ``LXDAvailability``).
    public let lxdAvailability: LXDAvailability

    public init(config: GatewayConfig, store: GatewayStore, identity: GatewayIdentity, host: any ContainerHost, vendors: any VendorAPI,
                registry: DeviceRegistry, delivery: any DeliveryDriver, network: any NetworkGuard = NoNetworkGuard(), logger: Logger,
                now: @escaping @Sendable () -> Date = { Date() }, fleetLinks: FleetLinkFactory? = nil, journal: (any ContainerJournal)? = nil,
                metrics: GatewayMetrics? = nil, images: ImageFetcher? = nil, disk: DiskGuard? = nil, pruner: Pruner? = nil,
                projects: VendorProjects? = nil, instances: InstanceCache? = nil, placement: ProjectPlacement? = nil,
                exporter: (@Sendable (String) async throws -> String)? = nil) {
        self.projects = projects
        self.placement = placement
        self.exporter = exporter
        containersPlaced = ContainersPlaced(placement == nil)
        self.config = config
        self.store = store
        self.identity = identity
        self.host = host
        self.vendors = vendors
        self.registry = registry
        self.delivery = delivery
        self.network = network
        self.logger = logger
        self.now = now
        self.fleetLinks = fleetLinks
        self.journal = journal
        self.metrics = metrics ?? GatewayMetrics(vendors: config.vendors.map(\.id))
        self.images = images
        self.disk = disk
        self.pruner = pruner
        lxdAvailability = LXDAvailability(backoff: Backoff(first: config.retrySeconds, max: config.maxRetrySeconds))
        self.instances = instances
    }

    var backoff: Backoff { Backoff(first: config.retrySeconds, max: config.maxRetrySeconds) }
    var deliveryBackoff: Backoff { Backoff(first: config.retrySeconds, max: config.delivery.maxRetrySeconds) }
}

/// Everything that happens for one vendor, in one place: announcing its devices, syncing and
/// deciding its plans, reconciling its container, delivering its apps and reporting back.
///
/// Each worker runs three lanes of its own, so nothing one vendor does (a slow or failing daemon, an
/// hour-long converge, a reconcile that throws) delays another vendor, and within a vendor a running
/// delivery never delays its device changes:
/// - **exchange**: talks to the vendor (announcements, plan sync, reports), with backoff;
/// - **reconcile**: makes the container match the approved plan and the devices plugged in now;
/// - **delivery**: bootstraps, converges, validates, keeps or rolls back, crash-safe, with backoff.
///
/// Lanes are woken by coalescing signals; their state lives in the store, so a signal is only "look
/// again". Container changes of the reconcile and delivery lanes are serialized by ``containerLock``.
public actor VendorWorker {
    public nonisolated let vendor: GatewayConfig.VendorEntry
    nonisolated let env: AgentEnvironment
    nonisolated let containerLock = AsyncMutex()
    nonisolated let logger: Logger

    private nonisolated let reconcileWake: AsyncStream<Void>.Continuation
    private nonisolated let exchangeWake: AsyncStream<Void>.Continuation
    private nonisolated let deliveryWake: AsyncStream<Void>.Continuation
    private let reconcileSignals: AsyncStream<Void>
    private let exchangeSignals: AsyncStream<Void>
    private let deliverySignals: AsyncStream<Void>

    /// Reports waiting for the exchange lane (bounded: the oldest go first when a vendor stays down).
    var outbox: [ProvisioningReport] = []
    static let outboxLimit = 64
    /// The exchange lane syncs the plan on its next pass whatever the interval.
    var syncRequested = false
    /// The last failure reported to the vendor from reconcile, so a retry loop does not flood it.
    var lastReportedFailure: String?
    /// Whether the vendor's project and the storage pool were checked (once per run; see ``checkPool()``).
    var poolChecked = false
    /// Whether the storage pool was seen to enforce disk limits (read once per run).
    var poolEnforcesLimits = false
    /// The pool's free space, read while the vendor answered an announcement (see ``readPoolAhead()``).
    var poolReading: DiskGuard.Reading?
    /// LXD restarted: its copies of passed-in nodes may be stale, so every device is passed in afresh.
    var refreshDevices = false
    /// The vendor's broker is connected: plans are pushed, so polling slows down to `fleet.pollSeconds`.
    var fleetConnected = false
    /// When the exchange lane has something due again (an announcement's retry, the next plan sync), as its
    /// last pass found; nil: at the next tick. See ``tick()``.
    var exchangeNextLook: Date?
    /// Lanes whose last pass failed: the next tick wakes them again (see ``tick()``).
    nonisolated let failedPasses = Mutex(Set<GatewayMetrics.Lane>())
    /// Passes each lane has run (what an idle gateway must not add to).
    nonisolated let passes = Mutex([GatewayMetrics.Lane: Int]())
    /// The newest plan the vendor's broker pushed, waiting for the exchange lane.
    var pushedPlan: Data?
    /// When the exchange lane last took a pushed plan (see ``pushInterval``).
    var pushTakenAt: ContinuousClock.Instant?
    /// At most one pushed plan is checked in this time: the broker is the vendor's, and each check (a
    /// signature, up to 256 KiB of JSON, a warning when refused, a write when new) is the owner's
    /// processor, log and disk. Pushes in between replace the one waiting; the next tick takes it.
    static let pushInterval: Duration = .seconds(1)
    /// The approved plan last decoded, by its plan id (see ``approvedPlan(of:)``).
    var approved: (id: Int64, plan: ProvisioningPlan)?

    public init(vendor: GatewayConfig.VendorEntry, environment: AgentEnvironment) {
        self.vendor = vendor
        env = environment
        var l = environment.logger
        l[metadataKey: "iotgw.vendor"] = "\(vendor.id)"
        logger = l
        (reconcileSignals, reconcileWake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (exchangeSignals, exchangeWake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (deliverySignals, deliveryWake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public nonisolated var container: String { ProvisioningPlan.containerName(forVendor: vendor.id) }
    nonisolated var store: GatewayStore { env.store }
    nonisolated var now: Date { env.now() }

    // MARK: - Lanes

    /// Runs the three lanes until cancelled. A lane's failure is logged and retried; it never ends the worker.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.lane(.reconcile, self.reconcileSignals) { try await $0.reconcilePass() } }
            group.addTask { await self.lane(.exchange, self.exchangeSignals) { try await $0.exchangePass() } }
            group.addTask { await self.lane(.delivery, self.deliverySignals) { try await $0.deliveryPass() } }
        }
    }

    nonisolated func lane(_ name: GatewayMetrics.Lane, _ signals: AsyncStream<Void>,
                          _ pass: @Sendable (VendorWorker) async throws -> Void) async {
        for await _ in signals {
            if Task.isCancelled { break }
            // Containers may still be on their way to their projects: the agent wakes this lane once they are there.
            if name != .exchange && !env.containersPlaced.isSet { continue }
            env.metrics.lane(vendor: vendor.id, name, busy: true)
            passes.withLock { $0[name, default: 0] += 1 }
            do {
                try await pass(self)
                _ = failedPasses.withLock { $0.remove(name) }
            } catch {
                _ = failedPasses.withLock { $0.insert(name) }
                logger.warning("lane pass failed", metadata: ["iotgw.lane": "\(name.rawValue)", "iotgw.error": "\(error.safeDescription)"])
            }
            env.metrics.lane(vendor: vendor.id, name, busy: false)
        }
    }

    /// Ends the lanes (their loops finish after the current pass).
    public nonisolated func stop() {
        reconcileWake.finish()
        exchangeWake.finish()
        deliveryWake.finish()
    }

    public nonisolated func kickReconcile() { reconcileWake.yield() }
    public nonisolated func kickExchange() { exchangeWake.yield() }
    public nonisolated func kickDelivery() { deliveryWake.yield() }

    /// Periodic: wakes each lane that has something due (retries, plan sync, a pass that failed). Never waits.
    ///
    /// A lane with nothing due is not woken: every other reason to run one wakes it where it arises (a plug,
    /// a plan, a reconcile done, LXD back, the owner's decision, the vendor's command). So an idle gateway's
    /// tick runs no lane at all, and the code of their passes stays out of the memory an idle trim gave back
    /// (37 page faults after a trim, about 1.5 MB, when they were woken every 2 s).
    public func tick() async {
        let t = now
        let failed = failedPasses.withLock { f in defer { f.removeAll() }; return f }
        if failed.contains(.exchange) || syncRequested || pushedPlan != nil || !outbox.isEmpty || exchangeLookDue(at: t) {
            kickExchange()
        }
        // While LXD is away nothing of the container can be done; the agent wakes the lanes when it is back.
        guard !env.lxdAvailability.isDown else { return }
        if failed.contains(.delivery) { kickDelivery() }
        guard let s = try? await store.vendorState(vendor.id), s.approvedPlanID != nil else { return }
        // A failed reconcile is retried when due (a failed delivery backs off in its own lane).
        if s.reconcileAttempts > 0, StoredTime.isDue(s.nextReconcileAt, at: now) { kickReconcile() }
        // So is a failed rebuild (the old container runs on meanwhile, so the vendor state shows no reconcile failure).
        if s.appliedVersion != nil, let r = try? await store.rebuildTransaction(vendor.id), r.phase == .failed,
           StoredTime.isDue(r.nextAttemptAt, at: now) {
            kickReconcile()
        }
        // A failed delivery's retry (a first delivery is woken by the reconcile that applied its plan).
        if s.deliveryAttempts > 0, StoredTime.isDue(s.nextDeliveryAt, at: now) { kickDelivery() }
    }

    /// Whether the exchange lane has something due at `t` (see ``exchangeNextLook``). Never later than the
    /// longest sync interval from now, whatever the clock did meanwhile.
    func exchangeLookDue(at t: Date) -> Bool {
        guard let next = exchangeNextLook else { return true }
        let longest = max(env.config.planSyncSeconds, vendor.fleet?.pollSeconds ?? 0)
        // (A second of slack: stored times are rounded to the millisecond, so one just set can lie beyond it.)
        return StoredTime.isDue(next, at: t) || next.timeIntervalSince(t) > longest + 1
    }

    // MARK: - Devices (called by the agent; quick, never waits on a lane)

    /// udev reported one of this vendor's devices (already recorded by the agent).
    public func deviceAdded(syspath: String) async throws {
        guard let rec = try await store.device(syspath), rec.vendor == vendor.id else { return }
        guard let serial = rec.serial, !serial.isEmpty else {
            try await store.setDeviceState(syspath, .rejected, error: "device has no serial number; vendors identify devices by serial")
            return
        }
        guard Fields.serial.isValid(serial) else {
            try await store.setDeviceState(syspath, .rejected, error: "device serial \(Fields.quote(serial)) is not one a vendor can be asked about")
            return
        }
        // The approved plan first: a denial carried over from an earlier plan does not outweigh a later approval.
        if let plan = try await approvedPlan(), plan.devices.contains(where: { $0.serial == serial }) {
            // Replug of a device the owner already approved: straight back into its container.
            try await store.setDeviceState(syspath, .attaching)
            kickReconcile()
            return
        }
        if rec.state == .denied { return }
        // A USB serial adapter shows up twice (usb_device and its tty): one announcement per serial.
        if let twin = try await store.devices().first(where: {
            $0.syspath != syspath && $0.present && $0.serial == serial && $0.vendor == vendor.id
                && [.announcing, .awaitingApproval, .denied, .rejected].contains($0.state)
        }) {
            try await store.setDeviceState(syspath, twin.state, error: twin.lastError, nextAttemptAt: twin.nextAttemptAt)
            return
        }
        // Due now: no time, not `now`. Stored times are rounded to the millisecond, so `now` could come back
        // up to half a millisecond later, not yet due for an exchange pass starting at once: the device then
        // waited for the next tick (`retrySeconds`, 2 s): 6 of 72 rounds of `scripts/bench-provision`.
        try await store.setDeviceState(syspath, .announcing, nextAttemptAt: nil, attempts: 0)
        kickExchange()
    }

    /// udev reported an unplug (the agent removed the device's nodes already).
    public nonisolated func deviceRemoved() { kickReconcile() }

    /// LXD restarted. While it was down it did not follow changes of the gateway's nodes (an unplug,
    /// say), so every managed device is removed and added again, which makes LXD copy the nodes anew.
    /// Also wakes the delivery lane: a delivery LXD's outage interrupted is finished now.
    public func lxdRestarted() {
        refreshDevices = true
        kickReconcile()
        kickDelivery()
    }

    /// An LXD call of a lane failed because LXD is away: the work stays as it is (nothing recorded as
    /// failed) until the agent sees LXD back and calls ``lxdRestarted()``.
    func waitForLXD(_ error: any Error, lane: GatewayMetrics.Lane) {
        if env.lxdAvailability.markDown(error.safeDescription, at: now) {
            logger.warning("LXD is down: waiting for it", metadata: ["iotgw.lane": "\(lane.rawValue)", "iotgw.error": "\(error.safeDescription)"])
        } else {
            logger.info("LXD still down: work waits", metadata: ["iotgw.lane": "\(lane.rawValue)"])
        }
    }

    // MARK: - Plans

    /// The vendor's approved plan, decoded from the stored signed bytes.
    public func approvedPlan() async throws -> ProvisioningPlan? {
        try await approvedPlan(of: try await store.vendorState(vendor.id))
    }

    /// The approved plan of a vendor state already read. Read and decoded once per approved plan id:
    /// a stored plan's signed bytes never change (rows are only inserted, a decision sets only its
    /// `decision`; ids are never reused), so the id stands for the bytes, and a new approval is a new id.
    func approvedPlan(of state: VendorStateRecord?) async throws -> ProvisioningPlan? {
        guard let id = state?.approvedPlanID else { return nil }
        if let cached = approved, cached.id == id { return cached.plan }
        guard let rec = try await store.plan(id: id) else { return nil }
        let plan = try GatewayAgent.decodePlan(rec)
        approved = (id, plan)
        return plan
    }

    /// After the owner (or the policy) decided on a plan.
    public func decided(planID: Int64) async throws {
        guard let rec = try await store.plan(id: planID), rec.vendor == vendor.id else { return }
        if rec.decision == .approved || rec.decision == .denied {
            env.metrics.approval(vendor: vendor.id, approved: rec.decision == .approved, by: rec.decidedBy)
        }
        switch rec.decision {
        case .approved:
            try await markAwaiting(as: .attaching, error: nil)
            // A device the owner said no to in an earlier plan and yes to now (this plan lists it, the owner saw it
            // in the prompt): the yes is the newer decision. Unplugged ones too, so a replug does not carry the no.
            let listed = Set(try GatewayAgent.decodePlan(rec).devices.map(\.serial))
            for d in try await store.devices() where d.vendor == vendor.id && d.state == .denied && d.serial.map(listed.contains) == true {
                try await store.setDeviceState(d.syspath, d.present ? .attaching : .detached, error: nil)
            }
            kickReconcile()
        case .denied:
            try await markAwaiting(as: .denied, error: "denied by \(rec.decidedBy ?? "owner")")
            enqueue(report(planVersion: rec.version, outcome: .denied))
        default:
            return
        }
    }

    /// Moves the vendor's present devices that wait for a decision to `state`. Checked again in the write:
    /// the owner's decision may land while a lane marks the same devices awaiting, and a denial must not be
    /// overwritten by the "awaiting" read before it (it was: the device then waited forever).
    func markAwaiting(as state: DeviceRecord.State, error: String?) async throws {
        let waiting: Set<DeviceRecord.State> = [.announcing, .awaitingApproval]
        let marked = try await store.devices().filter { $0.vendor == vendor.id && $0.present && waiting.contains($0.state) }
        try await store.setDeviceStates(marked.map(\.syspath), state, error: error, from: waiting)
    }

    // MARK: - Reports

    /// A report in the form the vendor validates (`ProvisioningReport.validate`): text escaped and cut.
    func report(planVersion: Int, outcome: ProvisioningReport.Outcome, error: String? = nil, addresses: [String] = [],
                attached: [String] = [], delivery: DeliverySummary? = nil, aboutContainer: Bool = true) -> ProvisioningReport {
        ProvisioningReport(gatewayID: env.identity.id, vendor: vendor.id, planVersion: planVersion, outcome: outcome,
                           container: aboutContainer && outcome != .denied ? container : nil,
                           addresses: addresses.filter(Fields.address.isValid), attachedDevices: attached,
                           error: error.map { Fields.displayText($0, max: ProvisioningReport.maxTextLength) }, delivery: delivery)
    }

    /// Queues a report for the exchange lane (reports never wait on the vendor in other lanes).
    func enqueue(_ r: ProvisioningReport) {
        outbox.append(r)
        if outbox.count > Self.outboxLimit { outbox.removeFirst(outbox.count - Self.outboxLimit) }
        env.metrics.reportsQueued(vendor: vendor.id, outbox.count)
        kickExchange()
    }

    func takeOutbox() -> [ProvisioningReport] {
        defer {
            outbox.removeAll()
            env.metrics.reportsQueued(vendor: vendor.id, 0)
        }
        return outbox
    }
}
