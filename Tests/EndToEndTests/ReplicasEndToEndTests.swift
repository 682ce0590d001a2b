import AsyncHTTPClient
import FleetSimulation
import Foundation
import GatewayProtocol
import Logging
import Testing

/// Two real `iot-daemon serve` replicas on one PostgreSQL schema, simulated gateways spread over both while
/// `publish-app` changes their plans: they must behave as one daemon. Needs the PostgreSQL that
/// `scripts/start-postgres` runs (fails, never skips, without it); no LXD.
@Suite("Two replicas on PostgreSQL under concurrent load", .serialized)
struct ReplicasEndToEndTests {
    static let postgresURL = ProcessInfo.processInfo.environment["IOTGW_POSTGRES_URL"] ?? "postgres://iotd@127.0.0.1:5432/iotd"
    static let passwordFile = ProcessInfo.processInfo.environment["IOTGW_POSTGRES_PASSWORD_FILE"] ?? "/var/lib/iotgw-postgres/password"
    static let psql = "/usr/lib/postgresql/15/bin/psql"

    /// One replica: its configuration (same schema and signing key as the other) and its daemon.
    struct Replica {
        let config: String
        let port: Int
        var url: String { "http://127.0.0.1:\(port)" }
    }

    /// Writes one configuration per replica on one fresh schema, initializes it, runs `body`, stops the
    /// daemons and drops the schema.
    func withReplicas(_ count: Int, root: URL? = nil, extraYAML: String = "", _ body: ([Replica], URL) async throws -> Void) async throws {
        guard FileManager.default.isReadableFile(atPath: Self.passwordFile), FileManager.default.isExecutableFile(atPath: Self.psql) else {
            Issue.record("PostgreSQL is not set up (\(Self.passwordFile), \(Self.psql)): run scripts/start-postgres")
            throw HarnessError("no PostgreSQL")
        }
        let schema = "e2e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        // A root given by the caller is the caller's to remove (it may hold a running broker).
        let ownRoot = root == nil
        let root = root ?? FileManager.default.temporaryDirectory.appendingPathComponent("iotgw-replicas-\(schema)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { if ownRoot { try? FileManager.default.removeItem(at: root) } }
        let replicas = (0..<count).map { i in Replica(config: root.appendingPathComponent("replica\(i).yaml").path, port: freePort()) }
        for replica in replicas {
            // The same signing key file and schema: only the listening port differs.
            try """
                vendor: acme
                listen: {host: 127.0.0.1, port: \(replica.port)}
                database: unused.sqlite
                signingKey: vendor.key
                planTTLSeconds: 3600
                image: {alias: iotgw-busybox, fingerprint: \(String(repeating: "ab", count: 32))}
                container: {cpus: 1, memoryMiB: 128, diskMiB: 512, processes: 200, network: none}
                models:
                  - {name: sensor-v1, vendorID: "0403", productID: "6001", devicePath: /dev/ttyUSB0, kind: unix-char, apps: [sensor-agent]}
                apps:
                  - {name: sensor-agent, version: 1.0.0, runList: ["recipe[sensor_agent]"]}
                postgres: {url: "\(Self.postgresURL)", passwordFile: \(Self.passwordFile), schema: \(schema), maxConnections: 8}
                \(extraYAML)
                """.write(toFile: replica.config, atomically: true, encoding: .utf8)
        }
        let daemon = try Bin.path("iot-daemon")
        defer { dropSchema(schema) }
        var keys: Set<String> = []
        for replica in replicas {
            let r = try run(daemon, ["init", "--config", replica.config])
            guard r.status == 0 else { throw HarnessError("iot-daemon init failed: \(r.stderr)") }
            keys.insert(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(keys.count == 1, "every replica signs with the one vendor key")
        var daemons: [Daemon] = []
        defer { for d in daemons { d.stop() } }
        for (i, replica) in replicas.enumerated() {
            daemons.append(try Daemon(name: "replica\(i)", executable: daemon, args: ["serve", "--config", replica.config, "--log-level", "warning"],
                                      env: [:], logDir: root))
        }
        for (i, replica) in replicas.enumerated() {
            _ = try await eventually("replica \(i) listening", timeout: .seconds(20)) {
                guard daemons[i].isRunning else { throw HarnessError("replica \(i) exited: \(daemons[i].output)") }
                return canConnect(port: replica.port) ? true : nil
            }
        }
        do { try await body(replicas, root) } catch {
            for (i, d) in daemons.enumerated() { print("replica \(i) log:\n\(d.output.suffix(3000))") }
            throw error
        }
        for (i, d) in daemons.enumerated() { #expect(d.isRunning, "replica \(i) still serves: \(d.output.suffix(2000))") }
    }

    /// Runs `body` with a fleet client (and its logger) over one HTTP client, shut down afterwards whatever happens.
    func withFleetClient<T: Sendable>(vendor: String, concurrency: Int,
                                      _ body: (FleetClient, Logger) async throws -> T) async throws -> T {
        var logger = Logger(label: "replicas-e2e")
        logger.logLevel = .warning
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: FleetClient.httpConfiguration(concurrency: concurrency))
        let result: Result<T, any Error>
        do { result = .success(try await body(FleetClient(http: http, vendor: vendor, timeout: .seconds(20), logger: logger), logger)) } catch {
            result = .failure(error)
        }
        try await http.shutdown()
        return try result.get()
    }

    func dropSchema(_ schema: String) {
        let password = (try? String(contentsOfFile: Self.passwordFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        _ = try? run(Self.psql, [Self.postgresURL, "-X", "-q", "-c", "DROP SCHEMA IF EXISTS \(schema) CASCADE"], env: ["PGPASSWORD": password])
    }

    @Test func fiftyGatewaysOverTwoReplicasSeeOnePlanHistoryAndEveryReportOnce() async throws {
        try await withReplicas(2) { replicas, root in
            let fleetsim = try Bin.path("iotgw-fleetsim")
            let daemon = try Bin.path("iot-daemon")
            let stateDir = root.appendingPathComponent("fleet").path

            // Enrollment is idempotent from both replicas' configurations: the second changes nothing.
            for replica in replicas + replicas {
                let r = try run(fleetsim, ["enroll", "--config", replica.config, "--gateways", "50", "--state", stateDir])
                #expect(r.status == 0, "enroll via \(replica.config): \(r.stderr)")
            }
            struct Listed: Decodable { var id: String }
            let listed = try decodeJSON([Listed].self, try run(daemon, ["gateways", "--config", replicas[1].config, "--json"]).stdout)
            let state = try #require(try FleetState.load(from: stateDir))
            #expect(state.gateways.count == 50)
            #expect(Set(listed.map(\.id)) == Set(state.gateways.map(\.id)))

            let result = try await withFleetClient(vendor: state.vendor, concurrency: 16) { client, logger in
                let simulator = try FleetSimulator(state: state, client: client, endpoints: try replicas.map { try VendorEndpoint(url: $0.url) },
                                                   logger: logger)
                // Polling every 0.3 s from both sides while releases are published through each replica's configuration, until
                // 5 s after the last one (time for every gateway to deliver it, even on a busy machine).
                let stop = FleetRunOptions.StopSignal()
                async let running = simulator.run(FleetRunOptions(stop: .signal(stop), pollInterval: .milliseconds(300),
                                                              ramp: .seconds(1), failureRate: 0.2, concurrency: 16))
                for (i, version) in ["1.1.0", "1.2.0", "1.3.0"].enumerated() {
                    try await Task.sleep(for: .seconds(2))
                    let r = try run(daemon, ["publish-app", "--config", replicas[i % 2].config, "--app", "sensor-agent", "--version", version])
                    #expect(r.status == 0, "publish-app \(version): \(r.stderr)")
                }
                try await Task.sleep(for: .seconds(5))
                stop.stop()
                let result = try await running

                // A nonce used at replica A is refused at replica B (and at A again).
                let gateway = try state.gateways[0].identity()
                let body = try WireJSON.encoder().encode(PlanRequest(gatewayID: gateway.id, currentPlanVersion: 0))
                let nonce = RequestSignature.makeNonce()
                let first = try await client.post(.plan, body: body, as: gateway, to: try VendorEndpoint(url: replicas[0].url), nonce: nonce)
                #expect(first.status == 200)
                for replica in replicas.reversed() {
                    let replayed = try await client.post(.plan, body: body, as: gateway, to: try VendorEndpoint(url: replica.url), nonce: nonce)
                    #expect(replayed.status == 401 && replayed.errorCode == "replayedRequest", "replay at \(replica.url): \(replayed.status)")
                }
                return result
            }

            let summary = result.summary
            #expect(summary.errorCount == 0, "errors: \(summary.errors)")
            #expect(summary.versionRegressions == 0)
            #expect(Set(result.traces.map(\.url)).count == 2, "gateways spread over both replicas")
            for trace in result.traces {
                // Versions never go back, and one version is always the very same plan.
                let versions = trace.plans.map(\.version)
                #expect(versions == versions.sorted(), "\(trace.gatewayID) saw \(versions)")
                var byVersion: [Int: String] = [:]
                for plan in trace.plans {
                    #expect(byVersion.updateValue(plan.payloadSHA256, forKey: plan.version).map { $0 == plan.payloadSHA256 } ?? true,
                            "\(trace.gatewayID) got two different plans numbered v\(plan.version)")
                }
                // The last release reached every gateway (a gateway slower than the publications may skip one in between).
                #expect(trace.plans.last?.apps == ["sensor-agent@1.3.0"], "\(trace.gatewayID) ended with \(trace.plans.last?.apps ?? [])")
                // Each new version was reported once, in order, and the newest one for sure (an older one is skipped only
                // when the plan moved on between the poll and the bootstrap).
                let reported = trace.reports.map(\.planVersion)
                #expect(reported == reported.sorted() && Set(reported).count == reported.count, "\(trace.gatewayID) reported \(reported)")
                #expect(reported.last == versions.last, "\(trace.gatewayID) saw \(versions), reported \(reported)")
            }

            // Every report the replicas accepted is stored exactly once, whichever replica took it.
            struct Stored: Decodable, Hashable { var gatewayID: String; var planVersion: Int; var outcome: String }
            let stored = try decodeJSON([Stored].self, try run(daemon, ["reports", "--config", replicas[0].config, "--json"]).stdout)
            let sent = result.traces.flatMap { t in t.reports.map { Stored(gatewayID: t.gatewayID, planVersion: $0.planVersion, outcome: $0.outcome) } }
            #expect(sent.count == summary.reports.values.reduce(0, +))
            #expect(stored.count == sent.count)
            #expect(Set(stored) == Set(sent))
            // Every new version a gateway received was bootstrapped and reported, unless the bootstrap found it superseded.
            #expect(sent.count + summary.bootstrapsSuperseded == summary.newVersions)
            #expect(summary.newVersions >= 50 * 2)
        }
    }

    /// The fleet channel at the scale of this suite: two replicas on one schema and one real broker (TLS, certificate
    /// identities, ACL). Simulated gateways poll once a minute, so every release published through either replica
    /// reaches them only by push: each verifies it, bootstraps, reports once, and its signed status, kept by
    /// whichever replica took it, says what it delivered; a clean stop leaves them all offline.
    @Test func twentyGatewaysOnTheFleetChannelOfTwoReplicasGetEveryReleaseByPushAndTheirStatusesAreKept() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iotgw-replicas-mqtt-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let broker = try Broker(root: root, name: "fleet")
        try broker.start()
        defer { try? broker.stop() }
        try await withReplicas(2, root: root, extraYAML: broker.vendorYAML) { replicas, root in
            let fleetsim = try Bin.path("iotgw-fleetsim")
            let daemon = try Bin.path("iot-daemon")
            let stateDir = root.appendingPathComponent("fleet").path
            let r = try run(fleetsim, ["enroll", "--config", replicas[0].config, "--gateways", "20", "--state", stateDir])
            #expect(r.status == 0, "enroll: \(r.stderr)")
            #expect(r.stderr.contains("broker certificates: 20 issued"), "\(r.stderr)")
            let state = try #require(try FleetState.load(from: stateDir))

            let fleetBroker = FleetBroker(host: "127.0.0.1", port: broker.port, caFile: broker.caFile,
                                          certificateDirectory: broker.dir.appendingPathComponent("issued").path,
                                          keyDirectory: root.appendingPathComponent("fleet/tls").path)
            struct Listed: Decodable {
                struct Status: Decodable { struct Plan: Decodable { var delivered: Int? }; var online: Bool; var plan: Plan }
                var id: String
                var planVersion: Int?
                var online: Bool?
                var status: Status?
            }
            func listed() throws -> [Listed] { try decodeJSON([Listed].self, try run(daemon, ["gateways", "--config", replicas[1].config, "--json"]).stdout) }
            let result = try await withFleetClient(vendor: state.vendor, concurrency: 8) { client, logger in
                let simulator = try FleetSimulator(state: state, client: client, endpoints: try replicas.map { try VendorEndpoint(url: $0.url) },
                                                   logger: logger)
                let stop = FleetRunOptions.StopSignal()
                async let running = simulator.run(FleetRunOptions(stop: .signal(stop), pollInterval: .seconds(60), ramp: .seconds(1),
                                                                  concurrency: 8, broker: fleetBroker))
                // Every gateway announced (plan v1) and is online with a status saying so.
                _ = try await eventually("20 gateways online, v1 delivered", timeout: .seconds(30)) {
                    let gateways = try listed()
                    return gateways.count == 20 && gateways.allSatisfy { $0.online == true && $0.status?.plan.delivered == 1 } ? true : nil
                }
                for (i, version) in ["1.1.0", "1.2.0"].enumerated() {
                    let r = try run(daemon, ["publish-app", "--config", replicas[i].config, "--app", "sensor-agent", "--version", version])
                    #expect(r.status == 0, "publish-app \(version): \(r.stderr)")
                    _ = try await eventually("every gateway delivered \(version) by push", timeout: .seconds(30)) {
                        try listed().allSatisfy { $0.planVersion == i + 2 && $0.status?.plan.delivered == i + 2 } ? true : nil
                    }
                }
                stop.stop()
                return try await running
            }

            let summary = result.summary
            #expect(summary.errorCount == 0, "errors: \(summary.errors)")
            #expect(summary.versionRegressions == 0)
            let fleet = try #require(summary.fleet)
            #expect(fleet.connected == 20 && fleet.reconnects == 0)
            #expect(fleet.newVersionsPushed == 40, "two releases, by push alone: \(fleet)")
            #expect(fleet.statusesPublished >= 20 * 3, "one at connect and one per delivery: \(fleet)")
            #expect(summary.routes["plan"] == nil, "no gateway polled in this window")
            for trace in result.traces {
                #expect(trace.plans.map(\.via) .suffix(2) == ["push", "push"], "\(trace.gatewayID): \(trace.plans)")
                #expect(trace.plans.last?.apps == ["sensor-agent@1.2.0"])
                #expect(trace.reports.map(\.planVersion) == [1, 2, 3], "\(trace.gatewayID) reported \(trace.reports)")
            }
            // Each report once, whichever replica took it; every gateway said "offline" when it stopped.
            struct Stored: Decodable, Hashable { var gatewayID: String; var planVersion: Int }
            let stored = try decodeJSON([Stored].self, try run(daemon, ["reports", "--config", replicas[0].config, "--json"]).stdout)
            #expect(stored.count == 60 && Set(stored).count == 60)
            _ = try await eventually("every gateway offline", timeout: .seconds(10)) {
                try listed().allSatisfy { $0.online == false } ? true : nil
            }
        }
    }
}
