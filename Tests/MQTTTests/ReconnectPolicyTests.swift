import CMosquitto
import Glibc
import Testing
@testable import MQTT

@Suite("Reconnect backoff and failure reasons", .timeLimit(.minutes(1)))
struct ReconnectPolicyTests {
    @Test func delaysDoubleFromTheLowerToTheUpperBound() {
        let backoff = ReconnectBackoff(bounds: .seconds(1) ... .seconds(30))
        let full = (0..<8).map { backoff.delay(afterFailures: $0, jitter: 1) }
        #expect(full == [1, 2, 4, 8, 16, 30, 30, 30].map { Duration.seconds($0) })
        #expect(backoff.delay(afterFailures: 1_000, jitter: 1) == .seconds(30))
    }

    @Test func jitterStaysBetweenHalfAndAllButNeverBelowTheLowerBound() {
        let backoff = ReconnectBackoff(bounds: .seconds(1) ... .seconds(30))
        #expect(backoff.delay(afterFailures: 3, jitter: 0) == .seconds(4))
        #expect(backoff.delay(afterFailures: 3, jitter: 0.5) == .seconds(6))
        #expect(backoff.delay(afterFailures: 0, jitter: 0) == .seconds(1))
        let fixed = ReconnectBackoff(bounds: .seconds(3) ... .seconds(3))
        #expect((0..<5).allSatisfy { fixed.delay(afterFailures: $0, jitter: .random(in: 0...1)) == .seconds(3) })
    }

    private func classify(
        rc: mosq_err_t, errno err: Int32 = 0, tcp: Bool = false, up: Bool = false, refusal: Int32? = nil, lines: [String] = []
    ) -> MQTTError {
        var attempt = MosquittoConnection.Attempt()
        attempt.tcpConnected = tcp || up
        attempt.sessionUp = up
        attempt.refusal = refusal
        return MosquittoConnection.classify(
            loopResult: rc.code, errno: err, timedOut: false, attempt: attempt, diagnostics: lines,
            broker: "127.0.0.1:8883", connectTimeout: .seconds(15)
        )
    }

    @Test func aCONNACKRefusalIsRefused() {
        let error = classify(rc: MOSQ_ERR_CONN_REFUSED, refusal: 5)
        #expect(error.code == .refused)
        #expect(error.message.contains("not authorised"), "\(error)")
    }

    @Test func aTLSAlertBeforeCONNACKIsTLS() {
        let error = classify(rc: MOSQ_ERR_ERRNO, errno: EPROTO, lines: ["OpenSSL Error[0]: error:0A000418:SSL routines::tlsv1 alert unknown ca"])
        #expect(error.code == .tls)
        #expect(error.message.contains("unknown ca"))
    }

    @Test func aDeadBrokerIsALostConnectionNotATLSProblem() {
        let eof = ["OpenSSL Error[0]: error:0A000126:SSL routines::unexpected eof while reading"]
        #expect(classify(rc: MOSQ_ERR_CONN_LOST, up: true, lines: eof).code == .connectionLost)
        #expect(classify(rc: MOSQ_ERR_ERRNO, errno: EPROTO, up: true, lines: eof).code == .connectionLost)
        #expect(classify(rc: MOSQ_ERR_ERRNO, errno: EPROTO, up: false, lines: eof).code == .unreachable)
    }

    @Test func aResetBeforeCONNACKIsTLS() {
        for rc in [MOSQ_ERR_TLS_HANDSHAKE, MOSQ_ERR_CONN_LOST, MOSQ_ERR_ERRNO] {
            let error = classify(rc: rc, errno: ECONNRESET, tcp: true)
            #expect(error.code == .tls, "\(rc)")
            #expect(error.message.contains("reset the connection during the handshake"), "\(error)")
        }
        // Before TCP was up it is the network; after CONNACK a lost connection.
        #expect(classify(rc: MOSQ_ERR_ERRNO, errno: ECONNRESET).code == .unreachable)
        #expect(classify(rc: MOSQ_ERR_CONN_LOST, errno: ECONNRESET, up: true).code == .connectionLost)
    }

    @Test func aRefusedTCPConnectionIsUnreachable() {
        let error = classify(rc: MOSQ_ERR_ERRNO, errno: ECONNREFUSED)
        #expect(error.code == .unreachable)
        #expect(error.message.contains("Connection refused"), "\(error)")
    }

    @Test func anExpiredKeepaliveIsALostConnection() {
        #expect(classify(rc: MOSQ_ERR_KEEPALIVE, up: true).code == .connectionLost)
    }

    /// The libmosquitto handle and the object its user data points to are released in every way a
    /// client can end: never started, stopped, or dropped while its network thread runs.
    @Test(arguments: [false, true], [false, true])
    func everythingIsReleased(started: Bool, stopped: Bool) async throws {
        var configuration = MQTTConfiguration(host: "127.0.0.1", port: try freeLoopbackPort(), clientID: "released")
        configuration.reconnectDelay = .milliseconds(100) ... .milliseconds(200)
        weak var connection: AnyObject?
        do {
            let client = try MQTTClient(configuration: configuration, logger: TestBroker.logger)
            connection = client.connectionObject
            if started { try client.start() }
            if stopped { await client.stop() }
        }
        // A dropped running client's thread disconnects and releases everything on its own.
        let deadline = ContinuousClock.now + .seconds(5)
        while connection != nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(connection == nil)
    }
}
