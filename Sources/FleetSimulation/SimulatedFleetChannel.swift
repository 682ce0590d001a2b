import Foundation
import GatewayProtocol
import Logging
import MQTT
import Synchronization

/// Where simulated gateways reach the vendor's broker (the fleet channel), from the vendor's configuration:
/// each gateway connects with the certificate enrollment issued for its own key.
public struct FleetBroker: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// The broker's CA (PEM).
    public var caFile: String
    /// Issued gateway certificates, `<gateway id>.crt` (the vendor's `fleet.certificateDirectory`).
    public var certificateDirectory: String
    /// Where each gateway's TLS key is written (`<gateway id>.key`, PKCS#8 PEM, mode 0600).
    public var keyDirectory: String

    public init(host: String, port: Int, caFile: String, certificateDirectory: String, keyDirectory: String) {
        self.host = host
        self.port = port
        self.caFile = caFile
        self.certificateDirectory = certificateDirectory
        self.keyDirectory = keyDirectory
    }

    public func certificate(of gatewayID: String) -> String { (certificateDirectory as NSString).appendingPathComponent("\(gatewayID).crt") }
    func keyFile(of gatewayID: String) -> String { (keyDirectory as NSString).appendingPathComponent("\(gatewayID).key") }
}

/// One simulated gateway's fleet channel, as the gateway's own `FleetChannel` runs it: one TLS connection with
/// its certificate, a persistent session, the retained signed plan on its plan topic, a signed status (retained)
/// after every connect and every delivery, a signed "offline" last will, and a clean "offline" at the end.
/// Plans pushed here are verified exactly like polled ones by the gateway's run.
final class SimulatedFleetChannel: Sendable {
    struct Facts: Sendable {
        var received: Int?
        var delivered: Int?
        var lastDelivery: GatewayStatus.LastDelivery?
    }

    private struct State {
        /// The newest plan message not yet taken (an older one waiting is replaced: the gateway wants the newest).
        var pushed: Data?
        var waiter: CheckedContinuation<Void, Never>?
        var connected = false
        var everConnected = false
        var sequence: Int64 = 0
        var facts = Facts()
    }

    let gatewayID: String
    let vendor: String
    let identity: GatewayIdentity
    let client: MQTTClient
    let recorder: FleetRecorder
    let session: Int64
    let started = Date()
    let offline: Data
    private let state = Mutex(State())

    init(identity: GatewayIdentity, vendor: String, broker: FleetBroker, recorder: FleetRecorder, logger: Logger) throws {
        gatewayID = identity.id
        self.vendor = vendor
        self.identity = identity
        self.recorder = recorder
        session = Int64(started.timeIntervalSince1970 * 1000)
        let certificate = broker.certificate(of: identity.id)
        guard FileManager.default.isReadableFile(atPath: certificate) else {
            throw FleetError(.badState, "no broker certificate \(certificate) for \(identity.id): enroll with a configuration that has fleet.issueCommand")
        }
        let keyFile = broker.keyFile(of: identity.id)
        try identity.writePKCS8PEM(to: keyFile)
        offline = try SignedDocument.sign(Self.status(identity.id, vendor, online: false, session: session, sequence: 0, at: started, facts: Facts()),
                                          domain: Envelope.statusDomain, key: identity.key)
        var c = MQTTConfiguration(host: broker.host, port: broker.port, clientID: identity.id)
        c.tls = .init(caFile: broker.caFile, certificateFile: certificate, keyFile: keyFile)
        c.cleanSession = false
        c.will = MQTTMessage(topic: FleetTopics.status(identity.id), payload: Array(offline), qos: .atLeastOnce, retain: true)
        c.maxPayloadBytes = max(PlanValidator.maxPlanBytes, SignedDocument.maxBytes)
        client = try MQTTClient(configuration: c, logger: logger)
    }

    static func status(_ gatewayID: String, _ vendor: String, online: Bool, session: Int64, sequence: Int64, at: Date, facts: Facts,
                       uptime: Int64 = 0) -> GatewayStatus {
        GatewayStatus(gatewayID: gatewayID, vendor: vendor, online: online, session: session, sequence: sequence, publishedAt: at,
                      agentVersion: "0.0.0-fleetsim", uptimeSeconds: uptime, container: nil, devices: [],
                      plan: .init(received: facts.received, delivered: facts.delivered), lastDelivery: facts.lastDelivery, rejection: nil)
    }

    /// A channel that has not connected this long after its start counts as an error of the run.
    static let connectGrace: TimeInterval = 10
    private let startedAt = Mutex<Date?>(nil)

    /// Subscribes and starts connecting (on the client's own thread, reconnecting with backoff).
    func start() throws {
        startedAt.withLock { $0 = Date() }
        try client.subscribe(FleetTopics.plan(gatewayID), qos: .atLeastOnce)
        try client.start()
    }

    /// Follows the connection's events until ``stop()`` ends them.
    func follow() async {
        for await event in client.events {
            switch event {
            case .connected:
                let first = state.withLock { s in
                    defer { s.connected = true; s.everConnected = true }
                    return !s.everConnected
                }
                recorder.update { if first { $0.fleet.connected += 1 } else { $0.fleet.reconnects += 1 } }
                await publishStatus()
            case .disconnected:
                state.withLock { $0.connected = false }
            case .message(let m):
                guard m.topic == FleetTopics.plan(gatewayID) else { continue }
                let waiter = state.withLock { s in
                    s.pushed = Data(m.payload)
                    defer { s.waiter = nil }
                    return s.waiter
                }
                waiter?.resume()
            }
        }
    }

    /// The pushed plan waiting, if any (taken).
    func takePushed() -> Data? { state.withLock { s in defer { s.pushed = nil }; return s.pushed } }

    /// Returns when a plan was pushed or `duration` passed (or the task is cancelled).
    func waitForPush(upTo duration: Duration) async {
        if state.withLock({ $0.pushed != nil }) { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: duration) }
            group.addTask { [self] in await arrival() }
            await group.next()
            group.cancelAll()
        }
    }

    private func arrival() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                // Cancellation is checked under the lock that onCancel takes: one of the two always resumes.
                let now = state.withLock { s -> Bool in
                    if s.pushed != nil || Task.isCancelled { return true }
                    s.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { s in defer { s.waiter = nil }; return s.waiter }?.resume()
        }
    }

    /// Records what the gateway now holds and publishes it.
    func update(_ body: (inout Facts) -> Void) async {
        state.withLock { body(&$0.facts) }
        await publishStatus()
    }

    /// The signed status of the current facts, retained (only while connected: the next connect publishes it).
    func publishStatus() async {
        let now = Date()
        let next: (Int64, Facts)? = state.withLock { s in
            guard s.connected else { return nil }
            s.sequence += 1
            return (s.sequence, s.facts)
        }
        guard let (sequence, facts) = next else { return }
        do {
            let status = Self.status(gatewayID, vendor, online: true, session: session, sequence: sequence, at: now, facts: facts,
                                     uptime: Int64(now.timeIntervalSince(started)))
            let payload = try SignedDocument.sign(status, domain: Envelope.statusDomain, key: identity.key)
            try await client.publish(MQTTMessage(topic: FleetTopics.status(gatewayID), payload: Array(payload), qos: .atLeastOnce, retain: true),
                                     timeout: .seconds(10))
            recorder.update { $0.fleet.statusesPublished += 1 }
        } catch let e as MQTTError where e.code == .notConnected || e.code == .closed {
            return  // the next connect publishes the facts again
        } catch {
            recorder.error("mqtt.status", FleetSimulator.kind(of: error))
        }
    }

    /// Says "offline" as a stopping gateway does (a clean disconnect sends no will), then disconnects. A gateway
    /// that never connected is an error of the run.
    func stop() async {
        let connected = state.withLock { $0.connected }
        if connected {
            do {
                try await client.publish(MQTTMessage(topic: FleetTopics.status(gatewayID), payload: Array(offline), qos: .atLeastOnce, retain: true),
                                         timeout: .seconds(10))
            } catch {
                recorder.error("mqtt.offline", FleetSimulator.kind(of: error))
            }
        }
        // Not yet connected is no failure for a channel started moments before the run ended.
        if !state.withLock({ $0.everConnected }), Date().timeIntervalSince(startedAt.withLock { $0 } ?? Date()) >= Self.connectGrace {
            recorder.error("mqtt.connect", client.lastFailure.map { "never connected: \($0.code)" } ?? "never connected")
        }
        await client.stop()
    }
}
