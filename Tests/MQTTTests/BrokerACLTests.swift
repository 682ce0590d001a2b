import MQTT
import Testing

/// The kit's ACL: a gateway (username = its certificate's CN) reads only its own plan and commands
/// and writes only its own status, results and logs; the vendor reads and writes everything under
/// iotgw/v1/. A denied publish still gets its PUBACK (MQTT 3.1.1) and a denied subscription its
/// SUBACK, so every check looks at what the receiving side got, using a later allowed message on
/// the same connection as the sentinel (the broker keeps per-connection order).
@Suite("mosquitto ACL from scripts/mqtt-broker", .timeLimit(.minutes(1)))
struct BrokerACLTests {
    @Test func aGatewayCannotReadAnotherGatewaysPlan() async throws {
        try await withBroker { broker in
            let a = try await broker.issueGateway()
            let b = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, _ in
                try await withClient(broker.configuration(for: a)) { client, log in
                    try await client.subscribe(b.planTopic, qos: .atLeastOnce, timeout: .seconds(10))
                    try await client.subscribe(a.planTopic, qos: .atLeastOnce, timeout: .seconds(10))
                    try await vendor.waitUntilConnected(timeout: .seconds(10))
                    try await vendor.publish(.text(b.planTopic, "plan for B"), timeout: .seconds(10))
                    try await vendor.publish(.text(a.planTopic, "plan for A"), timeout: .seconds(10))

                    let (_, own) = try await log.message(on: a.planTopic)
                    #expect(own.text == "plan for A")
                    #expect(await log.payloads(on: b.planTopic).isEmpty)
                }
            }
        }
    }

    @Test func aGatewayCannotSubscribeToTheWholeTree() async throws {
        try await withBroker { broker in
            let a = try await broker.issueGateway()
            let b = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, _ in
                try await withClient(broker.configuration(for: a)) { client, log in
                    try await client.subscribe("iotgw/v1/#", qos: .atLeastOnce, timeout: .seconds(10))
                    try await vendor.waitUntilConnected(timeout: .seconds(10))
                    try await vendor.publish(.text(b.planTopic, "plan for B"), timeout: .seconds(10))
                    try await vendor.publish(.text(b.statusTopic, "status of B"), timeout: .seconds(10))
                    try await vendor.publish(.text(a.planTopic, "plan for A"), timeout: .seconds(10))

                    let (index, own) = try await log.message(on: a.planTopic)
                    #expect(own.text == "plan for A")
                    let before = await log.events.prefix(index + 1).filter {
                        if case .message = $0 { return true }
                        return false
                    }
                    #expect(before.count == 1, "only its own plan: \(before)")
                }
            }
        }
    }

    @Test func aGatewayWritesOnlyItsOwnStatus() async throws {
        try await withBroker { broker in
            let a = try await broker.issueGateway()
            let b = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, vendorLog in
                try await vendor.subscribe("iotgw/v1/#", qos: .atLeastOnce, timeout: .seconds(10))
                try await withClient(broker.configuration(for: a)) { client, _ in
                    try await client.waitUntilConnected(timeout: .seconds(10))
                    // Acknowledged (3.1.1) but dropped by the broker:
                    try await client.publish(.text(b.statusTopic, "forged status of B"), timeout: .seconds(10))
                    try await client.publish(.text(a.planTopic, "forged own plan"), timeout: .seconds(10))
                    try await client.publish(.text(b.planTopic, "forged plan of B"), timeout: .seconds(10))
                    // Allowed:
                    try await client.publish(.text(a.statusTopic, "status of A"), timeout: .seconds(10))

                    let (index, status) = try await vendorLog.message(on: a.statusTopic)
                    #expect(status.text == "status of A")
                    let received = await vendorLog.events.prefix(index + 1).compactMap {
                        if case .message(let m) = $0 { return m.topic }
                        return nil
                    }
                    #expect(received == [a.statusTopic])
                }
            }
        }
    }
}
