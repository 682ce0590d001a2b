import CMosquitto
import Foundation
import Logging

/// An MQTT 3.1.1 client over libmosquitto: TLS 1.3 with client certificates, QoS 0/1, retained
/// messages, a last will, a persistent session and reconnects with backoff.
///
/// ```swift
/// let client = try MQTTClient(configuration: configuration, logger: logger)
/// try client.subscribe("iotgw/v1/\(gatewayID)/plan", qos: .atLeastOnce)   // remembered across reconnects
/// try client.start()
/// for await event in client.events {
///     switch event {
///     case .connected(let sessionPresent): ...
///     case .disconnected(let reason): ...                                   // it reconnects by itself
///     case .message(let message): ...
///     }
/// }
/// // elsewhere: try await client.publish(status, timeout: .seconds(10)); await client.stop()
/// ```
///
/// The network runs on one dedicated thread per client (never on Swift's cooperative pool), which
/// drives `mosquitto_loop` and reconnects with ``MQTTConfiguration/reconnectDelay``. It does not use
/// `mosquitto_loop_start`: in libmosquitto 2.0.11 that thread ends for good on the first TLS-level
/// read error, and with OpenSSL 3 a broker that dies without closing TLS (crash, SIGKILL) produces
/// exactly that ("unexpected eof while reading"), so the client would never reconnect. The thread
/// also watches the non-blocking TCP connect itself, because libmosquitto spins on a refused one
/// instead of failing it. A failed first connect (broker down at start) is retried the same way as
/// a lost connection.
///
/// Every connection attempt that fails and every connection that ends is reported once as
/// ``MQTTEvent/disconnected(reason:)``; a refusal (`not authorised`) or a rejected certificate is
/// retried with the backoff like any other failure until ``stop()``.
public final class MQTTClient: Sendable {
    /// The configuration this client was created with.
    public let configuration: MQTTConfiguration
    private let connection: MosquittoConnection
    private let eventStream: AsyncStream<MQTTEvent>

    /// Validates `configuration` and prepares the libmosquitto handle (no network yet; see ``start()``).
    ///
    /// - Throws: ``MQTTError/Code/invalidArgument`` for an empty or invalid client id, a will with
    ///   an invalid topic, unreadable TLS files and other unusable values.
    public init(configuration: MQTTConfiguration, logger: Logger) throws {
        try libmosquittoInitialised()
        try configuration.validate()
        self.configuration = configuration
        let (stream, continuation) = AsyncStream.makeStream(of: MQTTEvent.self, bufferingPolicy: .unbounded)
        self.eventStream = stream
        self.connection = try MosquittoConnection(configuration: configuration, logger: logger, events: continuation)
    }

    /// The object libmosquitto's user data points to; tests check that it is released.
    var connectionObject: AnyObject { connection }

    /// Why the last connection attempt failed or the last connection ended (nil once connected again).
    public var lastFailure: MQTTError? { connection.lastFailure }

    /// How many messages were dropped for being over ``MQTTConfiguration/maxPayloadBytes``.
    public var droppedOversize: Int { connection.oversize.withLock { $0.count } }

    deinit {
        // A client dropped without stop(): its loop thread disconnects cleanly and releases
        // everything on its own; an unstarted handle is destroyed right here.
        connection.requestStop()
    }

    /// Everything that happens on the connection, in order: connects, disconnects (with a reason)
    /// and messages. The stream finishes after ``stop()``.
    ///
    /// Iterate it from one task only. Events are buffered without limit until they are read, so
    /// none is dropped (neither messages nor `.connected`/`.disconnected`); a consumer that stops
    /// reading makes the buffer grow, bounded in practice by what the broker sends (its
    /// `max_queued_messages` and `message_size_limit` bound an offline backlog).
    public var events: AsyncStream<MQTTEvent> { eventStream }

    /// Starts connecting on the client's own network thread and returns at once; the outcome
    /// arrives as events (or wait with ``waitUntilConnected(timeout:)``). A broker that is down is
    /// retried with the backoff. Calling it again while running does nothing.
    ///
    /// - Throws: ``MQTTError/Code/closed`` after ``stop()``: create a new client instead.
    public func start() throws {
        try connection.start()
    }

    /// Subscribes to `filter` now if connected, and again after every (re)connect (the filter is
    /// remembered until ``unsubscribe(_:)``). Returns without waiting for the broker's SUBACK.
    ///
    /// - Throws: ``MQTTError/Code/invalidArgument`` for an invalid filter (nothing is sent),
    ///   ``MQTTError/Code/closed`` after ``stop()``.
    public func subscribe(_ filter: String, qos: MQTTQoS) throws {
        try Topic.checkFilter(filter)
        _ = try connection.subscribe(filter, qos: qos, awaitingSUBACK: false)
    }

    /// Like ``subscribe(_:qos:)``, then waits until the broker has acknowledged the subscription
    /// (SUBACK) on the current or the next connection. Messages published after it returns reach
    /// this client.
    ///
    /// Note that a broker may acknowledge a subscription its ACL will never deliver on (mosquitto
    /// 2.0 does): the SUBACK says nothing about read rights.
    ///
    /// - Throws: ``MQTTError/Code/invalidArgument`` for an invalid filter, ``MQTTError/Code/refused``
    ///   if the broker answered "failure" (0x80), ``MQTTError/Code/timeout``, ``MQTTError/Code/closed``.
    public func subscribe(_ filter: String, qos: MQTTQoS, timeout: Duration) async throws {
        try Topic.checkFilter(filter)
        guard let promise = try connection.subscribe(filter, qos: qos, awaitingSUBACK: true) else { return }
        defer { connection.forgetSUBACKWaiter(promise, filter: filter) }
        try await promise.value(timeout: timeout) {
            MQTTError(code: .timeout, message: "no SUBACK for \(filter.debugDescription) within \(timeout)")
        }
    }

    /// Forgets `filter` and unsubscribes now if connected (without waiting for the UNSUBACK).
    ///
    /// - Throws: ``MQTTError/Code/invalidArgument`` for an invalid filter, ``MQTTError/Code/closed``.
    public func unsubscribe(_ filter: String) throws {
        try Topic.checkFilter(filter)
        try connection.unsubscribe(filter)
    }

    /// Publishes `message` and waits until the broker has it: for QoS 1 until its PUBACK, for
    /// QoS 0 until it was written to the socket.
    ///
    /// Offline, it does not queue: it throws ``MQTTError/Code/notConnected`` at once and nothing is
    /// sent, so the caller decides what to keep and when to retry (e.g. after the next
    /// ``MQTTEvent/connected(sessionPresent:)``). A QoS 1 message handed over while connected is
    /// kept by libmosquitto and resent after a reconnect until the broker acknowledges it; if that
    /// takes longer than `timeout` this throws ``MQTTError/Code/timeout`` although the message may
    /// still arrive later (at least once: a retry by the caller can deliver it twice).
    ///
    /// A broker that denies the topic by ACL still acknowledges the message (MQTT 3.1.1) and drops it.
    ///
    /// - Throws: ``MQTTError/Code/invalidArgument`` for an empty topic, a topic with `+` or `#` or an
    ///   oversized payload (nothing is sent); ``MQTTError/Code/notConnected``;
    ///   ``MQTTError/Code/timeout``; ``MQTTError/Code/closed`` when the client is stopped meanwhile.
    public func publish(_ message: MQTTMessage, timeout: Duration) async throws {
        try Topic.checkName(message.topic)
        guard message.payload.count <= MosquittoConnection.maximumPayload else {
            throw MQTTError(code: .invalidArgument, message: "the payload is \(message.payload.count) bytes; MQTT allows at most \(MosquittoConnection.maximumPayload)")
        }
        let (mid, promise) = try connection.publish(message)
        defer { connection.forgetPublishWaiter(promise, mid: mid) }
        try await promise.value(timeout: timeout) {
            MQTTError(code: .timeout, message: "the broker did not acknowledge message \(mid) on \(message.topic) within \(timeout)")
        }
    }

    /// Returns once the broker has accepted a connection (at once if connected now).
    ///
    /// - Throws: ``MQTTError/Code/refused`` or ``MQTTError/Code/tls`` as soon as an attempt fails
    ///   that way (a wrong or revoked certificate, not authorised: retrying will not help until
    ///   someone acts; the client still retries in the background); ``MQTTError/Code/timeout`` with
    ///   the last failure in its message; ``MQTTError/Code/notConnected`` before ``start()``;
    ///   ``MQTTError/Code/closed`` after ``stop()``.
    public func waitUntilConnected(timeout: Duration) async throws {
        guard let promise = try connection.connectWaiter() else { return }
        defer { connection.forgetConnectWaiter(promise) }
        let connection = self.connection
        try await promise.value(timeout: timeout) {
            let last = connection.lastFailure.map { ": last attempt: \($0.message)" } ?? ""
            return MQTTError(code: .timeout, message: "not connected within \(timeout)\(last)")
        }
    }

    /// Disconnects cleanly (a DISCONNECT, so the broker does not publish the will), stops the
    /// network thread, frees the libmosquitto handle and finishes ``events``. Pending publishes and
    /// waits fail with ``MQTTError/Code/closed``. Idempotent; returns when everything is released
    /// (within about 2 s even if the broker does not answer).
    public func stop() async {
        await connection.stop()
    }
}

/// libmosquitto (with OpenSSL) loaded into the process and initialised, once (never undone: other clients
/// may live until the process ends). Loaded here, when MQTT is first used, not linked: see
/// `iotgw_mosquitto_load`.
private let libmosquittoReady: Result<Void, MQTTError> = {
    var reason = [CChar](repeating: 0, count: 256)
    guard iotgw_mosquitto_load(&reason, reason.count) == 0 else {
        let said = String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return .failure(MQTTError(code: .library, message: "cannot load libmosquitto.so.1 (Debian: libmosquitto1): \(said)"))
    }
    let rc = mosquitto_lib_init()
    guard rc == MOSQ_ERR_SUCCESS.code else {
        return .failure(MQTTError(code: .library, message: "mosquitto_lib_init failed: \(String(cString: mosquitto_strerror(rc)))"))
    }
    return .success(())
}()

/// Throws unless libmosquitto is loaded and initialised; call before any `mosquitto_` or OpenSSL function.
func libmosquittoInitialised() throws { try libmosquittoReady.get() }
