import Crypto
import Foundation
import GatewayAgent
import GatewayProtocol
import LXD
import Testing
import UmockdevTesting

/// A gateway's row in `iot-daemon gateways --json`, as far as the fleet channel fills it.
struct FleetGatewayRow: Decodable {
    var id: String
    var online: Bool?
    var lastSeenAt: Date?
    var status: GatewayStatus?
    var revokedAt: Date?
}

/// The fleet channel for real: two vendors, each with its own mosquitto broker (TLS, certificate
/// identities issued at enrollment, ACL), real `iot-daemon serve`, the real gateway daemon and LXD.
extension EndToEndTests {
    @Test func fleetChannelPushesPlansCarriesSignedStatusCommandsAndLogsAndSurvivesBrokerRestarts() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let image = E2E.image("iotgw-debian12-test")
        let fingerprint = try await lxd.imageAlias(image).target
        let playbook = Bin.repo.appendingPathComponent("cookbooks/ansible/sensor-agent").path
        let brokerA = try Broker(root: root, name: "a"), brokerB = try Broker(root: root, name: "b")
        let a = try VendorFixture(id: E2E.vendorID("fla"), usbVendorID: "0403", serials: ["FLA-1"], image: image, fingerprint: fingerprint,
                                  memoryMiB: 256, extraYAML: "ansible: {playbookDirectory: \(playbook)}\n" + brokerA.vendorYAML, root: root)
        let b = try VendorFixture(id: E2E.vendorID("flb"), usbVendorID: "10c4", serials: ["FLB-1"], image: image, fingerprint: fingerprint,
                                  extraYAML: brokerB.vendorYAML, root: root)
        let gatewayDir = root.appendingPathComponent("gateway")
        func certPath(_ v: VendorFixture) -> String { gatewayDir.appendingPathComponent("fleet-\(v.id).crt").path }
        a.entryExtras = ", fleet: {host: 127.0.0.1, port: \(brokerA.port), caFile: \(brokerA.caFile), certificateFile: \(certPath(a)), "
            + "statusSeconds: 60, commands: [status, resync, redeliver, restart-container, logs-start, logs-stop], "
            + "logs: {allowed: true, linesPerSecond: 5, bytesPerSecond: 2048, maxSeconds: 6}}"
        b.entryExtras = ", fleet: {host: 127.0.0.1, port: \(brokerB.port), caFile: \(brokerB.caFile), certificateFile: \(certPath(b))}"
        // Polling once an hour: anything that arrives sooner came by push.
        let gateway = try GatewayFixture(vendors: [(a, .auto), (b, .auto)], root: root, extraYAML: """
            planSyncSeconds: 3600
            delivery: {inspecDirectory: \(Bin.repo.appendingPathComponent("inspec").path), environment: test, validationMode: enforced, keepSnapshots: 2,
                       hardening: {packages: false}}
            """)
        let identity = try gateway.identity()
        for v in [a, b] {
            let issued = try v.enroll(identity)
            #expect(issued.hasSuffix("\(identity.id).crt"), "enrollment issues the broker certificate")
            try FileManager.default.copyItem(atPath: issued, toPath: certPath(v))
        }
        let gatewayKey = try Keys.decodePublic(identity.publicKey)
        let daemonBin = try Bin.path("iot-daemon")
        let (ca, cb) = (ProvisioningPlan.containerName(forVendor: a.id), ProvisioningPlan.containerName(forVendor: b.id))
        func rows(_ v: VendorFixture) throws -> [FleetGatewayRow] {
            let r = try run(daemonBin, ["gateways", "--config", v.configPath, "--json"])
            guard r.status == 0 else { throw HarnessError("gateways failed: \(r.stderr)") }
            return try decodeJSON([FleetGatewayRow].self, r.stdout)
        }
        func row(_ v: VendorFixture) throws -> FleetGatewayRow? { try rows(v).first { $0.id == identity.id } }
        func delivered(_ v: VendorFixture) throws -> Int? { try gateway.status().vendors.first { $0.id == v.id }?.deliveredPlanVersion }
        func command(_ kind: String, _ extra: [String] = []) throws -> Output {
            try run(daemonBin, ["command", identity.id, kind, "--config", a.configPath, "--wait", "60"] + extra)
        }

        try await E2EContext.cleaningUp(lxd, [ca, cb], daemons: { [a.daemon, b.daemon, gateway.daemon] }) {
            defer { try? brokerA.stop(); try? brokerB.stop() }
            try brokerA.start()
            try brokerB.start()
            try await a.start()
            try await b.start()
            let testbed = try Testbed()
            let ttyA = try CharNode(), ttyB = try CharNode()
            try await gateway.start(testbed: testbed)
            try testbed.plug(vendorID: "0403", productID: "6001", serial: "FLA-1", ttyName: "ttyUSB80", devnode: ttyA.path)
            try testbed.plug(vendorID: "10c4", productID: "6001", serial: "FLB-1", ttyName: "ttyUSB81", devnode: ttyB.path)
            _ = try await eventually("a's first delivery", timeout: .seconds(240)) { try delivered(a) }

            // Signed status reaches each vendor, verified with the enrolled key; each sees only its own slice.
            let seenA = try await eventually("a's verified status", timeout: .seconds(60)) {
                try row(a).flatMap { $0.online == true && $0.status?.plan.delivered == 1 && $0.status?.devices == ["FLA-1"] ? $0 : nil }
            }
            let sa = try #require(seenA.status)
            #expect(sa.vendor == a.id && sa.container?.name == ca && sa.container?.state == "Running" && sa.agentVersion == GatewayAgent.version)
            #expect(sa.container?.memoryBytes ?? 0 > 0, "the container's memory use travels")
            let seenB = try await eventually("b's verified status", timeout: .seconds(60)) {
                try row(b).flatMap { $0.online == true && $0.status?.devices == ["FLB-1"] ? $0 : nil }
            }
            let textB = String(decoding: try WireJSON.encoder().encode(seenB.status), as: UTF8.self)
            #expect(!textB.contains("FLA-1") && !textB.contains(a.id), "vendor b learns nothing of vendor a")
            // The retained status on the broker is the gateway's own signed document.
            let retained = try #require(try brokerA.receive(FleetTopics.status(identity.id), count: 1, seconds: 5).first)
            #expect(try SignedDocument.open(Data(retained.utf8), as: GatewayStatus.self, domain: Envelope.statusDomain, key: gatewayKey,
                                            what: "status").gatewayID == identity.id)

            // The broker's ACL, with a second enrolled gateway's real certificate: it can neither read this
            // gateway's plan nor write its status; a client of another CA cannot connect at all.
            let other = try brokerA.gatewayIdentity("gw-00000000000000aa")
            let stolen = try spawnAndWait(["/usr/bin/mosquitto_sub"] + other.args + ["-t", FleetTopics.plan(identity.id), "-C", "1", "-W", "3"])
            #expect(stolen.stdout.isEmpty, "gateway B read A's retained plan: \(stolen.stdout.prefix(80))")
            let sawAll = try spawnAndWait(["/usr/bin/mosquitto_sub"] + other.args + ["-t", "iotgw/v1/#", "-C", "1", "-W", "3"])
            #expect(sawAll.stdout.isEmpty, "gateway B saw the whole tree")
            _ = try spawnAndWait(["/usr/bin/mosquitto_pub"] + other.args + ["-t", FleetTopics.status(identity.id), "-m", "forged", "-r", "-q", "1"])
            let kept = try #require(try brokerA.receive(FleetTopics.status(identity.id), count: 1, seconds: 5).first)
            #expect(kept != "forged" && (try? SignedDocument.open(Data(kept.utf8), as: GatewayStatus.self, domain: Envelope.statusDomain,
                                                                  key: gatewayKey, what: "status")) != nil, "B overwrote A's status")
            let foreign = try spawnAndWait(["/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", String(brokerA.port), "--cafile", brokerA.caFile,
                                                             "--cert", brokerB.vendorCert, "--key", brokerB.vendorKey, "-t", "#", "-C", "1", "-W", "3"])
            #expect(foreign.status != 0 && foreign.stdout.isEmpty, "a certificate of another vendor's CA is refused")

            // A release reaches the gateway by push (polling is hourly) and is delivered.
            let clock = ContinuousClock()
            let t0 = clock.now
            let pub = try run(daemonBin, ["publish-app", "--config", a.configPath, "--app", "sensor-agent", "--version", "1.1.0"])
            #expect(pub.status == 0, "\(pub.stderr)")
            _ = try await eventually("v2 delivered by push", timeout: .seconds(180)) { try delivered(a) == 2 ? true : nil }
            let pushed = clock.now - t0
            #expect(pushed < .seconds(180))
            #expect(gateway.daemon?.output.contains("iotgw.via=push") == true, "the plan came by push")

            // Commands: status answered, a refused kind from the owner's list, restart, and the log relay within its limits.
            let st = try command("status")
            #expect(st.status == 0 && st.stdout.hasPrefix("done"), "\(st.stdout) \(st.stderr)")
            _ = try await lxd.exec(cb, ["logger", "iotgw-secret-of-b"])
            let logsArgs = ["logs", identity.id, "--config", a.configPath, "--seconds", "30"]
            let relay = Task.detached { try run(daemonBin, logsArgs) }
            try await Task.sleep(for: .seconds(2))
            _ = try await lxd.exec(ca, ["sh", "-c", "for i in $(seq 1 200); do logger iotgw-flood-$i; done"])
            let logs = try await relay.value
            #expect(logs.status == 0, "\(logs.stderr)")
            let lines = logs.stdout.split(separator: "\n")
            #expect(lines.contains { $0.contains("iotgw-flood") }, "a's own journal is relayed")
            #expect(!logs.stdout.contains("iotgw-secret-of-b"), "never another vendor's data")
            #expect(lines.count <= 5 * 8, "at most linesPerSecond for at most maxSeconds (+1 batch): \(lines.count)")
            #expect(logs.stderr.contains("dropped by the gateway's rate limit"))
            #expect(logs.stderr.contains("relay ended: time is up"), "capped at the owner's 6 s although 30 were asked: \(logs.stderr)")

            // A replayed and a tampered command are refused (results checked with the gateway's key).
            let signer = PlanSigner(privateKey: try Keys.decodePrivate(String(contentsOfFile: a.dir.appendingPathComponent("vendor.key").path,
                                                                               encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            let cmd = FleetCommand(gatewayID: identity.id, vendor: a.id, command: .status, issuedAt: Date(), expiresAt: Date().addingTimeInterval(60))
            let signed = try signer.signDocument(cmd, domain: Envelope.commandDomain)
            var doc = try WireJSON.decoder().decode(SignedDocument.self, from: signed)
            doc.payload = Data(String(decoding: Data(base64Encoded: doc.payload)!, as: UTF8.self)
                .replacingOccurrences(of: "\"status\"", with: "\"restart-container\"").utf8).base64EncodedString()
            let results = Task.detached { try brokerA.receive(FleetTopics.results(identity.id), count: 3, seconds: 30) }
            try await Task.sleep(for: .milliseconds(500))
            try brokerA.publish(FleetTopics.commands(identity.id), signed)
            try brokerA.publish(FleetTopics.commands(identity.id), signed)
            try brokerA.publish(FleetTopics.commands(identity.id), try WireJSON.encoder().encode(doc))
            let outcomes = try await results.value.map {
                try SignedDocument.open(Data($0.utf8), as: CommandResult.self, domain: Envelope.resultDomain, key: gatewayKey, what: "result")
            }
            #expect(outcomes.map(\.outcome) == [.done, .refused, .refused], "\(outcomes)")
            #expect(outcomes[1].message.contains("replay") && outcomes[2].message.contains("signature"))
            #expect(try await lxd.instance(ca).instance.isRunning)

            // The broker dies; containers keep running untouched; a release made meanwhile arrives after it returns.
            try brokerA.kill9()
            try await Task.sleep(for: .seconds(2))
            #expect(try await lxd.instance(ca).instance.isRunning)
            #expect(try await E2E.deviceInside(lxd, ca, "/dev/ttyUSB0"))
            let offlinePub = try run(daemonBin, ["publish-app", "--config", a.configPath, "--app", "sensor-agent", "--version", "1.1.1"])
            #expect(offlinePub.status == 0 && offlinePub.stderr.contains("not pushed"), "\(offlinePub.stderr)")
            try await Task.sleep(for: .seconds(3))
            #expect(try delivered(a) == 2, "nothing arrives while the broker is down (polling is hourly)")
            try brokerA.start()
            _ = try await eventually("v3 delivered after the broker returned", timeout: .seconds(180)) { try delivered(a) == 3 ? true : nil }
            _ = try await eventually("status republished", timeout: .seconds(60)) {
                try row(a).flatMap { $0.online == true && $0.status?.plan.delivered == 3 ? true : nil }
            }

            // The gateway dies: its last will marks it offline; back, it is online with nothing applied twice.
            let plansBefore = try gateway.status().vendors.first { $0.id == a.id }?.deliveredPlanVersion
            gateway.daemon?.kill9()
            _ = try await eventually("offline by last will", timeout: .seconds(90)) { try row(a).flatMap { $0.online == false ? true : nil } }
            try await gateway.start(testbed: testbed)
            _ = try await eventually("online again", timeout: .seconds(60)) { try row(a).flatMap { $0.online == true ? true : nil } }
            try await Task.sleep(for: .seconds(3))
            #expect(try gateway.status().vendors.first { $0.id == a.id }?.deliveredPlanVersion == plansBefore)
            #expect(try await lxd.snapshots(ca).count <= 2, "no redelivery after reconnect")

            // Revoked: the broker refuses the gateway (CRL), the vendor lists it as revoked and takes nothing from it.
            let revoke = try run(daemonBin, ["revoke-gateway", "--config", b.configPath, "--gateway-id", identity.id])
            #expect(revoke.status == 0, "\(revoke.stderr)")
            let lastSeen = try #require(try row(b)?.lastSeenAt)
            #expect(try row(b)?.revokedAt != nil)
            gateway.daemon?.kill9()
            try await gateway.start(testbed: testbed)
            _ = try await eventually("a's status after the restart", timeout: .seconds(60)) {
                try row(a).flatMap { ($0.lastSeenAt ?? .distantPast) > lastSeen ? true : nil }
            }
            try await Task.sleep(for: .seconds(2))
            #expect(try row(b)?.lastSeenAt == lastSeen, "no status of a revoked gateway is taken")
            #expect(try await lxd.instance(cb).instance.isRunning, "revocation at the vendor changes nothing on the gateway")

            // A clean stop (SIGTERM) sends no will, so the gateway says "offline" itself before it disconnects.
            _ = try await eventually("online before the stop", timeout: .seconds(30)) { try row(a).flatMap { $0.online == true ? true : nil } }
            #expect(gateway.daemon?.stop() == 0)
            _ = try await eventually("offline after a clean stop", timeout: .seconds(30)) { try row(a).flatMap { $0.online == false ? true : nil } }
        }
    }
}
