import Foundation
import MQTT
import Testing

/// The adapter against a real mosquitto started by `scripts/mqtt-broker` (one broker per test).
@Suite("MQTTClient against mosquitto", .timeLimit(.minutes(1)))
struct MQTTClientTests {
    @Test func connectsOverTLSWithAGatewayCertificate() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.configuration(for: gateway)) { client, log in
                try await client.waitUntilConnected(timeout: .seconds(10))
                let (_, sessionPresent) = try await log.connected()
                #expect(sessionPresent == false)
            }
        }
    }

    @Test func qos1RoundTripBetweenGatewayAndVendor() async throws {
        try await withBroker { broker in _ = try await roundTrip(broker) }
    }

    /// The vendor publishes a plan to a gateway and the gateway a status to the vendor, both QoS 1, each checked on
    /// arrival; `whileConnected` runs once both are subscribed. Returns how long the status took from publish to arrival.
    func roundTrip(_ broker: TestBroker, whileConnected: () throws -> Void = {}) async throws -> Duration {
        let gateway = try await broker.issueGateway()
        return try await withClient(broker.vendorConfiguration()) { vendor, vendorLog in
            try await withClient(broker.configuration(for: gateway)) { client, log in
                try await vendor.subscribe("iotgw/v1/+/status", qos: .atLeastOnce, timeout: .seconds(10))
                try await client.subscribe(gateway.planTopic, qos: .atLeastOnce, timeout: .seconds(10))
                try whileConnected()

                try await vendor.publish(.text(gateway.planTopic, "plan-1"), timeout: .seconds(10))
                let (_, plan) = try await log.message(on: gateway.planTopic)
                #expect(plan == .text(gateway.planTopic, "plan-1", qos: .atLeastOnce, retain: false))

                let clock = ContinuousClock()
                let started = clock.now
                try await client.publish(.text(gateway.statusTopic, "running"), timeout: .seconds(10))
                let (_, status) = try await vendorLog.message(on: gateway.statusTopic)
                #expect(status.text == "running")
                #expect(status.qos == .atLeastOnce)
                return clock.now - started
            }
        }
    }

    /// libmosquitto's own `mosquitto_loop` selects, and refuses a socket numbered 1024 or above; the client polls
    /// instead, so a process with many files open (a vendor daemon serving a fleet, a fleet simulator) still connects,
    /// publishes (woken by its eventfd, not after a poll timeout) and receives.
    @Test func aClientWhoseSocketIsNumberedAbove1024ConnectsPublishesAndReceives() async throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 {
            limit.rlim_cur = min(4096, limit.rlim_max)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        try #require(limit.rlim_cur >= 2048, "RLIMIT_NOFILE allows \(limit.rlim_cur) files")
        let filler = (0..<1100).map { _ in open("/dev/null", O_RDONLY | O_CLOEXEC) }
        defer { for fd in filler where fd >= 0 { close(fd) } }
        #expect(filler.allSatisfy { $0 >= 0 })
        try await withBroker { broker in
            let took = try await roundTrip(broker) {
                let sockets = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap { Int32($0) }.filter { fd in
                    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"))?.hasPrefix("socket:") == true
                }
                #expect(sockets.contains { $0 >= 1024 }, "the clients' sockets are above FD_SETSIZE: \(sockets.sorted().suffix(6))")
            }
            // Woken by the eventfd: a publish waits for no poll timeout (250 ms) on either side.
            #expect(took < .milliseconds(200), "publish to delivery took \(took)")
        }
    }

    @Test func retainedMessageReachesALaterSubscriber() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, _ in
                try await vendor.waitUntilConnected(timeout: .seconds(10))
                try await vendor.publish(.text(gateway.planTopic, "plan-retained", retain: true), timeout: .seconds(10))
            }
            // Subscribed only now, after the vendor has gone.
            try await withClient(broker.configuration(for: gateway)) { client, log in
                try client.subscribe(gateway.planTopic, qos: .atLeastOnce)
                let (_, plan) = try await log.message(on: gateway.planTopic)
                #expect(plan.text == "plan-retained")
                #expect(plan.retain)
            }
        }
    }

    /// The broker may be someone else's: a message over the client's limit is dropped as it arrives.
    @Test func messagesOverThePayloadLimitAreDroppedAsTheyArrive() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            var configuration = broker.configuration(for: gateway)
            configuration.maxPayloadBytes = 1024
            try await withClient(configuration) { client, log in
                try await client.subscribe(gateway.planTopic, qos: .atLeastOnce, timeout: .seconds(10))
                try await withClient(broker.vendorConfiguration()) { vendor, _ in
                    try await vendor.waitUntilConnected(timeout: .seconds(10))
                    try await vendor.publish(.text(gateway.planTopic, String(repeating: "x", count: 1025)), timeout: .seconds(10))
                    try await vendor.publish(.text(gateway.planTopic, String(repeating: "y", count: 1024)), timeout: .seconds(10))
                }
                let (_, plan) = try await log.message(on: gateway.planTopic)
                #expect(plan.text == String(repeating: "y", count: 1024), "the one within the limit, and only it")
                #expect(client.droppedOversize == 1)
            }
        }
    }

    /// The broker is the vendor's, and libmosquitto's client reads any packet a broker announces
    /// whole (up to 256 MiB) before the payload limit above can look at it. A broker that sends 64 MiB
    /// to a client that takes 64 KiB: the client closes the connection once its packet limit of it is
    /// read, counts the message as dropped, and goes on after its reconnect. What it read of the packet
    /// (what it holds in memory of it) is the count its TLS context kept, said in the disconnect's reason;
    /// this process's peak memory is not the measure, as every test running beside this one adds to it
    /// (307 MiB in one CI run). Without the bound the whole 64 MiB were read.
    @Test func aBrokerCannotMakeTheClientReadAPacketOverItsLimit() async throws {
        let broker = try await TestBroker.prepare()
        do {
            // A vendor's broker may send anything: the kit's own 1 MiB limit taken out.
            let conf = broker.dir + "/mosquitto.conf"
            let text = try String(contentsOfFile: conf, encoding: .utf8)
            try text.replacingOccurrences(of: "message_size_limit 1048576", with: "message_size_limit 0")
                .write(toFile: conf, atomically: true, encoding: .utf8)
            try await broker.startBroker()
            let gateway = try await broker.issueGateway()
            var configuration = broker.configuration(for: gateway)
            configuration.maxPayloadBytes = 64 * 1024
            // With a persistent session mosquitto may send the message it was cut off in again on every
            // reconnect (the backoff bounds how often; the vendor only blocks its own channel): a clean
            // session lets the test see the client go on.
            configuration.cleanSession = true
            let limit = try #require(configuration.packetLimit)
            let huge = broker.root.appendingPathComponent("huge.bin").path
            let small = broker.root.appendingPathComponent("small.bin").path
            try Data(repeating: 0x68, count: 64 << 20).write(to: URL(fileURLWithPath: huge))
            try Data("after".utf8).write(to: URL(fileURLWithPath: small))
            func publish(_ file: String, qos: Int) async throws {
                try await Command.run([
                    "/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", String(broker.port), "--cafile", broker.caFile,
                    "--cert", broker.vendorCertificate, "--key", broker.vendorKey, "-t", gateway.planTopic, "-q", String(qos), "-f", file,
                ])
            }
            try await withClient(configuration) { client, log in
                try await client.subscribe(gateway.planTopic, qos: .atLeastOnce, timeout: .seconds(10))
                try await publish(huge, qos: 0)
                let (lost, reason) = try await log.disconnected(timeout: .seconds(30))
                #expect(reason.contains("sent a packet of over \(limit) bytes"), "\(reason)")
                #expect(client.droppedOversize == 1)
                // "… closed N bytes into it": at most the limit and the TLS record (16 KiB) that crossed it.
                let read = try #require(reason.split(separator: " ").firstIndex(of: "into").flatMap { i in Int(reason.split(separator: " ")[i - 2]) },
                                        "\(reason)")
                #expect(read > limit && read <= limit + 16 << 10 + 1024, "read \(read) bytes of the 64 MiB packet, limit \(limit)")
                _ = try await log.connected(after: lost, timeout: .seconds(15))
                try await publish(small, qos: 1)
                let (_, next) = try await log.message(on: gateway.planTopic, after: lost, timeout: .seconds(15))
                #expect(next.text == "after")
            }
            await broker.remove()
        } catch {
            await broker.remove()
            throw error
        }
    }

    @Test func lastWillIsPublishedWhenAClientDiesAbruptly() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, vendorLog in
                try await vendor.subscribe(gateway.statusTopic, qos: .atLeastOnce, timeout: .seconds(10))
                // A connected gateway process with a will, killed with SIGKILL: its socket closes
                // without DISCONNECT.
                let child = try ChildProcess([
                    "/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", String(broker.port),
                    "--cafile", broker.caFile, "--cert", gateway.certificateFile, "--key", gateway.keyFile,
                    "-i", gateway.id, "-t", gateway.statusTopic, "-q", "1", "-l",
                    "--will-topic", gateway.statusTopic, "--will-payload", "offline", "--will-qos", "1",
                ])
                try child.writeLine("online")
                let (online, _) = try await vendorLog.message(on: gateway.statusTopic)
                await child.kill()
                let (_, will) = try await vendorLog.message(on: gateway.statusTopic, after: online + 1)
                #expect(will.text == "offline")
            }
        }
    }

    @Test func noLastWillAfterACleanStop() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, vendorLog in
                try await vendor.subscribe(gateway.statusTopic, qos: .atLeastOnce, timeout: .seconds(10))
                var configuration = broker.configuration(for: gateway)
                configuration.will = .text(gateway.statusTopic, "offline")
                let client = try MQTTClient(configuration: configuration, logger: TestBroker.logger)
                let log = EventLog.recording(client)
                try client.start()
                try await client.waitUntilConnected(timeout: .seconds(10))
                try await client.publish(.text(gateway.statusTopic, "online"), timeout: .seconds(10))
                _ = try await vendorLog.message(on: gateway.statusTopic)
                await client.stop()
                // The log records events on its own task: read it once the stream has ended, as the input tests do.
                try await log.waitUntilFinished()
                #expect(await log.disconnectReasons == ["stopped by the client"])

                // The broker handles the DISCONNECT (and would publish a will) before it logs this
                // line; the vendor's marker is read after it, so a will would arrive first.
                try await broker.waitForLog(containing: "Client \(gateway.id) disconnected.")
                try await vendor.publish(.text(gateway.statusTopic, "marker"), timeout: .seconds(10))
                try await vendorLog.wait(for: "marker") {
                    if case .message(let m) = $0 { return m.text == "marker" }
                    return false
                }
                #expect(await vendorLog.payloads(on: gateway.statusTopic) == ["online", "marker"])
            }
        }
    }

    @Test func reconnectsAfterTheBrokerIsKilledAndReceivesWhatWasQueuedMeanwhile() async throws {
        try await withBroker { broker in
            let gateway = try await broker.issueGateway()
            try await withClient(broker.vendorConfiguration()) { vendor, _ in
                try await vendor.waitUntilConnected(timeout: .seconds(10))
                try await vendor.publish(.text(gateway.planTopic, "plan-1", retain: true), timeout: .seconds(10))

                // A fixed 3 s backoff keeps the gateway offline while the vendor queues a command.
                var configuration = broker.configuration(for: gateway)
                configuration.reconnectDelay = .seconds(3) ... .seconds(3)
                try await withClient(configuration) { client, log in
                    try client.subscribe(gateway.planTopic, qos: .atLeastOnce)
                    try client.subscribe(gateway.commandsTopic, qos: .atLeastOnce)
                    let (first, _) = try await log.message(on: gateway.planTopic)
                    // One more broker round trip: the broker's loop has saved its database (retained
                    // message, the gateway's persistent session) before it answers this.
                    try await vendor.publish(.text(gateway.statusTopic, "sync"), timeout: .seconds(10))

                    try await broker.killBroker()
                    let (down, reason) = try await log.disconnected(after: first)
                    #expect(reason.contains("connectionLost"), "\(reason)")
                    try await broker.startBroker()

                    try await vendor.waitUntilConnected(timeout: .seconds(10))
                    try await vendor.publish(.text(gateway.commandsTopic, "command-while-offline"), timeout: .seconds(10))
                    let early = await log.firstIndex(after: down) {
                        if case .connected = $0 { return true }
                        return false
                    }
                    #expect(early == nil, "the gateway must still be offline when the command is queued")

                    let (up, sessionPresent) = try await log.connected(after: down)
                    #expect(sessionPresent, "the persistent session survived the SIGKILL")
                    let (_, command) = try await log.message(on: gateway.commandsTopic, after: up)
                    #expect(command.text == "command-while-offline")
                    let (_, plan) = try await log.message(on: gateway.planTopic, after: up)
                    #expect(plan.text == "plan-1")
                    #expect(plan.retain, "re-subscribed, so the retained plan came again")
                }
            }
        }
    }
}
