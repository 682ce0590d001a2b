import Foundation
import MQTT
import Testing

/// Bad input is refused by the adapter itself, as `.invalidArgument`, before anything is sent.
@Suite("MQTTClient input checks", .timeLimit(.minutes(1)))
struct MQTTInputTests {
    static let base = MQTTConfiguration(host: "127.0.0.1", port: 1883, clientID: "gw-0123456789abcdef")

    @Test func anEmptyClientIDIsRejected() {
        var configuration = Self.base
        configuration.clientID = ""
        expectInvalid(configuration)
    }

    /// One unusable configuration value.
    struct Mistake: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var apply: @Sendable (inout MQTTConfiguration) -> Void

        static let all: [Mistake] = [
            Mistake(testDescription: "keepalive under 5 s") { $0.keepAlive = .seconds(1) },
            Mistake(testDescription: "fractional keepalive") { $0.keepAlive = .milliseconds(7500) },
            Mistake(testDescription: "port 0") { $0.port = 0 },
            Mistake(testDescription: "empty host") { $0.host = "" },
            Mistake(testDescription: "will topic with a wildcard") { $0.will = .text("iotgw/v1/+/status", "offline") },
            Mistake(testDescription: "empty will topic") { $0.will = .text("", "offline") },
            Mistake(testDescription: "certificate without key") { $0.tls = .init(caFile: "/etc/hostname", certificateFile: "/etc/hostname") },
            Mistake(testDescription: "unreadable CA file") { $0.tls = .init(caFile: "/nonexistent/ca.crt") },
            Mistake(testDescription: "password without username") { $0.password = "secret" },
            Mistake(testDescription: "client id with NUL") { $0.clientID = "gw-\u{0}" },
            Mistake(testDescription: "zero reconnect delay") { $0.reconnectDelay = .zero ... .seconds(1) },
        ]
    }

    @Test(arguments: Mistake.all)
    func unusableConfigurationIsRejected(_ mistake: Mistake) {
        var configuration = Self.base
        mistake.apply(&configuration)
        expectInvalid(configuration, mistake.testDescription)
    }

    @Test func invalidTopicsAndFiltersAreRejectedAndNothingIsSent() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, vendorLog in
                try await vendor.subscribe("#", qos: .atLeastOnce, timeout: .seconds(10))
                try await withClient(broker.configuration(for: gateway)) { client, log in
                    try await client.waitUntilConnected(timeout: .seconds(10))
                    for topic in ["iotgw/v1/+/status", "iotgw/v1/\(gateway.id)/#", "#", ""] {
                        let error = await #expect(throws: MQTTError.self, "publish to \(topic.debugDescription)") {
                            try await client.publish(.text(topic, "should not be sent"), timeout: .seconds(5))
                        }
                        #expect(error?.code == .invalidArgument, "publish to \(topic.debugDescription): \(String(describing: error))")
                    }
                    for filter in ["iotgw/#/status", "iotgw/v1/gw+/plan", "", "a/b#"] {
                        let subscribeError = #expect(throws: MQTTError.self) { try client.subscribe(filter, qos: .atLeastOnce) }
                        #expect(subscribeError?.code == .invalidArgument, "subscribe \(filter.debugDescription)")
                        let unsubscribeError = #expect(throws: MQTTError.self) { try client.unsubscribe(filter) }
                        #expect(unsubscribeError?.code == .invalidArgument, "unsubscribe \(filter.debugDescription)")
                    }
                    try await client.publish(.text(gateway.statusTopic, "sentinel"), timeout: .seconds(10))
                    let (index, _) = try await vendorLog.message(on: gateway.statusTopic)
                    let received = await vendorLog.events.prefix(index + 1).compactMap {
                        if case .message(let m) = $0 { return m.text }
                        return nil
                    }
                    #expect(received == ["sentinel"])
                    #expect(await log.disconnectReasons.isEmpty)
                }
            }
        }
    }

    private func expectInvalid(_ configuration: MQTTConfiguration, _ what: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
        let error = #expect(throws: MQTTError.self, "\(what)", sourceLocation: sourceLocation) {
            _ = try MQTTClient(configuration: configuration, logger: TestBroker.logger)
        }
        #expect(error?.code == .invalidArgument, "\(what): \(String(describing: error))", sourceLocation: sourceLocation)
    }
}

/// Connection life cycle without a broker, or with one that comes late.
@Suite("MQTTClient life cycle", .timeLimit(.minutes(1)))
struct MQTTLifecycleTests {
    @Test func startsWhileTheBrokerIsDownAndConnectsWhenItComesUp() async throws {
        let broker = try await TestBroker.prepare()
        do {
            let gateway = try await broker.issueGateway()
            try await withClient(broker.configuration(for: gateway)) { client, log in
                let (_, reason) = try await log.disconnected()
                #expect(reason.contains("unreachable"), "\(reason)")
                let error = await #expect(throws: MQTTError.self) {
                    try await client.publish(.text(gateway.statusTopic, "too early"), timeout: .seconds(5))
                }
                #expect(error?.code == .notConnected)

                try await broker.startBroker()
                try await client.waitUntilConnected(timeout: .seconds(10))
                try await client.publish(.text(gateway.statusTopic, "up"), timeout: .seconds(10))
            }
            await broker.remove()
        } catch {
            await broker.remove()
            throw error
        }
    }

    @Test func waitingForAConnectionTimesOutWithTheLastReason() async throws {
        let port = try freeLoopbackPort()
        var configuration = MQTTConfiguration(host: "127.0.0.1", port: port, clientID: "nobody-listens")
        configuration.reconnectDelay = .milliseconds(100) ... .milliseconds(200)
        try await withClient(configuration) { client, log in
            _ = try await log.disconnected()
            let error = await #expect(throws: MQTTError.self) {
                try await client.waitUntilConnected(timeout: .milliseconds(300))
            }
            #expect(error?.code == .timeout)
            #expect(error?.message.contains("127.0.0.1:\(port)") == true, "\(String(describing: error))")
        }
    }

    @Test func stopIsIdempotentAndEndsTheEvents() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            let client = try MQTTClient(configuration: broker.configuration(for: gateway), logger: TestBroker.logger)
            let log = EventLog.recording(client)
            try client.start()
            try client.start()  // no-op while running
            try await client.waitUntilConnected(timeout: .seconds(10))
            await client.stop()
            await client.stop()
            try await log.waitUntilFinished()
            #expect(await log.disconnectReasons == ["stopped by the client"])
            let error = await #expect(throws: MQTTError.self) {
                try await client.publish(.text(gateway.statusTopic, "after stop"), timeout: .seconds(1))
            }
            #expect(error?.code == .closed)
        }
    }

    @Test func anUnstartedClientStopsAtOnce() async throws {
        let client = try MQTTClient(configuration: MQTTInputTests.base, logger: TestBroker.logger)
        let log = EventLog.recording(client)
        await client.stop()
        try await log.waitUntilFinished()
        let error = #expect(throws: MQTTError.self) { try client.start() }
        #expect(error?.code == .closed)
        let waitError = await #expect(throws: MQTTError.self) { try await client.waitUntilConnected(timeout: .seconds(1)) }
        #expect(waitError?.code == .closed)
    }
}
