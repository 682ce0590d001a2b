import GatewayProtocol
import Logging
import LXD

/// Performs planned steps against LXD and the device registry, journaling each before and after, so
/// a crash leaves a record of where it stopped; every step is idempotent, so re-planning after a
/// restart resumes.
public struct ContainerExecutor: Sendable {
    let host: any ContainerHost
    let registry: DeviceRegistry
    let store: GatewayStore
    let logger: Logger
    /// Held around every creation, shared by all vendors (see `AgentEnvironment.creations`).
    let creations: AsyncMutex
    /// Counts containers created and devices attached and detached (steps done, not planned).
    let metrics: GatewayMetrics?
    /// Downloads plans' images (nil: every image must already be on the gateway).
    let images: ImageFetcher?

    public init(host: any ContainerHost, registry: DeviceRegistry, store: GatewayStore, logger: Logger, creations: AsyncMutex = AsyncMutex(),
                metrics: GatewayMetrics? = nil, images: ImageFetcher? = nil) {
        self.host = host
        self.registry = registry
        self.store = store
        self.logger = logger
        self.creations = creations
        self.metrics = metrics
        self.images = images
    }

    public func observe(_ name: String, vendor: String) async throws -> ContainerObservation {
        let nodes = registry.nodes(vendor: vendor)
        do {
            return ContainerObservation(try await host.instance(name).instance, nodes: nodes)
        } catch let e as LXDError where e.code == .notFound {
            var absent = ContainerObservation.absent
            absent.nodes = nodes
            return absent
        }
    }

    /// Runs the steps in order; stops at the first failure and rethrows it.
    public func run(_ steps: [ProvisionStep], vendor: String, container: String) async throws {
        let clock = ContinuousClock()
        // Whether a step of this run created the container (it has never run).
        var created = false
        for step in steps {
            let kind = step.description.split(separator: " ").first.map(String.init) ?? ""
            try await store.journal(vendor: vendor, step: step.description, status: "started")
            await CrashPoint.pause("before:step:" + kind)
            let started = clock.now
            do {
                if try await perform(step, vendor: vendor, container: container, createdNow: created) { created = true }
                let took = started.duration(to: clock.now)
                try await store.journal(vendor: vendor, step: step.description, status: "done")
                CrashPoint.reached("step:" + kind)
                await CrashPoint.pause("step:" + kind)
                switch step {
                case .create(let s):
                    metrics?.containerCreated(vendor: vendor)
                    // Devices plugged in already go in with the create.
                    let devices = s.post.devices.keys.filter { $0.hasPrefix(ContainerPlanner.devicePrefix) }.count
                    if devices > 0 { metrics?.deviceAttached(vendor: vendor, count: devices) }
                case .attach: metrics?.deviceAttached(vendor: vendor)
                case .detach: metrics?.deviceDetached(vendor: vendor)
                default: break
                }
                logger.info("provision step done", metadata: ["iotgw.vendor": "\(vendor)", "iotgw.step": "\(step)",
                                                              "iotgw.ms": "\(Self.milliseconds(took))"])
            } catch {
                // An LXD outage leaves the step's fate unknown, not failed: the next pass observes and re-plans.
                try await store.journal(vendor: vendor, step: step.description, status: error.isLXDOutage ? "interrupted" : "failed",
                                        detail: error.safeDescription)
                logger.warning("provision step failed",
                               metadata: ["iotgw.vendor": "\(vendor)", "iotgw.step": "\(step)", "iotgw.error": "\(error.safeDescription)"])
                throw error
            }
        }
    }

    static func milliseconds(_ d: Duration) -> Int {
        Int(d / .milliseconds(1))
    }

    /// A vendor's new container must run as host ids no other container holds, whatever LXD chose: LXD 5.0
    /// can give two isolated containers created at the same moment the same map, and the gateway keeps its
    /// own creations apart but not another client's (the owner's `lxc`). Checked against every instance LXD
    /// has, in every project, before a container's first start (every create is followed by one, and so is a
    /// create a crash left unstarted): a container sharing ids is deleted before it ever ran, and the pass
    /// fails, so the next attempt creates it again with a map LXD picks afresh.
    func ensureOwnHostIDs(_ name: String) async throws {
        let all = try await host.listInstances(userFilter: [:])
        for mine in all where mine.name == name {
            let sharing = all.filter { $0.name != name && $0.sharesHostIDs(with: mine) }.map(\.name).sorted()
            guard !sharing.isEmpty else { continue }
            try await host.deleteInstance(name)
            throw GatewayError(.sharedIdmap, "LXD gave \(name) host ids that \(sharing.joined(separator: ", ")) also run as; "
                               + "deleted before it ran, created again at the next attempt")
        }
    }

    /// How long a step waits out another operation on its container (LXD's "Instance is busy"): a create
    /// the daemon began before it was killed, still copying a large image, or the owner's own `lxc` command.
    static let busyPatience: Duration = .seconds(120)

    /// - Parameter createdNow: an earlier step of this run created the container.
    /// - Returns: whether this step created the container (a create that found it there already did not).
    func perform(_ step: ProvisionStep, vendor: String, container: String, createdNow: Bool = false) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + Self.busyPatience
        var waited = false
        while true {
            do { return try await performOnce(step, vendor: vendor, container: container, createdNow: createdNow) } catch let e as LXDError
                where e.isInstanceBusy && clock.now < deadline {
                if !waited {
                    waited = true
                    logger.info("container busy with another operation: waiting", metadata: ["lxd.instance": "\(container)", "iotgw.step": "\(step)"])
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    func performOnce(_ step: ProvisionStep, vendor: String, container: String, createdNow: Bool) async throws -> Bool {
        switch step {
        case .verifyImage(let alias, let fingerprint):
            try await host.verifyImage(alias: alias, fingerprint: fingerprint)
        case .fetchImage(let ref):
            guard let images else { throw GatewayError(.imageDownload, "this gateway downloads no images") }
            try await images.ensure(ref, vendor: vendor)
        case .ensureNode(let node):
            try registry.ensure(node)
        case .removeNode(let path):
            registry.remove(path: path)
        case .create(let s):
            do {
                // Held only while LXD picks the new container's id map: copying and shifting the image (which a
                // vendor's large image makes long) then runs beside other vendors' creations.
                try await creations.withLock(releasingEarly: { [host] release in
                    try await host.createInstance(s.post, timeout: nil, idmapAllocated: release)
                })
                return true
            } catch let e as LXDError where e.code == .conflict {
                // A create that finished while we were down: the next observation sees it.
                logger.info("container already exists", metadata: ["lxd.instance": "\(container)"])
            }
        case .updateConfig(let c):
            try await host.patchInstance(container, config: c, devices: [:], ifMatch: nil)
        case .setDevice(let name, let device), .attach(let name, let device):
            try await host.addDevice(container, name: name, device)
        case .start:
            // A container that never ran (LXD has recorded neither the map it runs with nor a power state): its
            // host ids are checked, and it is deleted rather than started if it shares them. One that ran is never
            // deleted here: it may hold the vendor's data.
            // Created by this run, it never ran: no need to read it first.
            let neverRan: Bool
            if createdNow {
                neverRan = true
            } else {
                let config = try await host.instance(container).instance.config
                neverRan = config["volatile.idmap.current"] == nil && config["volatile.last_state.power"] == nil
            }
            if neverRan { try await ensureOwnHostIDs(container) }
            do {
                try await host.setState(container, .start, timeout: 30, force: false)
            } catch let e as LXDError where e.code == .badRequest {
                // Started meanwhile (a start that finished while we were down) is success; anything else is not.
                guard try await host.instance(container).instance.isRunning else { throw e }
            }
        case .detach(let name):
            try await host.removeDevice(container, name: name)
        }
        return false
    }
}
