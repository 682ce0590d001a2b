import Logging
import LXD
import ServiceLifecycle
import Synchronization

/// LXD's instances as last read, kept true by LXD's lifecycle events and by the gateway's own writes,
/// so a reconcile pass over an unchanged container reads nothing from LXD.
///
/// A ``ContainerHost`` in front of the real one. `instance(_:)` answers from the copy while the events
/// stream is followed and nothing said the instance changed since it was read; anything else passes
/// through. On each subscription every instance is listed in one request, so an instance that is not
/// there (a vendor's container still to be created) is known absent without asking. The copy of an
/// instance is dropped
/// - when LXD reports a lifecycle event about it (other than exec, file and log reads, see
///   ``InstanceEvent/unchanging``), and the vendor's worker is woken to look again (``follow(onChange:)``);
/// - when the gateway changes it through this host (after the call, whether it succeeded or not);
/// - all of them, when the events stream is not followed (not yet subscribed, LXD restarted, the
///   stream failed): a change may have gone unreported; reads pass through until it is followed again;
/// - all of them every `maxAge`, a bound on how long a copy is trusted should LXD ever not report a change.
///
/// `verifyImage` is answered the same way: a check that passed holds until LXD reports an image event.
///
/// A read that was under way when a copy was dropped is returned but not kept (a generation counter),
/// so a read that raced an event never stores what the event said changed.
public final class InstanceCache: ContainerHost, Service {
    enum Entry: Sendable {
        case present(Instance, etag: String?)
        case absent(LXDError)
    }

    struct State: Sendable {
        /// Events are followed now (subscribed and settled): copies may be kept and served.
        var live = false
        /// Bumped whenever a copy is dropped; a read keeps its result only if nothing was dropped meanwhile.
        var generation: UInt64 = 0
        var entries: [String: Entry] = [:]
        /// `entries` came from a listing of every instance: a name not in it is absent, unless it is in `unknown`.
        var complete = false
        /// Names dropped since the listing.
        var unknown: Set<String> = []
        /// Image checks that passed ("alias fingerprint").
        var verifiedImages: Set<String> = []
        /// Consecutive failures to follow the events (for the reconnect backoff).
        var failures = 0
        var hits = 0
        var misses = 0

        mutating func drop(_ name: String) {
            entries[name] = nil
            if complete { unknown.insert(name) }
            generation &+= 1
        }

        mutating func dropAll(live: Bool) {
            self.live = live
            entries.removeAll()
            complete = false
            unknown.removeAll()
            verifiedImages.removeAll()
            generation &+= 1
        }
    }

    let host: any ContainerHost
    let events: any InstanceEventSource
    let clock: any Clock<Duration>
    let logger: Logger
    /// How long a copy is trusted at most, events or not.
    let maxAge: Duration
    /// LXD adds its listener just after answering the websocket upgrade: copies are kept only from this
    /// long after the subscription, so that no read is kept that an unlistened change could make stale.
    let settle: Duration
    private let state = Mutex(State())

    public init(host: any ContainerHost, events: any InstanceEventSource, clock: any Clock<Duration> = ContinuousClock(),
                logger: Logger, maxAge: Duration = .seconds(600), settle: Duration = .milliseconds(250)) {
        self.host = host
        self.events = events
        self.clock = clock
        self.logger = logger
        self.maxAge = maxAge
        self.settle = settle
    }

    /// Whether copies are served now (the events stream is followed).
    public var isLive: Bool { state.withLock { $0.live } }
    /// Reads answered from a copy, and reads that went to LXD, so far.
    public var counts: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }

    // MARK: - Following LXD's events

    /// Follows LXD's events until cancelled, without telling anyone what changed.
    public func run() async throws {
        await follow { _ in }
    }

    /// Follows LXD's events until cancelled; reconnects with backoff when the stream ends or fails.
    /// - Parameter onChange: called with an instance's name when LXD reports it changed, and with nil
    ///   when any instance may have changed unseen (the stream was (re)subscribed, a profile changed).
    public func follow(onChange: @escaping @Sendable (String?) -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                while (try? await clock.sleep(for: maxAge)) != nil {
                    state.withLock { $0.dropAll(live: $0.live) }
                }
            }
            group.addTask { [self] in
                while !Task.isCancelled {
                    do {
                        try await events.followInstanceEvents(subscribed: { [self] in
                            guard (try? await clock.sleep(for: settle)) != nil else { return }
                            await self.subscribed()
                            // Anything may have changed while no one listened.
                            onChange(nil)
                        }, changed: { [self] change in
                            switch change {
                            case .instance(let event):
                                guard event.changesInstance else { return }
                                state.withLock { $0.drop(event.name) }
                                onChange(event.name)
                            case .images:
                                state.withLock { s in
                                    s.verifiedImages.removeAll()
                                    s.generation &+= 1
                                }
                            case .everything:
                                state.withLock { $0.dropAll(live: $0.live) }
                                onChange(nil)
                            }
                        })
                        if !Task.isCancelled { logger.warning("lxd events stream ended: reading through until followed again") }
                    } catch is CancellationError {
                    } catch {
                        if !Task.isCancelled {
                            logger.warning("lxd events not followed: reading through", metadata: ["iotgw.error": "\(error.safeDescription)"])
                        }
                    }
                    let failures = state.withLock { s in
                        s.dropAll(live: false)
                        s.failures += 1
                        return s.failures
                    }
                    // 0.25 s, doubling up to 4 s: LXD restarts in a few seconds.
                    let delay = Duration.milliseconds(250) * (1 << min(failures - 1, 4))
                    do { try await clock.sleep(for: delay) } catch { break }
                }
                state.withLock { $0.dropAll(live: false) }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Subscribed (and settled): lists every instance once, so that the first look at each (and at one
    /// that does not exist yet) reads nothing more, then keeps and serves copies from now on.
    func subscribed() async {
        let generation = state.withLock { s in
            s.dropAll(live: false)
            s.failures = 0
            return s.generation
        }
        var listed: [Instance]?
        do {
            listed = try await host.listInstances(userFilter: [:])
        } catch {
            logger.warning("lxd instances not listed: each is read when first needed", metadata: ["iotgw.error": "\(error.safeDescription)"])
        }
        state.withLock { s in
            s.live = true
            // Something the gateway wrote meanwhile may be missing from the listing: then no snapshot.
            guard let listed, s.generation == generation else { return }
            for i in listed { s.entries[i.name] = .present(i, etag: nil) }
            s.complete = true
        }
        logger.info("lxd events followed: instance copies served", metadata: ["lxd.instances": "\(listed?.count ?? 0)"])
    }

    // MARK: - Reads

    public func instance(_ name: String) async throws -> (instance: Instance, etag: String?) {
        enum Lookup: Sendable { case hit(Entry), miss(generation: UInt64?) }
        let lookup: Lookup = state.withLock { s in
            guard s.live else {
                s.misses += 1
                return .miss(generation: nil)
            }
            if let e = s.entries[name] {
                s.hits += 1
                return .hit(e)
            }
            if s.complete && !s.unknown.contains(name) {
                s.hits += 1
                return .hit(.absent(LXDError(code: .notFound, status: 404, message: "Instance not found")))
            }
            s.misses += 1
            return .miss(generation: s.generation)
        }
        let generation: UInt64?
        switch lookup {
        case .hit(.present(let i, let etag)): return (i, etag)
        case .hit(.absent(let e)): throw e
        case .miss(let g): generation = g
        }
        func keep(_ entry: Entry) {
            guard let generation else { return }
            state.withLock { s in
                guard s.live && s.generation == generation else { return }
                s.entries[name] = entry
                s.unknown.remove(name)
            }
        }
        do {
            let (i, etag) = try await host.instance(name)
            keep(.present(i, etag: etag))
            return (i, etag)
        } catch let e as LXDError where e.code == .notFound {
            keep(.absent(e))
            throw e
        }
    }

    public func state(_ name: String) async throws -> InstanceState { try await host.state(name) }
    public func verifyImage(alias: String, fingerprint: String) async throws {
        let key = alias + " " + fingerprint
        let generation: UInt64? = state.withLock { s in
            guard s.live else { return nil }
            return s.verifiedImages.contains(key) ? UInt64.max : s.generation
        }
        if generation == UInt64.max { return }
        try await host.verifyImage(alias: alias, fingerprint: fingerprint)
        guard let generation else { return }
        state.withLock { s in
            if s.live && s.generation == generation { s.verifiedImages.insert(key) }
        }
    }
    public func storagePool(_ name: String) async throws -> StoragePool { try await host.storagePool(name) }
    public func snapshots(_ instance: String) async throws -> [InstanceSnapshot] { try await host.snapshots(instance) }
    public func server() async throws -> Server { try await host.server() }
    public func listInstances(userFilter: [String: String]) async throws -> [Instance] { try await host.listInstances(userFilter: userFilter) }

    // MARK: - Writes: the copy goes once the call is over, whatever its outcome

    func changing<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        defer { state.withLock { $0.drop(name) } }
        return try await body()
    }

    public func createInstance(_ spec: InstancesPost, timeout: Duration?) async throws {
        try await changing(spec.name) { try await host.createInstance(spec, timeout: timeout) }
    }

    public func createInstance(_ spec: InstancesPost, timeout: Duration?, idmapAllocated: @escaping @Sendable () async -> Void) async throws {
        try await changing(spec.name) { try await host.createInstance(spec, timeout: timeout, idmapAllocated: idmapAllocated) }
    }

    public func patchInstance(_ name: String, config: [String: String], devices: [String: Device], ifMatch etag: String?) async throws {
        try await changing(name) { try await host.patchInstance(name, config: config, devices: devices, ifMatch: etag) }
    }

    public func setState(_ name: String, _ action: InstanceStatePut.Action, timeout: Int, force: Bool) async throws {
        try await changing(name) { try await host.setState(name, action, timeout: timeout, force: force) }
    }

    public func addDevice(_ instance: String, name: String, _ device: Device) async throws {
        try await changing(instance) { try await host.addDevice(instance, name: name, device) }
    }

    public func removeDevice(_ instance: String, name: String) async throws {
        try await changing(instance) { try await host.removeDevice(instance, name: name) }
    }

    public func createSnapshot(_ instance: String, name: String) async throws {
        try await changing(instance) { try await host.createSnapshot(instance, name: name) }
    }

    public func restoreSnapshot(_ instance: String, name: String) async throws {
        try await changing(instance) { try await host.restoreSnapshot(instance, name: name) }
    }

    public func deleteSnapshot(_ instance: String, name: String) async throws {
        try await changing(instance) { try await host.deleteSnapshot(instance, name: name) }
    }

    public func deleteInstance(_ name: String) async throws {
        try await changing(name) { try await host.deleteInstance(name) }
    }

    /// Both names change: the old one is gone, the new one is a different instance.
    public func renameInstance(_ name: String, to newName: String) async throws {
        try await changing(newName) { try await changing(name) { try await host.renameInstance(name, to: newName) } }
    }
}
