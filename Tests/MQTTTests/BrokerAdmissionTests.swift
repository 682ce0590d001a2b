import MQTT
import Testing

/// Who may connect at all: only clients with a certificate from the kit's CA that is not revoked.
@Suite("mosquitto admission from scripts/mqtt-broker", .timeLimit(.minutes(1)))
struct BrokerAdmissionTests {
    @Test func aCertificateFromAnotherCAIsRejected() async throws {
        try await withBroker { broker in
            // Another vendor's kit (never started): a valid gateway certificate, but not from this CA.
            let other = try await TestBroker.prepare()
            do {
                let stranger = try await other.issueGateway()
                try await expectRejected(broker.configuration(for: stranger))
                await other.remove()
            } catch {
                await other.remove()
                throw error
            }
        }
    }

    /// The client checks the broker's certificate with libmosquitto's TLS context, and with the
    /// gateway's own (a payload limit makes the client count what it reads; see MQTTConfiguration).
    static let tlsContexts: [Int?] = [nil, 64 * 1024]

    /// The other direction: the client verifies the broker's certificate against its own CA.
    @Test(arguments: tlsContexts) func aBrokerWhoseCertificateIsFromAnotherCAIsNotTrusted(maxPayloadBytes: Int?) async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            let other = try await TestBroker.prepare()
            do {
                var configuration = broker.configuration(for: gateway)
                configuration.maxPayloadBytes = maxPayloadBytes
                configuration.tls?.caFile = other.caFile
                try await expectRejected(configuration, reason: "certificate verify failed")
                await other.remove()
            } catch {
                await other.remove()
                throw error
            }
        }
    }

    /// The broker's certificate names IP:127.0.0.1 and DNS:localhost. "127.1" reaches the same
    /// address (getaddrinfo reads it like inet_aton) but is neither, so the host name check fails.
    @Test(arguments: tlsContexts) func aBrokerCertificateThatDoesNotNameTheHostIsNotTrusted(maxPayloadBytes: Int?) async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            var configuration = broker.configuration(for: gateway)
            configuration.maxPayloadBytes = maxPayloadBytes
            configuration.host = "127.1"
            try await expectRejected(configuration, reason: "certificate verify failed")
            configuration.host = "localhost"
            try await withClient(configuration) { client, _ in
                try await client.waitUntilConnected(timeout: .seconds(10))
            }
        }
    }

    /// The gateway's own TLS context loads its files before each attempt and says which one is wrong.
    @Test func aKeyThatIsNotTheCertificatesIsNamedBeforeAnythingIsSent() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            let other = try await broker.issueGateway()
            var configuration = broker.configuration(for: gateway)
            configuration.maxPayloadBytes = 64 * 1024
            configuration.tls?.keyFile = other.keyFile
            try await expectRejected(configuration, reason: "TLS setup: cannot use the key \(other.keyFile): OpenSSL: error:05800074:x509 certificate routines::key values mismatch")
        }
    }

    @Test func aClientWithoutCertificateIsRejected() async throws {
        try await withBroker { broker in
            var configuration = broker.vendorConfiguration()
            configuration.tls = .init(caFile: broker.caFile)
            try await expectRejected(configuration)
        }
    }

    @Test func aRevokedGatewayCannotConnectAgain() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.configuration(for: gateway)) { client, _ in
                try await client.waitUntilConnected(timeout: .seconds(10))
            }
            try await broker.revoke(gateway)
            try await expectRejected(broker.configuration(for: gateway))
        }
    }

    /// mosquitto checks the CRL only in the TLS handshake: a revoked gateway that stays connected is
    /// not dropped by the reload, but the kit's ACL deny for it takes all its rights away at once.
    /// A new certificate for the same id lifts the deny.
    @Test func aRevokedGatewayThatStaysConnectedLosesAllAccess() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, vendorLog in
                try await vendor.subscribe(gateway.statusTopic, qos: .atLeastOnce, timeout: .seconds(10))
                try await withClient(broker.configuration(for: gateway)) { client, log in
                    try await client.subscribe(gateway.planTopic, qos: .atLeastOnce, timeout: .seconds(10))

                    try await broker.revoke(gateway)
                    // A second connection with the revoked certificate fails the handshake...
                    try await expectRejected(broker.configuration(for: gateway, clientID: gateway.id + "-again"))
                    // ...the first one is still up, with nothing allowed:
                    try await vendor.publish(.text(gateway.planTopic, "plan after revoke"), timeout: .seconds(10))
                    try await client.publish(.text(gateway.statusTopic, "status after revoke"), timeout: .seconds(10))

                    _ = try await broker.issue(id: gateway.id, keyFile: gateway.keyFile)
                    try await vendor.publish(.text(gateway.planTopic, "plan after reissue"), timeout: .seconds(10))
                    try await client.publish(.text(gateway.statusTopic, "status after reissue"), timeout: .seconds(10))

                    let (_, plan) = try await log.message(on: gateway.planTopic)
                    #expect(plan.text == "plan after reissue")
                    let (_, status) = try await vendorLog.message(on: gateway.statusTopic)
                    #expect(status.text == "status after reissue")
                    #expect(await log.disconnectReasons.isEmpty, "the revoked session was never dropped")
                }
            }
        }
    }

    /// The connection fails in the TLS handshake: `waitUntilConnected` says so at once, and the
    /// event stream carries the reason.
    private func expectRejected(
        _ configuration: MQTTConfiguration, reason expected: String = "tls", sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        try await withClient(configuration) { client, log in
            let error = await #expect(throws: MQTTError.self, sourceLocation: sourceLocation) {
                try await client.waitUntilConnected(timeout: .seconds(10))
            }
            #expect(error?.code == .tls, "\(String(describing: error))", sourceLocation: sourceLocation)
            let (_, reason) = try await log.disconnected()
            #expect(reason.contains("tls"), "\(reason)", sourceLocation: sourceLocation)
            #expect(reason.contains(expected), "\(reason)", sourceLocation: sourceLocation)
            #expect(await log.firstIndex { if case .connected = $0 { return true }; return false } == nil, sourceLocation: sourceLocation)
        }
    }
}
