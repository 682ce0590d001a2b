import Foundation
import GatewayProtocol
import Logging
import MQTT

/// ``FleetLink`` over libmosquitto: TLS 1.3 to the vendor's broker, authenticated by a client
/// certificate the vendor issued for this gateway's own Ed25519 key (CN = gateway id), a persistent
/// session so commands sent while offline arrive, and a last will that marks the gateway offline.
public struct MQTTFleetLink: FleetLink {
    let client: MQTTClient
    public static let publishTimeout: Duration = .seconds(10)

    public init(vendor: GatewayConfig.VendorEntry, fleet: GatewayConfig.Fleet, identity: GatewayIdentity, keyFile: String,
                will: (topic: String, payload: Data), logger: Logger) throws {
        var l = logger
        l[metadataKey: "iotgw.vendor"] = "\(vendor.id)"
        var c = MQTTConfiguration(host: fleet.host, port: fleet.port, clientID: identity.id)
        c.tls = .init(caFile: fleet.caFile, certificateFile: fleet.certificateFile, keyFile: keyFile)
        c.cleanSession = false
        c.will = MQTTMessage(topic: will.topic, payload: Array(will.payload), qos: .atLeastOnce, retain: true)
        // Nothing larger is ever valid here, and the broker is the vendor's.
        c.maxPayloadBytes = Self.maxPayloadBytes
        client = try MQTTClient(configuration: c, logger: l)
    }

    /// At most this many events wait for the channel: the broker is the vendor's, and a hostile one
    /// flooding messages must not grow the gateway's memory (the oldest are dropped; commands that
    /// mattered are resent by a vendor that waits for their results).
    public static let eventBuffer = 256
    /// The largest message taken from the vendor's broker: a signed plan or a signed command.
    public static let maxPayloadBytes = max(PlanValidator.maxPlanBytes, SignedDocument.maxBytes)

    public var events: AsyncStream<FleetLinkEvent> {
        let source = client.events
        return AsyncStream(bufferingPolicy: .bufferingNewest(Self.eventBuffer)) { continuation in
            let task = Task {
                for await e in source {
                    switch e {
                    case .connected: continuation.yield(.connected)
                    case .disconnected(let reason): continuation.yield(.disconnected(reason: reason))
                    case .message(let m): continuation.yield(.message(topic: m.topic, payload: Data(m.payload)))
                    }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    public func start() throws { try client.start() }
    public func subscribe(_ topic: String) throws { try client.subscribe(topic, qos: .atLeastOnce) }
    public func publish(topic: String, payload: Data, retain: Bool) async throws {
        try await client.publish(MQTTMessage(topic: topic, payload: Array(payload), qos: .atLeastOnce, retain: retain), timeout: Self.publishTimeout)
    }
    public func stop() async { await client.stop() }

    /// The gateway's private key as PKCS#8 PEM for TLS, written 0600 next to the identity (derived from
    /// it, rewritten at each start, never sent anywhere).
    public static func writeKeyFile(identity: GatewayIdentity, stateDirectory: String) throws -> String {
        let path = (stateDirectory as NSString).appendingPathComponent("fleet-tls.key")
        do { try identity.writePKCS8PEM(to: path) } catch let e as ProtocolError { throw GatewayError(.identity, e.message) }
        return path
    }
}
