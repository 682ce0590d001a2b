import Foundation
import GatewayProtocol
import Logging
import MQTT
import ServiceLifecycle
import Synchronization

/// The vendor's side of the fleet channel, run by `iot-daemon serve` beside the HTTP API:
/// - publishes every gateway's current signed plan, retained, whenever it changes (registration,
///   `publish-app`, releases), so connected gateways get it at once and reconnecting ones on connect;
/// - verifies each gateway's status with the key it enrolled with and keeps the newest (offline when
///   its last will arrives); verifies and keeps command results.
///
/// Several replicas may run it against one broker and database: retained plans are idempotent (the
/// same bytes), and statuses are ordered by the gateway's own (session, sequence).
public struct FleetService: Service {
    let settings: VendorConfiguration.FleetSettings
    let vendor: String
    let store: any VendorStore
    let logger: Logger
    let clientID: String
    /// How often the store is asked for changed plans.
    let planCheckInterval: Duration

    public init(configuration: VendorConfiguration, settings: VendorConfiguration.FleetSettings, store: any VendorStore, logger: Logger,
                clientID: String? = nil, planCheckInterval: Duration = .milliseconds(500)) {
        self.settings = settings
        vendor = configuration.vendor
        self.store = store
        self.logger = logger
        self.clientID = clientID ?? "iotgw-vendor-\(configuration.vendor)-\(UInt32.random(in: 0...UInt32.max))"
        self.planCheckInterval = planCheckInterval
    }

    public func run() async throws {
        let client = try VendorFleet.client(settings, clientID: clientID, cleanSession: true, logger: logger)
        try client.subscribe(FleetTopics.allStatus, qos: .atLeastOnce)
        try client.subscribe(FleetTopics.allResults, qos: .atLeastOnce)
        try client.start()
        logger.info("fleet channel started", metadata: ["mqtt.broker": "\(settings.host):\(settings.port)"])
        let published = PublishedPlans()
        let statuses = StatusQueue()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await writeStatuses(statuses) }
            group.addTask {
                for await event in client.events {
                    switch event {
                    case .connected:
                        logger.notice("fleet broker connected")
                        await published.reset()  // republish everything: cheap, and the broker may have lost retained state
                    case .disconnected(let reason):
                        logger.warning("fleet broker disconnected", metadata: ["mqtt.reason": "\(reason)"])
                    case .message(let m):
                        await receive(m, statuses: statuses)
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    do { try await Task.sleep(for: planCheckInterval) } catch { break }
                    await publishChangedPlans(client, published)
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        await client.stop()
        logger.info("fleet channel stopped")
    }

    /// Plans whose version is not yet on the broker go out retained (QoS 1).
    func publishChangedPlans(_ client: MQTTClient, _ published: PublishedPlans) async {
        do {
            for plan in try await store.plans() where await published.needs(plan.gatewayID, plan.version) {
                try await client.publish(VendorFleet.planMessage(plan), timeout: .seconds(10))
                await published.mark(plan.gatewayID, plan.version)
                logger.info("plan pushed", metadata: ["gateway.id": "\(plan.gatewayID)", "plan.version": "\(plan.version)"])
            }
        } catch let e as MQTTError where e.code == .notConnected {
            return
        } catch {
            logger.warning("plans not pushed", metadata: ["error.message": "\(error)"])
        }
    }

    /// Saves the verified statuses as they come, in one transaction for all that arrived while the last
    /// one ran: a thousand gateways reconnecting at once took 15 s to absorb one transaction at a time.
    func writeStatuses(_ queue: StatusQueue) async {
        while let batch = await queue.next() {
            let dropped = queue.takeDropped()
            if dropped > 0 {
                logger.warning("statuses dropped: more were waiting than the queue keeps", metadata: ["status.dropped": "\(dropped)", "status.limit": "\(queue.limit)"])
            }
            do {
                let kept = try await store.saveStatuses(batch)
                for (received, kept) in zip(batch, kept) {
                    if let kept {
                        logger.debug("status", metadata: ["gateway.id": "\(received.status.gatewayID)", "status.online": "\(received.status.online)",
                                                          "status.kept": "\(kept)"])
                    } else {
                        logger.warning("fleet message refused", metadata: ["gateway.id": "\(received.status.gatewayID)", "mqtt.topic": "status",
                                                                           "error.message": "gateway is not enrolled"])
                    }
                }
            } catch {
                logger.warning("statuses not saved", metadata: ["status.count": "\(batch.count)", "error.message": "\(error)"])
            }
        }
    }

    func receive(_ m: MQTTMessage, statuses: StatusQueue) async {
        guard let (gatewayID, leaf) = FleetTopics.parse(m.topic) else { return }
        do {
            // The key the gateway enrolled with; a revoked or unknown gateway's messages are dropped.
            guard let gateway = try await store.gateway(id: gatewayID) else {
                return logger.warning("fleet message from an unknown or revoked gateway dropped", metadata: ["gateway.id": "\(gatewayID)"])
            }
            let key = try Keys.decodePublic(gateway.publicKey)
            switch leaf {
            case "status":
                let status = try SignedDocument.open(m.payload, as: GatewayStatus.self, domain: Envelope.statusDomain, key: key, what: "status")
                try status.validate(gatewayID: gatewayID, vendor: vendor)
                statuses.add(ReceivedStatus(status, receivedAt: Date()))
            case "results":
                let r = try SignedDocument.open(m.payload, as: CommandResult.self, domain: Envelope.resultDomain, key: key, what: "command result")
                guard r.gatewayID == gatewayID, r.vendor == vendor else { throw ProtocolError(.wrongGateway, "result names another gateway or vendor") }
                try await store.addCommandResult(StoredCommandResult(gatewayID: gatewayID, commandID: Fields.displayText(r.id, max: 64),
                                                                     command: Fields.displayText(r.command, max: 32), outcome: r.outcome.rawValue,
                                                                     message: Fields.displayText(r.message, max: 1024), receivedAt: Date()))
            default:
                return
            }
        } catch {
            logger.warning("fleet message refused", metadata: ["gateway.id": "\(gatewayID)", "mqtt.topic": "\(leaf)", "error.message": "\(error)"])
        }
    }
}

/// Verified statuses waiting to be saved, in arrival order. At most `limit` wait: beyond that the oldest are
/// dropped (counted in a warning), since a gateway publishes its status again on every change and every
/// `statusSeconds`.
final class StatusQueue: Sendable {
    private struct State {
        var items: [ReceivedStatus] = []
        var dropped = 0
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())
    let limit: Int
    let batch: Int

    init(limit: Int = 100_000, batch: Int = 1_000) {
        self.limit = limit
        self.batch = batch
    }

    func add(_ status: ReceivedStatus) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.items.append(status)
            if s.items.count > limit {
                s.dropped += s.items.count - limit
                s.items.removeFirst(s.items.count - limit)
            }
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// The waiting statuses (at most `batch`), once there is one; nil when the task is cancelled.
    func next() async -> [ReceivedStatus]? {
        while !Task.isCancelled {
            let taken = state.withLock { s -> [ReceivedStatus] in
                let n = min(batch, s.items.count)
                defer { s.items.removeFirst(n) }
                return Array(s.items.prefix(n))
            }
            if !taken.isEmpty { return taken }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    // Cancellation is checked under the lock onCancel takes: one of the two resumes.
                    let now = state.withLock { s -> Bool in
                        if !s.items.isEmpty || Task.isCancelled { return true }
                        s.waiter = c
                        return false
                    }
                    if now { c.resume() }
                }
            } onCancel: {
                state.withLock { s in defer { s.waiter = nil }; return s.waiter }?.resume()
            }
        }
        return nil
    }

    /// How many were dropped over the limit since the last call.
    func takeDropped() -> Int { state.withLock { s in defer { s.dropped = 0 }; return s.dropped } }
}

/// Which plan version of each gateway this process put on the broker.
actor PublishedPlans {
    var versions: [String: Int] = [:]
    func needs(_ gateway: String, _ version: Int) -> Bool { versions[gateway] != version }
    func mark(_ gateway: String, _ version: Int) { versions[gateway] = version }
    func reset() { versions = [:] }
}

/// Connections of the vendor's control plane to its broker (`serve`, and the CLI's one-shot commands).
public enum VendorFleet {
    public static func client(_ s: VendorConfiguration.FleetSettings, clientID: String, cleanSession: Bool, logger: Logger) throws -> MQTTClient {
        var c = MQTTConfiguration(host: s.host, port: s.port, clientID: clientID)
        c.tls = .init(caFile: s.caCertificate, certificateFile: s.certificate, keyFile: s.key)
        c.cleanSession = cleanSession
        return try MQTTClient(configuration: c, logger: logger)
    }

    /// A gateway's current signed plan as the retained message of its plan topic.
    static func planMessage(_ plan: StoredPlan) -> MQTTMessage {
        MQTTMessage(topic: FleetTopics.plan(plan.gatewayID), payload: Array(plan.signedJSON.utf8), qos: .atLeastOnce, retain: true)
    }

    /// Signs a command for one gateway with the vendor's key.
    public static func command(_ kind: FleetCommand.Kind, gatewayID: String, vendor: String, seconds: Int?, lifetime: TimeInterval,
                               signer: PlanSigner, now: Date = Date()) throws -> (FleetCommand, Data) {
        let cmd = FleetCommand(gatewayID: gatewayID, vendor: vendor, command: kind, seconds: seconds, issuedAt: now,
                               expiresAt: now.addingTimeInterval(min(lifetime, FleetCommand.maxLifetime)))
        return (cmd, try signer.signDocument(cmd, domain: Envelope.commandDomain))
    }

    /// Publishes the current plans of these gateways now (the CLI after `publish-app`), waiting for the
    /// broker's acknowledgement; `serve` would publish them within its check interval anyway.
    public static func pushPlans(_ plans: [StoredPlan], settings: VendorConfiguration.FleetSettings, logger: Logger) async throws {
        guard !plans.isEmpty else { return }
        let client = try client(settings, clientID: "iotgw-vendor-cli-\(UInt32.random(in: 0...UInt32.max))", cleanSession: true, logger: logger)
        try client.start()
        do {
            try await client.waitUntilConnected(timeout: .seconds(10))
            for p in plans {
                try await client.publish(planMessage(p), timeout: .seconds(10))
            }
        } catch {
            await client.stop()
            throw error
        }
        await client.stop()
    }
}
