import Foundation

/// One gateway-initiated connection to a vendor's MQTT broker, as the fleet channel uses it. The
/// real one is ``MQTTFleetLink`` (libmosquitto); unit tests use a fake.
public protocol FleetLink: Sendable {
    /// Connection changes and messages, in order; finishes after ``stop()``.
    var events: AsyncStream<FleetLinkEvent> { get }
    /// Connects in the background and keeps reconnecting with backoff until stopped.
    func start() throws
    /// Subscribes now and again after every reconnect.
    func subscribe(_ topic: String) throws
    /// QoS 1: returns when the broker acknowledged, throws when it did not in time or the link is down.
    func publish(topic: String, payload: Data, retain: Bool) async throws
    /// Disconnects cleanly (no last will) and ends ``events``.
    func stop() async
}

public enum FleetLinkEvent: Sendable, Equatable {
    case connected
    case disconnected(reason: String)
    case message(topic: String, payload: Data)
}

/// Makes the link for one vendor, with the last will the broker publishes if the gateway drops off.
public typealias FleetLinkFactory = @Sendable (_ vendor: GatewayConfig.VendorEntry, _ will: (topic: String, payload: Data)) throws -> any FleetLink
