/// The delivery guarantee of one message (MQTT 3.1.1). QoS 2 is not offered.
public enum MQTTQoS: Int32, Sendable, Hashable {
    /// Fire and forget: sent once, lost if the connection drops.
    case atMostOnce = 0
    /// Acknowledged (PUBACK); resent after a reconnect until acknowledged, so it may arrive twice.
    case atLeastOnce = 1
}

/// One MQTT application message: published by ``MQTTClient/publish(_:timeout:)``, delivered
/// through ``MQTTClient/events`` as ``MQTTEvent/message(_:)``, or set as a last will.
public struct MQTTMessage: Sendable, Equatable {
    /// The topic name, e.g. `iotgw/v1/gw-0123456789abcdef/status` (no wildcards).
    public var topic: String
    /// The payload bytes (may be empty).
    public var payload: [UInt8]
    /// The QoS it was published with; on delivery, the QoS it was delivered with.
    public var qos: MQTTQoS
    /// When publishing: whether the broker keeps it as the topic's retained message. On delivery
    /// (MQTT 3.1.1): true only when the broker replays a retained message for a new subscription.
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: MQTTQoS = .atLeastOnce, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// What happens on a client's connection, in order, through ``MQTTClient/events``.
public enum MQTTEvent: Sendable, Equatable {
    /// The broker accepted the connection (CONNACK 0). `sessionPresent`: the broker still had this
    /// client id's persistent session (subscriptions and QoS 1 messages queued while offline).
    case connected(sessionPresent: Bool)
    /// A connection attempt failed or an established connection ended. One event per attempt, with
    /// the reason in words (a refusal, a TLS failure, a lost connection, `stop()`); the client keeps
    /// retrying with its backoff unless it was stopped.
    case disconnected(reason: String)
    /// A message arrived on one of the subscriptions.
    case message(MQTTMessage)
}
