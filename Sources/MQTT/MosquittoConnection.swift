import CMosquitto
import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization

/// Owns one libmosquitto handle, the network thread that drives it and the state its callbacks
/// share with the API.
///
/// `@unchecked Sendable` because of the raw `mosquitto *` handle. It is safe to share because:
/// - the handle runs in libmosquitto's threaded mode (`mosquitto_threaded_set`), in which
///   `mosquitto_publish`, `_subscribe`, `_unsubscribe` and `_disconnect` may be called from any
///   thread while one thread drives the network (`loopOnce`: `mosquitto_loop_read`, `_write`,
///   `_misc`); only the network thread calls `mosquitto_connect_async` and those;
/// - API calls touch the handle only while holding `state` and only while the phase is not
///   `.finished`; the handle is destroyed exactly once, after the phase became `.finished` (by the
///   network thread when it ends, or by `requestStop` if the thread never started), so no call can
///   reach a destroyed handle;
/// - libmosquitto calls back (on the network thread, or on the calling thread for log lines) with
///   a pointer to this object, retained for the handle's whole life (`userData`) and released right
///   after `mosquitto_destroy`.
///
/// Lock order: `state` may be held while calling into libmosquitto; libmosquitto's callbacks take
/// `state` but never while libmosquitto holds a lock that those API calls need (in threaded mode
/// they only queue packets; callbacks run under `callback_mutex`, which the API does not take).
/// The log callback can run inside an API call made under `state`, so it only takes `diagnostics`.
final class MosquittoConnection: @unchecked Sendable {
    /// The largest payload an MQTT packet can carry (remaining length limit, less a short header).
    static let maximumPayload = 268_435_455 - 65_540

    /// How long `stop()` waits for the DISCONNECT to be written before it drops the connection.
    static let stopGrace: Duration = .seconds(2)
    /// `mosquitto_loop` timeout: the longest the thread sleeps before it re-checks stop and timeouts.
    static let loopTimeoutMilliseconds: Int32 = 250

    enum Phase { case idle, running, stopping, finished }

    struct Attempt {
        /// CONNACK return code when the broker refused (non-zero).
        var refusal: Int32?
        /// The TCP connection was established (the attempt got as far as TLS and CONNECT).
        var tcpConnected = false
        /// A CONNACK 0 arrived in this attempt.
        var sessionUp = false
        /// The rc libmosquitto's on_disconnect reported.
        var disconnectCode: Int32?
    }

    struct State {
        var phase = Phase.idle
        /// CONNACK 0 received and the connection not lost since.
        var connected = false
        var attempt = Attempt()
        /// Filters re-subscribed on every connect.
        var subscriptions: [String: MQTTQoS] = [:]
        /// SUBSCRIBE message id -> filter, until its SUBACK.
        var subscribeIDs: [Int32: String] = [:]
        var subackWaiters: [String: [Promise<Void>]] = [:]
        var publishWaiters: [Int32: (promise: Promise<Void>, qos: MQTTQoS)] = [:]
        var connectWaiters: [Promise<Void>] = []
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
        var lastFailure: MQTTError?

        /// Every waiter, removed, to fail them all (stop).
        mutating func takeAllWaiters() -> [Promise<Void>] {
            let all = subackWaiters.values.flatMap { $0 } + publishWaiters.values.map(\.promise) + connectWaiters
            subackWaiters = [:]
            publishWaiters = [:]
            connectWaiters = []
            return all
        }
    }

    private let handle: OpaquePointer
    private let configuration: MQTTConfiguration
    private let logger: Logger
    private let events: AsyncStream<MQTTEvent>.Continuation
    private let backoff: ReconnectBackoff
    private let state = Mutex(State())
    /// libmosquitto error and warning lines (OpenSSL errors among them) of the current attempt.
    private let diagnostics = Mutex<[String]>([])
    /// Messages dropped for their size (see ``MQTTConfiguration/maxPayloadBytes``), and when that was last logged.
    let oversize = Mutex<(count: Int, toldAt: ContinuousClock.Instant?)>((0, nil))
    /// Wakes the network thread from its backoff sleep when `stop()` is called.
    private let wake = DispatchSemaphore(value: 0)
    /// Wakes the network thread's poll(2) when another thread queued a packet (publish, subscribe,
    /// unsubscribe, disconnect): what libmosquitto's own socket pair does for `mosquitto_loop`.
    private let wakeFD: Int32
    /// Counts the TLS records read for one packet against ``MQTTConfiguration/packetLimit`` (see
    /// `iotgw_rx_meter` in CMosquitto's shim.h), with the TLS context of ours that feeds it; nil without
    /// TLS or without ``MQTTConfiguration/maxPayloadBytes``.
    private let metering: (meter: UnsafeMutablePointer<iotgw_rx_meter>, context: OpaquePointer)?
    private var meter: UnsafeMutablePointer<iotgw_rx_meter>? { metering?.meter }
    /// What libmosquitto logs when it has read a whole packet from the broker.
    private let receivedLinePrefix: String

    init(configuration: MQTTConfiguration, logger: Logger, events: AsyncStream<MQTTEvent>.Continuation) throws {
        var logger = logger
        logger[metadataKey: "mqtt.client_id"] = "\(configuration.clientID)"
        let wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw MQTTError(code: .library, message: "eventfd failed: \(String(cString: strerror(errno)))") }
        guard let handle = mosquitto_new(configuration.clientID, configuration.cleanSession, nil) else {
            close(wakeFD)
            throw MQTTError(code: .library, message: "mosquitto_new failed: \(String(cString: strerror(errno)))")
        }
        var metering: (meter: UnsafeMutablePointer<iotgw_rx_meter>, context: OpaquePointer)?
        do {
            try Self.configure(handle, configuration)
            if configuration.tls != nil, let limit = configuration.packetLimit {
                metering = try Self.meterPackets(handle, limit: limit)
            }
        } catch {
            mosquitto_destroy(handle)
            close(wakeFD)
            if let metering { SSL_CTX_free(metering.context); free(metering.meter) }
            throw error
        }
        self.handle = handle
        self.wakeFD = wakeFD
        self.metering = metering
        self.receivedLinePrefix = "Client \(configuration.clientID) received "
        self.configuration = configuration
        self.logger = logger
        self.events = events
        self.backoff = ReconnectBackoff(bounds: configuration.reconnectDelay)
        installCallbacks()
        // Balanced by the release in destroyHandle(), right after mosquitto_destroy.
        mosquitto_user_data_set(handle, Unmanaged.passRetained(self).toOpaque())
    }

    private static func configure(_ handle: OpaquePointer, _ configuration: MQTTConfiguration) throws {
        func check(_ rc: Int32, _ what: String, code: MQTTError.Code = .invalidArgument) throws {
            guard rc == MOSQ_ERR_SUCCESS.code else {
                throw MQTTError(code: code, message: "\(what): \(String(cString: mosquitto_strerror(rc)))")
            }
        }
        // The network thread is ours (not mosquitto_loop_start), so threaded mode must be set by hand.
        try check(mosquitto_threaded_set(handle, true), "mosquitto_threaded_set", code: .library)
        try check(mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311), "MQTT 3.1.1", code: .library)
        if let tls = configuration.tls {
            // mosquitto_tls_set opens each file to check it is readable.
            try check(
                mosquitto_tls_set(handle, tls.caFile, nil, tls.certificateFile, tls.keyFile) { _, _, _, _ in 0 },
                "cannot use CA file \(tls.caFile)" + (tls.certificateFile.map { ", certificate \($0), key \(tls.keyFile ?? "")" } ?? "")
            )
            // SSL_VERIFY_PEER (1): verify the broker's certificate; TLS 1.3 only.
            try check(mosquitto_tls_opts_set(handle, 1, "tlsv1.3", nil), "TLS options")
            // Check the broker's certificate names the host we connect to.
            try check(mosquitto_tls_insecure_set(handle, false), "TLS host name check")
        }
        if let username = configuration.username {
            try check(mosquitto_username_pw_set(handle, username, configuration.password), "username/password")
        }
        if let will = configuration.will {
            let rc = will.payload.withUnsafeBytes { bytes in
                mosquitto_will_set(handle, will.topic, Int32(bytes.count), bytes.baseAddress, will.qos.rawValue, will.retain)
            }
            try check(rc, "last will on \(will.topic)")
        }
    }

    /// Hands libmosquitto a TLS context of ours (set up by `loadTLS` before each attempt) whose every
    /// record read is counted by a new meter.
    private static func meterPackets(_ handle: OpaquePointer, limit: Int) throws
        -> (meter: UnsafeMutablePointer<iotgw_rx_meter>, context: OpaquePointer) {
        guard let meter = iotgw_meter_new(Int64(limit)) else { throw MQTTError(code: .library, message: "out of memory") }
        guard let context = iotgw_metered_tls_context(meter) else {
            free(meter)
            throw MQTTError(code: .library, message: "SSL_CTX_new failed")
        }
        // libmosquitto takes a reference of its own (dropped in mosquitto_destroy); ours goes in destroyHandle.
        let set = mosquitto_void_option(handle, MOSQ_OPT_SSL_CTX, UnsafeMutableRawPointer(context))
        // As it is: libmosquitto's own settings (on by default) would bring its broken check (shim.h).
        let rc = set == MOSQ_ERR_SUCCESS.code ? mosquitto_int_option(handle, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) : set
        guard rc == MOSQ_ERR_SUCCESS.code else {
            SSL_CTX_free(context)
            free(meter)
            throw MQTTError(code: .library, message: "cannot use a TLS context of our own: \(String(cString: mosquitto_strerror(rc)))")
        }
        return (meter, context)
    }

    /// Loads the TLS files into our context before an attempt (renewed files are picked up, as
    /// libmosquitto does with its own). Returns why it failed, in the words of a libmosquitto TLS line.
    private func loadTLS(_ context: OpaquePointer) -> String? {
        guard let tls = configuration.tls else { return nil }
        let step = iotgw_tls_load(context, tls.caFile, tls.certificateFile, tls.keyFile, configuration.host)
        guard step != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: 1024)
        iotgw_tls_errors(&buffer, buffer.count)
        let what = [1: "the CA file \(tls.caFile)", 2: "the certificate \(tls.certificateFile ?? "")", 3: "the key \(tls.keyFile ?? "")",
                    4: "the key \(tls.keyFile ?? "") with the certificate \(tls.certificateFile ?? "")",
                    5: "the broker's name \(configuration.host)"][Int(step)] ?? "TLS settings"
        let errors = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return "TLS setup: cannot use \(what)" + (errors.isEmpty ? "" : ": OpenSSL: \(errors)")
    }

    // MARK: - API side (any thread)

    var lastFailure: MQTTError? { state.withLock { $0.lastFailure } }

    func start() throws {
        let begin: Bool? = state.withLock { state in
            switch state.phase {
            case .idle:
                state.phase = .running
                return true
            case .running:
                return false
            case .stopping, .finished:
                return nil
            }
        }
        guard let begin else { throw MQTTError(code: .closed, message: "the client was stopped; create a new one") }
        guard begin else { return }
        let thread = Thread { [self] in runNetworkLoop() }
        thread.name = "mqtt-network"
        thread.start()
    }

    /// Registers the filter, sends SUBSCRIBE if connected; returns a SUBACK promise when asked for one.
    func subscribe(_ filter: String, qos: MQTTQoS, awaitingSUBACK: Bool) throws -> Promise<Void>? {
        let promise = awaitingSUBACK ? Promise<Void>() : nil
        try state.withLock { state in
            guard state.phase == .idle || state.phase == .running else { throw Self.closedError }
            state.subscriptions[filter] = qos
            if let promise { state.subackWaiters[filter, default: []].append(promise) }
            guard state.connected else { return }  // sent on the next connect
            var mid: Int32 = 0
            let rc = mosquitto_subscribe(handle, &mid, filter, qos.rawValue)
            if rc == MOSQ_ERR_SUCCESS.code {
                state.subscribeIDs[mid] = filter
                poke()
            } else if rc != MOSQ_ERR_NO_CONN.code {  // offline after all: sent on the next connect
                state.subscriptions[filter] = nil
                state.subackWaiters[filter] = nil
                let invalid = [MOSQ_ERR_INVAL.code, MOSQ_ERR_MALFORMED_UTF8.code, MOSQ_ERR_OVERSIZE_PACKET.code].contains(rc)
                throw MQTTError(
                    code: invalid ? .invalidArgument : .library,
                    message: "cannot subscribe to \(filter.debugDescription): \(String(cString: mosquitto_strerror(rc)))"
                )
            }
        }
        return promise
    }

    func forgetSUBACKWaiter(_ promise: Promise<Void>, filter: String) {
        state.withLock { state in
            state.subackWaiters[filter]?.removeAll { $0 === promise }
            if state.subackWaiters[filter]?.isEmpty == true { state.subackWaiters[filter] = nil }
        }
    }

    func unsubscribe(_ filter: String) throws {
        let orphans: [Promise<Void>] = try state.withLock { state in
            guard state.phase == .idle || state.phase == .running else { throw Self.closedError }
            state.subscriptions[filter] = nil
            let orphans = state.subackWaiters.removeValue(forKey: filter) ?? []
            if state.connected {
                let rc = mosquitto_unsubscribe(handle, nil, filter)
                if rc == MOSQ_ERR_SUCCESS.code { poke() }
                if rc != MOSQ_ERR_SUCCESS.code && rc != MOSQ_ERR_NO_CONN.code {
                    throw MQTTError(code: .library, message: "cannot unsubscribe from \(filter.debugDescription): \(String(cString: mosquitto_strerror(rc)))")
                }
            }
            return orphans
        }
        for promise in orphans {
            promise.complete(.failure(MQTTError(code: .closed, message: "unsubscribed from \(filter.debugDescription) before its SUBACK")))
        }
    }

    /// Hands the message to libmosquitto while connected; the promise completes on its on_publish.
    func publish(_ message: MQTTMessage) throws -> (mid: Int32, promise: Promise<Void>) {
        let promise = Promise<Void>()
        let mid: Int32 = try state.withLock { state in
            switch state.phase {
            case .stopping, .finished: throw Self.closedError
            case .idle: throw MQTTError(code: .notConnected, message: "the client is not started")
            case .running: break
            }
            guard state.connected else {
                let why = state.lastFailure.map { " (\($0.message))" } ?? ""
                throw MQTTError(code: .notConnected, message: "not connected to \(configuration.host):\(configuration.port)\(why)")
            }
            var mid: Int32 = 0
            let rc = message.payload.withUnsafeBytes { bytes in
                mosquitto_publish(handle, &mid, message.topic, Int32(bytes.count), bytes.baseAddress, message.qos.rawValue, message.retain)
            }
            guard rc == MOSQ_ERR_SUCCESS.code else { throw Self.publishError(rc, topic: message.topic) }
            poke()
            // Registered under the same lock as the call: on_publish for this mid waits for the lock.
            state.publishWaiters[mid] = (promise, message.qos)
            return mid
        }
        return (mid, promise)
    }

    func forgetPublishWaiter(_ promise: Promise<Void>, mid: Int32) {
        state.withLock { state in
            if state.publishWaiters[mid]?.promise === promise { state.publishWaiters[mid] = nil }
        }
    }

    /// A promise that completes on the next connect; nil when connected now.
    func connectWaiter() throws -> Promise<Void>? {
        try state.withLock { state in
            switch state.phase {
            case .stopping, .finished: throw Self.closedError
            case .idle: throw MQTTError(code: .notConnected, message: "the client is not started")
            case .running: break
            }
            if state.connected { return nil }
            let promise = Promise<Void>()
            state.connectWaiters.append(promise)
            return promise
        }
    }

    func forgetConnectWaiter(_ promise: Promise<Void>) {
        state.withLock { $0.connectWaiters.removeAll { $0 === promise } }
    }

    /// Asks the network thread to disconnect and end; an unstarted handle is released at once.
    /// Returns whether there is a thread to wait for.
    @discardableResult
    func requestStop() -> Bool {
        enum Action { case none, destroyNow, signal }
        var orphans: [Promise<Void>] = []
        let action: Action = state.withLock { state in
            switch state.phase {
            case .idle:
                state.phase = .finished
                orphans = state.takeAllWaiters()
                return .destroyNow
            case .running:
                state.phase = .stopping
                orphans = state.takeAllWaiters()
                // Queues a DISCONNECT (so no will) and wakes the loop; NO_CONN when offline.
                _ = mosquitto_disconnect(handle)
                poke()
                return .signal
            case .stopping:
                return .signal
            case .finished:
                return .none
            }
        }
        for promise in orphans { promise.complete(.failure(Self.closedError)) }
        switch action {
        case .none:
            return false
        case .destroyNow:
            destroyHandle()
            events.finish()
            return false
        case .signal:
            wake.signal()
            return true
        }
    }

    func stop() async {
        guard requestStop() else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let finished = state.withLock { state in
                if state.phase == .finished { return true }
                state.exitWaiters.append(continuation)
                return false
            }
            if finished { continuation.resume() }
        }
    }

    private func destroyHandle() {
        mosquitto_destroy(handle)
        close(wakeFD)
        if let metering {  // the context first: it points to the meter
            SSL_CTX_free(metering.context)
            free(metering.meter)
        }
        Unmanaged.passUnretained(self).release()
    }

    // MARK: - Network thread

    private var isStopping: Bool { state.withLock { $0.phase != .running } }

    /// The whole life of the connection, on the dedicated network thread.
    private func runNetworkLoop() {
        let host = configuration.host
        let port = Int32(configuration.port)
        let keepAlive = Int32(configuration.keepAlive.components.seconds)
        var failures = 0
        logger.debug("mqtt network thread started", metadata: ["mqtt.broker": "\(host):\(port)"])
        while !isStopping {
            state.withLock { $0.attempt = Attempt() }
            diagnostics.withLock { $0.removeAll() }
            if let meter { iotgw_meter_reset(meter) }
            let started = ContinuousClock.now
            var rc = MOSQ_ERR_SUCCESS.code
            var err: Int32 = 0
            if let context = metering?.context, let failed = loadTLS(context) {
                diagnostics.withLock { $0.append(failed) }
                rc = MOSQ_ERR_TLS.code
            } else {
                // connect_async stores host/port/keepalive and starts a non-blocking TCP connect each
                // time (closing the previous socket first), then queues CONNECT.
                rc = mosquitto_connect_async(handle, host, port, keepAlive)
                err = errno
            }
            var timedOut = false
            if rc == MOSQ_ERR_SUCCESS.code {
                switch awaitTCPConnect(deadline: started + configuration.connectTimeout, connectErrno: err) {
                case .connected:
                    state.withLock { $0.attempt.tcpConnected = true }
                    (rc, err, timedOut) = pump(started: started)
                case .failed(let code):
                    (rc, err) = (MOSQ_ERR_ERRNO.code, code)
                case .timedOut:
                    timedOut = true
                case .stopped:
                    break
                }
            }
            let worked = endAttempt(rc: rc, errno: err, timedOut: timedOut)
            if isStopping { break }
            if worked { failures = 0 }
            let delay = backoff.delay(afterFailures: failures, jitter: Double.random(in: 0...1))
            failures += 1
            logger.debug("mqtt reconnect scheduled", metadata: ["mqtt.delay": "\(delay)"])
            _ = wake.wait(timeout: .now() + .nanoseconds(Int(min(delay.seconds, 86_400) * 1e9)))
        }
        finish()
    }

    enum TCPOutcome { case connected, failed(Int32), timedOut, stopped }

    /// Waits for the non-blocking TCP connect that `mosquitto_connect_async` started. libmosquitto
    /// does not notice a failed one itself: its first SSL_connect then fails with SSL_ERROR_SYSCALL,
    /// which it treats as "try again", so `mosquitto_loop` would spin on the dead socket.
    ///
    /// `.connected` also when the connection was up and has been reset since (on loopback the TCP
    /// connect, and on a busy machine even the client's side of the TLS 1.3 handshake, can finish
    /// inside `mosquitto_connect_async`): the broker may have sent an alert before it reset, which
    /// libmosquitto can still read in `pump`. `connectErrno` is errno after `mosquitto_connect_async`:
    /// its SSL_connect may have consumed the socket's error already (SO_ERROR is 0 then).
    private func awaitTCPConnect(deadline: ContinuousClock.Instant, connectErrno: Int32) -> TCPOutcome {
        let fd = mosquitto_socket(handle)
        guard fd >= 0 else { return .failed(ENOTCONN) }
        let tcpFailures: Set<Int32> = [ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH]
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&pfd, 1, Self.loopTimeoutMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if ready > 0 {
                var soError: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                if getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length) != 0 { return .failed(errno) }
                if soError != 0 { return tcpFailures.contains(soError) ? .failed(soError) : .connected }
                if pfd.revents & Int16(POLLHUP | POLLERR) != 0 && tcpFailures.contains(connectErrno) {
                    return .failed(connectErrno)
                }
                return .connected
            }
            if isStopping { return .stopped }
            if ContinuousClock.now >= deadline { return .timedOut }
        }
    }

    /// Runs `mosquitto_loop` until the connection ends (or stop's grace period or the connect
    /// timeout runs out). Returns libmosquitto's last result, errno and whether it timed out.
    private func pump(started: ContinuousClock.Instant) -> (Int32, Int32, Bool) {
        var stopSeen: ContinuousClock.Instant?
        var hangups = 0
        while true {
            let rc = loopOnce(timeoutMilliseconds: Self.loopTimeoutMilliseconds)
            let err = errno
            guard rc == MOSQ_ERR_SUCCESS.code else { return (rc, err, false) }
            let (phase, connected) = state.withLock { ($0.phase, $0.connected) }
            let now = ContinuousClock.now
            if phase != .running {
                // stop() queued a DISCONNECT; give it a moment to go out.
                if let seen = stopSeen, now - seen > Self.stopGrace { return (rc, err, false) }
                if stopSeen == nil { stopSeen = now }
                continue
            }
            guard !connected else { continue }
            if now - started > configuration.connectTimeout { return (rc, err, true) }
            // A connection reset during the TLS handshake is the same SSL_ERROR_SYSCALL case as in
            // awaitTCPConnect: libmosquitto keeps "retrying" a dead socket. It had a few loop passes
            // to read whatever the broker sent (an alert fails the attempt properly); still hung up
            // after that means it spins. mosquitto resets the connection this way when it rejects a
            // client certificate and its alert is lost (it closes with our CONNECT unread: RST).
            var pfd = pollfd(fd: mosquitto_socket(handle), events: 0, revents: 0)
            if pfd.fd >= 0, poll(&pfd, 1, 0) > 0, pfd.revents & Int16(POLLHUP) != 0 {
                hangups += 1
                if hangups >= 3 { return (MOSQ_ERR_TLS_HANDSHAKE.code, ECONNRESET, false) }
            }
        }
    }

    /// Makes a poll(2) in `loopOnce` return now.
    private func poke() { _ = eventfd_write(wakeFD, 1) }

    /// One pass of what `mosquitto_loop` does, with poll(2) where it uses select(2): libmosquitto 2.0's
    /// `mosquitto_loop` returns MOSQ_ERR_INVAL for a socket (or its internal socket pair) numbered
    /// FD_SETSIZE (1024) or above, so in a process with many files open (a vendor daemon serving a
    /// fleet, a fleet simulator with a thousand gateways) it could never connect. Through the calls
    /// libmosquitto documents for an outside loop: readable (or hung up) → `mosquitto_loop_read`, which
    /// also carries the TLS handshake on; writable while `mosquitto_want_write`, or poked because
    /// another thread queued a packet → `mosquitto_loop_write`; then `mosquitto_loop_misc` (keepalive).
    private func loopOnce(timeoutMilliseconds: Int32) -> Int32 {
        let socket = mosquitto_socket(handle)
        guard socket >= 0 else { return MOSQ_ERR_NO_CONN.code }
        var fds = [
            pollfd(fd: socket, events: Int16(POLLIN) | (mosquitto_want_write(handle) ? Int16(POLLOUT) : 0), revents: 0),
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        let ready = poll(&fds, 2, timeoutMilliseconds)
        if ready < 0 { return errno == EINTR ? MOSQ_ERR_SUCCESS.code : MOSQ_ERR_ERRNO.code }
        var write = fds[0].revents & Int16(POLLOUT) != 0
        if fds[1].revents & Int16(POLLIN) != 0 {
            var value: eventfd_t = 0
            _ = eventfd_read(wakeFD, &value)
            write = true
        }
        // During the TLS handshake the socket may be polled for writing only (OpenSSL wants to write):
        // mosquitto_loop then continues the handshake, which here mosquitto_loop_read does (its first step).
        if fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 || fds[0].revents & Int16(POLLOUT) != 0 {
            let rc = mosquitto_loop_read(handle, 1)
            if rc != MOSQ_ERR_SUCCESS.code || mosquitto_socket(handle) < 0 { return rc }
        }
        if write {
            let rc = mosquitto_loop_write(handle, 1)
            if rc != MOSQ_ERR_SUCCESS.code || mosquitto_socket(handle) < 0 { return rc }
        }
        return mosquitto_loop_misc(handle)
    }

    /// Closes the books on one attempt: the event, the waiters, the log line. Returns whether the
    /// connection worked: the broker accepted it, and it was not cut for a packet over the limit (a
    /// broker that sends what must be dropped is backed off from like one that fails).
    private func endAttempt(rc: Int32, errno err: Int32, timedOut: Bool) -> Bool {
        let lines = diagnostics.withLock { $0 }
        let tripped = meter.map { iotgw_meter_trip($0) } ?? 0
        var orphans: [Promise<Void>] = []
        var failedConnectWaiters: [Promise<Void>] = []
        let (attempt, failure): (Attempt, MQTTError?) = state.withLock { state in
            state.connected = false
            state.subscribeIDs.removeAll()
            let attempt = state.attempt
            // stop() ended it: nothing failed.
            guard state.phase == .running else { return (attempt, nil) }
            let broker = "\(configuration.host):\(configuration.port)"
            let failure = tripped > 0
                ? MQTTError(code: .protocolError, message: "\(broker) sent a packet of over \(configuration.packetLimit ?? 0) bytes: "
                    + "the connection was closed \(tripped) bytes into it")
                : Self.classify(loopResult: rc, errno: err, timedOut: timedOut, attempt: attempt, diagnostics: lines,
                                broker: broker, connectTimeout: configuration.connectTimeout)
            state.lastFailure = failure
            // QoS 0 packets not yet written are dropped on reconnect; QoS 1 ones are resent.
            for (mid, waiter) in state.publishWaiters where waiter.qos == .atMostOnce {
                orphans.append(waiter.promise)
                state.publishWaiters[mid] = nil
            }
            // Waiting for a connection makes no sense after these until someone acts.
            if failure.code == .refused || failure.code == .tls {
                failedConnectWaiters = state.connectWaiters
                state.connectWaiters = []
            }
            return (attempt, failure)
        }
        if tripped > 0 { countOversize(bytes: Int(tripped), limit: configuration.packetLimit ?? 0) }
        guard let failure else {
            if attempt.sessionUp {
                logger.info("mqtt disconnected", metadata: ["mqtt.reason": "stopped"])
                events.yield(.disconnected(reason: "stopped by the client"))
            }
            return attempt.sessionUp && tripped == 0
        }
        logger.debug("mqtt attempt ended", metadata: [
            "mqtt.rc": "\(rc)", "mqtt.errno": "\(err)", "mqtt.tcp_connected": "\(attempt.tcpConnected)",
            "mqtt.disconnect_rc": "\(attempt.disconnectCode.map(String.init) ?? "-")",
        ])
        let lostError = MQTTError(code: .notConnected, message: "the connection ended before the message was sent: \(failure.message)")
        for promise in orphans { promise.complete(.failure(lostError)) }
        for promise in failedConnectWaiters { promise.complete(.failure(failure)) }
        if attempt.sessionUp {
            logger.warning("mqtt connection lost", metadata: ["mqtt.reason": "\(failure.message)", "mqtt.error": "\(failure.code)"])
        } else {
            logger.info("mqtt connection attempt failed", metadata: ["mqtt.reason": "\(failure.message)", "mqtt.error": "\(failure.code)"])
        }
        events.yield(.disconnected(reason: failure.description))
        return attempt.sessionUp && tripped == 0
    }

    /// Why an attempt ended, from what libmosquitto returned and logged. Pure; unit-tested.
    static func classify(
        loopResult rc: Int32, errno err: Int32, timedOut: Bool, attempt: Attempt, diagnostics: [String],
        broker: String, connectTimeout: Duration
    ) -> MQTTError {
        let details = diagnostics.isEmpty ? "" : ": " + diagnostics.joined(separator: "; ")
        if let refusal = attempt.refusal {
            return MQTTError(code: .refused, message: "\(broker) refused the connection: \(String(cString: mosquitto_connack_string(refusal))) (CONNACK \(refusal))")
        }
        if timedOut {
            return MQTTError(code: .timeout, message: "no CONNACK from \(broker) within \(connectTimeout)\(details)")
        }
        let effective = attempt.disconnectCode.flatMap { $0 == MOSQ_ERR_SUCCESS.code ? nil : $0 } ?? rc
        let tlsLines = diagnostics.filter { $0.contains("OpenSSL Error") || $0.contains("TLS") }
        let eofOnly = !tlsLines.isEmpty && tlsLines.allSatisfy(isUnexpectedEOF)
        let sysError = err == 0 ? "" : String(cString: strerror(err))
        func lost(_ what: String) -> MQTTError {
            attempt.sessionUp
                ? MQTTError(code: .connectionLost, message: "connection to \(broker) lost: \(what)")
                : MQTTError(code: .unreachable, message: "cannot connect to \(broker): \(what)")
        }
        // A TLS alert or verification failure before the broker accepted us: certificates.
        if !tlsLines.isEmpty && !eofOnly && !attempt.sessionUp {
            return MQTTError(code: .tls, message: "TLS with \(broker) failed\(details)")
        }
        // Reset after TCP was up and before CONNACK. With TLS 1.3 the client's side of the handshake
        // is done before the broker checks the client certificate; mosquitto then sends an alert
        // and closes with our CONNECT unread, which resets the connection, and the alert is often
        // never read. (A broker killed in the middle of a handshake looks the same; rare.)
        if !attempt.sessionUp && attempt.tcpConnected && (err == ECONNRESET || err == EPIPE) {
            return MQTTError(code: .tls, message: "TLS with \(broker) failed: the broker reset the connection during the handshake (as mosquitto does when it rejects the client certificate)\(details)")
        }
        switch effective {
        case MOSQ_ERR_TLS.code, MOSQ_ERR_TLS_HANDSHAKE.code:
            return attempt.sessionUp ? lost("TLS error\(details)") : MQTTError(code: .tls, message: "TLS with \(broker) failed\(details)")
        case MOSQ_ERR_CONN_REFUSED.code:
            return MQTTError(code: .refused, message: "\(broker) refused the connection\(details)")
        case MOSQ_ERR_PROTOCOL.code, MOSQ_ERR_MALFORMED_PACKET.code, MOSQ_ERR_MALFORMED_UTF8.code, MOSQ_ERR_DUPLICATE_PROPERTY.code:
            return MQTTError(code: .protocolError, message: "protocol error with \(broker): \(String(cString: mosquitto_strerror(effective)))\(details)")
        case MOSQ_ERR_EAI.code, MOSQ_ERR_LOOKUP.code:
            return MQTTError(code: .unreachable, message: "cannot resolve \(broker)\(details)")
        case MOSQ_ERR_ERRNO.code:
            if err == EPROTO { return lost(eofOnly ? "the peer closed the connection without TLS close_notify" : "TLS error\(details)") }
            return lost(sysError.isEmpty ? "system error\(details)" : sysError)
        case MOSQ_ERR_CONN_LOST.code, MOSQ_ERR_NO_CONN.code:
            if eofOnly { return lost("the peer closed the connection without TLS close_notify") }
            return lost(sysError.isEmpty || err == EAGAIN ? "the connection was closed" : sysError)
        case MOSQ_ERR_KEEPALIVE.code:
            return lost("no answer within 1.5 keepalive intervals")
        case MOSQ_ERR_NOMEM.code:
            return MQTTError(code: .library, message: "libmosquitto is out of memory")
        default:
            return MQTTError(code: .library, message: "libmosquitto: \(String(cString: mosquitto_strerror(effective))) (\(effective))\(details)")
        }
    }

    /// OpenSSL 3 reports a TCP close without TLS close_notify as error 0A000126
    /// (ERR_LIB_SSL, SSL_R_UNEXPECTED_EOF_WHILE_READING): a dead peer, not a certificate problem.
    static func isUnexpectedEOF(_ line: String) -> Bool {
        line.contains("error:0A000126:")
    }

    private func finish() {
        let (orphans, exitWaiters): ([Promise<Void>], [CheckedContinuation<Void, Never>]) = state.withLock { state in
            state.phase = .finished
            state.connected = false
            let waiters = state.exitWaiters
            state.exitWaiters = []
            return (state.takeAllWaiters(), waiters)
        }
        for promise in orphans { promise.complete(.failure(Self.closedError)) }
        logger.debug("mqtt network thread ended")
        // No API call can reach the handle any more (phase is .finished under the lock).
        destroyHandle()
        events.finish()
        for waiter in exitWaiters { waiter.resume() }
    }

    // MARK: - libmosquitto callbacks (network thread)

    private func installCallbacks() {
        mosquitto_connect_with_flags_callback_set(handle) { _, userData, rc, flags in
            MosquittoConnection.from(userData)?.didConnect(rc: rc, flags: flags)
        }
        mosquitto_disconnect_callback_set(handle) { _, userData, rc in
            MosquittoConnection.from(userData)?.didDisconnect(rc: rc)
        }
        mosquitto_publish_callback_set(handle) { _, userData, mid in
            MosquittoConnection.from(userData)?.didPublish(mid: mid)
        }
        mosquitto_subscribe_callback_set(handle) { _, userData, mid, count, granted in
            MosquittoConnection.from(userData)?.didSubscribe(mid: mid, granted: count > 0 ? granted?[0] : nil)
        }
        mosquitto_message_callback_set(handle) { _, userData, message in
            guard let message else { return }
            MosquittoConnection.from(userData)?.didReceive(message.pointee)
        }
        mosquitto_log_callback_set(handle) { _, userData, level, text in
            guard let text else { return }
            MosquittoConnection.from(userData)?.didLog(level: level, text: String(cString: text))
        }
    }

    private static func from(_ userData: UnsafeMutableRawPointer?) -> MosquittoConnection? {
        userData.map { Unmanaged<MosquittoConnection>.fromOpaque($0).takeUnretainedValue() }
    }

    private func didConnect(rc: Int32, flags: Int32) {
        guard rc == 0 else {
            state.withLock { $0.attempt.refusal = rc }
            return
        }
        let sessionPresent = flags & 1 != 0
        let waiters: [Promise<Void>] = state.withLock { state in
            state.connected = true
            state.attempt.sessionUp = true
            state.lastFailure = nil
            guard state.phase == .running else { return [] }  // stop() is disconnecting already
            // Re-subscribe everything: with a clean session the broker forgot it, and with a
            // persistent one it makes the broker send the retained messages again.
            for (filter, qos) in state.subscriptions.sorted(by: { $0.key < $1.key }) {
                var mid: Int32 = 0
                let rc = mosquitto_subscribe(handle, &mid, filter, qos.rawValue)
                if rc == MOSQ_ERR_SUCCESS.code {
                    state.subscribeIDs[mid] = filter
                } else {
                    logger.warning("mqtt subscribe failed", metadata: ["mqtt.filter": "\(filter)", "mqtt.error": "\(String(cString: mosquitto_strerror(rc)))"])
                }
            }
            let waiters = state.connectWaiters
            state.connectWaiters = []
            return waiters
        }
        logger.info("mqtt connected", metadata: [
            "mqtt.broker": "\(configuration.host):\(configuration.port)", "mqtt.session_present": "\(sessionPresent)",
        ])
        events.yield(.connected(sessionPresent: sessionPresent))
        for promise in waiters { promise.complete(.success(())) }
    }

    private func didDisconnect(rc: Int32) {
        state.withLock { state in
            state.connected = false
            state.attempt.disconnectCode = rc
        }
    }

    private func didPublish(mid: Int32) {
        let waiter = state.withLock { $0.publishWaiters.removeValue(forKey: mid) }
        waiter?.promise.complete(.success(()))
    }

    private func didSubscribe(mid: Int32, granted: Int32?) {
        let (filter, waiters): (String?, [Promise<Void>]) = state.withLock { state in
            guard let filter = state.subscribeIDs.removeValue(forKey: mid) else { return (nil, []) }
            return (filter, state.subackWaiters.removeValue(forKey: filter) ?? [])
        }
        guard let filter else { return }
        if granted == 0x80 {
            logger.warning("mqtt subscription refused", metadata: ["mqtt.filter": "\(filter)"])
            let error = MQTTError(code: .refused, message: "the broker refused the subscription to \(filter.debugDescription) (SUBACK 0x80)")
            for promise in waiters { promise.complete(.failure(error)) }
        } else {
            for promise in waiters { promise.complete(.success(())) }
        }
    }

    /// Counts a message dropped for its size (one read whole, or one whose connection was closed
    /// under it) and says so once a minute at most: the sender decides how often this happens.
    private func countOversize(bytes: Int, limit: Int) {
        let (count, tell) = oversize.withLock { o -> (Int, Bool) in
            o.count += 1
            let now = ContinuousClock.now
            guard o.toldAt.map({ now - $0 >= .seconds(60) }) ?? true else { return (o.count, false) }
            o.toldAt = now
            return (o.count, true)
        }
        if tell {
            logger.warning("mqtt messages over the payload limit dropped", metadata: [
                "mqtt.bytes": "\(bytes)", "mqtt.limit": "\(limit)", "mqtt.dropped": "\(count)",
            ])
        }
    }

    private func didReceive(_ message: mosquitto_message) {
        guard let topic = message.topic else { return }
        if let max = configuration.maxPayloadBytes, Int(message.payloadlen) > max {
            countOversize(bytes: Int(message.payloadlen), limit: max)
            return
        }
        let payload: [UInt8] =
            if let bytes = message.payload, message.payloadlen > 0 {
                Array(UnsafeRawBufferPointer(start: bytes, count: Int(message.payloadlen)))
            } else {
                []
            }
        let delivered = MQTTMessage(
            topic: String(cString: topic), payload: payload,
            qos: MQTTQoS(rawValue: min(message.qos, 1)) ?? .atLeastOnce, retain: message.retain
        )
        logger.trace("mqtt message", metadata: ["mqtt.topic": "\(delivered.topic)", "mqtt.bytes": "\(payload.count)"])
        events.yield(.message(delivered))
    }

    /// May run on any thread, inside an API call that holds `state`: touches only `diagnostics`.
    private func didLog(level: Int32, text: String) {
        if let meter, level == MOSQ_LOG_DEBUG, text.hasPrefix(receivedLinePrefix) { iotgw_meter_packet_done(meter) }
        guard level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING) != 0 else { return }
        diagnostics.withLock { lines in
            if lines.count < 8 { lines.append(text) }
        }
        logger.debug("libmosquitto", metadata: ["mqtt.library_log": "\(text)"])
    }

    // MARK: - Errors

    static let closedError = MQTTError(code: .closed, message: "the client was stopped")

    static func publishError(_ rc: Int32, topic: String) -> MQTTError {
        let said = String(cString: mosquitto_strerror(rc))
        switch rc {
        case MOSQ_ERR_INVAL.code, MOSQ_ERR_PAYLOAD_SIZE.code, MOSQ_ERR_MALFORMED_UTF8.code, MOSQ_ERR_OVERSIZE_PACKET.code, MOSQ_ERR_QOS_NOT_SUPPORTED.code:
            return MQTTError(code: .invalidArgument, message: "cannot publish to \(topic): \(said)")
        case MOSQ_ERR_NO_CONN.code:
            return MQTTError(code: .notConnected, message: "cannot publish to \(topic): \(said)")
        default:
            return MQTTError(code: .library, message: "cannot publish to \(topic): \(said) (\(rc))")
        }
    }
}
