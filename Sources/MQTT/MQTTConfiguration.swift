/// How an ``MQTTClient`` connects: broker, identity, TLS, session and reconnect behaviour.
///
/// ```swift
/// var configuration = MQTTConfiguration(host: "127.0.0.1", port: 8883, clientID: "gw-0123456789abcdef")
/// configuration.tls = .init(caFile: "/etc/iotgw/mqtt/ca.crt",
///                           certificateFile: "/etc/iotgw/mqtt/gateway.crt", keyFile: "/etc/iotgw/mqtt/gateway.key")
/// configuration.will = MQTTMessage(topic: "iotgw/v1/gw-0123456789abcdef/status", payload: Array("offline".utf8), retain: true)
/// ```
public struct MQTTConfiguration: Sendable {
    /// TLS settings. The connection always uses TLS 1.3, verifies the broker's certificate against
    /// `caFile` and checks that it names `host` (DNS name or IP address).
    public struct TLS: Sendable, Equatable {
        /// PEM file with the CA certificate(s) the broker's certificate must chain to.
        public var caFile: String
        /// PEM client certificate; give it together with `keyFile`, or neither.
        public var certificateFile: String?
        /// PEM private key of `certificateFile` (unencrypted; an encrypted key fails the handshake).
        public var keyFile: String?

        public init(caFile: String, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    /// The broker's host name or IP address.
    public var host: String
    /// The broker's TCP port (1-65535).
    public var port: Int
    /// The MQTT client id; also the key of the persistent session. Non-empty, at most 65535 bytes.
    public var clientID: String
    /// TLS settings; `nil` connects in plain TCP.
    public var tls: TLS?
    /// MQTT username (a broker with `use_identity_as_username` ignores it and uses the certificate's CN).
    public var username: String?
    /// MQTT password; needs `username`.
    public var password: String?
    /// Keepalive interval, whole seconds, 5 s ... 65535 s. A connection that is silent for 1.5 times
    /// this is considered lost. Default 30 s.
    public var keepAlive: Duration
    /// `false` (the default) asks for a persistent session: the broker keeps the subscriptions and
    /// queues QoS 1 messages while the client is offline, and delivers them on reconnect.
    public var cleanSession: Bool
    /// The last will: published by the broker when the connection ends without a DISCONNECT
    /// (crash, network loss), never after ``MQTTClient/stop()``.
    public var will: MQTTMessage?
    /// Bounds of the reconnect backoff, default 1 s ... 30 s: the delay doubles after every failed
    /// attempt from the lower bound up to the upper one, with jitter (see ``ReconnectBackoff``), and
    /// starts again from the lower bound once a connection was accepted.
    public var reconnectDelay: ClosedRange<Duration>
    /// How long one connection attempt (TCP, TLS handshake, CONNECT/CONNACK) may take before it is
    /// abandoned and retried. Default 15 s.
    public var connectTimeout: Duration
    /// Messages with a larger payload are dropped as they arrive, before the client copies them (the
    /// count is in ``MQTTClient/droppedOversize``); nil keeps every message. A broker that is not the
    /// client's own may send up to MQTT's 256 MiB per message.
    ///
    /// With TLS the limit also holds while a message is read: libmosquitto's client would read any
    /// packet the broker announces whole (up to 256 MiB) before the payload could be looked at, so the
    /// connection is closed once ``packetLimit`` bytes of one packet were read, and the packet is
    /// counted as dropped. Without TLS only the first check applies.
    public var maxPayloadBytes: Int?

    /// The most TLS record bytes one packet from the broker may take: the payload limit, the longest
    /// topic MQTT allows, the packet's header and the records' own overhead. Nil without a payload limit.
    public var packetLimit: Int? { maxPayloadBytes.map { $0 + 65_535 + 8 * 1024 } }

    public init(
        host: String,
        port: Int,
        clientID: String,
        tls: TLS? = nil,
        username: String? = nil,
        password: String? = nil,
        keepAlive: Duration = .seconds(30),
        cleanSession: Bool = false,
        will: MQTTMessage? = nil,
        reconnectDelay: ClosedRange<Duration> = .seconds(1) ... .seconds(30),
        connectTimeout: Duration = .seconds(15),
        maxPayloadBytes: Int? = nil
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.tls = tls
        self.username = username
        self.password = password
        self.keepAlive = keepAlive
        self.cleanSession = cleanSession
        self.will = will
        self.reconnectDelay = reconnectDelay
        self.connectTimeout = connectTimeout
        self.maxPayloadBytes = maxPayloadBytes
    }

    /// Throws ``MQTTError/Code/invalidArgument`` for the first value that cannot work.
    func validate() throws {
        func invalid(_ message: String) -> MQTTError { MQTTError(code: .invalidArgument, message: message) }
        guard !clientID.isEmpty else { throw invalid("the client id is empty") }
        try Topic.checkString(clientID, what: "client id")
        guard !host.isEmpty, !host.utf8.contains(0) else { throw invalid("the broker host is empty") }
        guard (1...65535).contains(port) else { throw invalid("port \(port) is not in 1...65535") }
        let keepAliveSeconds = keepAlive.components.seconds
        guard keepAlive.components.attoseconds == 0, (5...65535).contains(keepAliveSeconds) else {
            throw invalid("keepAlive must be whole seconds in 5 s...65535 s, got \(keepAlive)")
        }
        guard reconnectDelay.lowerBound > .zero else { throw invalid("reconnectDelay must start above zero, got \(reconnectDelay)") }
        guard connectTimeout > .zero else { throw invalid("connectTimeout must be positive, got \(connectTimeout)") }
        if password != nil && username == nil { throw invalid("a password needs a username") }
        if let username { try Topic.checkString(username, what: "username") }
        if let tls {
            guard (tls.certificateFile == nil) == (tls.keyFile == nil) else {
                throw invalid("TLS needs both certificateFile and keyFile, or neither")
            }
            for file in [tls.caFile, tls.certificateFile, tls.keyFile].compactMap({ $0 }) where file.isEmpty || file.utf8.contains(0) {
                throw invalid("TLS file path \(file.debugDescription) is not usable")
            }
        }
        if let will {
            try Topic.checkName(will.topic)
            guard will.payload.count <= 65535 else { throw invalid("the will payload is \(will.payload.count) bytes; at most 65535") }
        }
    }
}
