/// A failure of the MQTT adapter. Matchable by `code`; `message` keeps what libmosquitto, OpenSSL or
/// the broker said.
///
/// ```swift
/// catch let e as MQTTError where e.code == .notConnected { ... }
/// ```
public struct MQTTError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// An argument (client id, topic, filter, configuration value, file) was rejected before
        /// anything was sent.
        public static let invalidArgument = Code("invalidArgument")
        /// The TLS handshake failed: the broker rejected the client certificate (unknown CA,
        /// revoked, none given) or the client rejected the broker's certificate or host name.
        public static let tls = Code("tls")
        /// The broker refused the connection in its CONNACK (e.g. not authorised), or refused a
        /// subscription in its SUBACK.
        public static let refused = Code("refused")
        /// The client has no connection to the broker right now (not started, or offline).
        public static let notConnected = Code("notConnected")
        /// No answer (PUBACK, SUBACK, CONNACK, a connection) within the deadline.
        public static let timeout = Code("timeout")
        /// The broker sent something that breaks the MQTT protocol.
        public static let protocolError = Code("protocolError")
        /// The client was stopped (or is stopping).
        public static let closed = Code("closed")
        /// libmosquitto failed in another way (out of memory, unexpected return code).
        public static let library = Code("library")
        /// The broker could not be reached: the TCP connection was refused or timed out, or the
        /// host name did not resolve.
        public static let unreachable = Code("unreachable")
        /// An established connection ended without a DISCONNECT (broker gone, network failure,
        /// keepalive expired).
        public static let connectionLost = Code("connectionLost")
    }

    public var code: Code
    /// What failed, in words, with what the other side said.
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "MQTT \(code): \(message)" }
}
