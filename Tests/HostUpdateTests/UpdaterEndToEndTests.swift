import AsyncHTTPClient
import Crypto
import Foundation
import GatewayProtocol
import Testing

@testable import HostUpdate

#if canImport(Glibc)
import Glibc
#endif

/// The real `iot-gateway-hostctl` against a local update server, real `ansible-playbook` and the real
/// `iot-gateway-client`, under a pidfile supervisor of the test's own.
@Suite(.serialized) struct UpdaterEndToEndTests {
    /// The real agent binary, plus bytes at its end so each "build" has its own digest (an ELF ignores them).
    static func build(_ name: String, from client: String, into dir: String) throws -> String {
        let path = dir + "/" + name
        var bytes = try Data(contentsOf: URL(fileURLWithPath: client))
        bytes.append(Data("\niotgw-test-build \(name)\n".utf8))
        try bytes.write(to: URL(fileURLWithPath: path))
        chmod(path, 0o755)
        return path
    }

    /// A build that starts but never opens its control socket.
    static func badBuild(into dir: String) throws -> String {
        let path = dir + "/bad-build"
        try "#!/bin/sh\n# a broken build: runs, never answers its control socket\nexec sleep 600\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    func hostctl(_ host: GatewayHost, _ config: String) async throws -> (status: Int32, output: String) {
        try await runTool(try Bin.path("iot-gateway-hostctl"), ["run", "--config", config, "--log-level", "debug"], log: host.root + "/hostctl.log")
    }

    /// Alive and not a zombie (whether PID 1 here reaps orphans is not ours to know).
    static func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    func eventuallyTrue(_ what: () -> Bool) async throws -> Bool {
        for _ in 0..<100 {
            if what() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("condition not met within 10 s")
        throw TestError("timeout")
    }

    func state(_ host: GatewayHost) throws -> HostState { try StateStore(directory: host.stateDirectory).load() }

    /// The whole life of an update: the agent is down (crashed) when the timer fires, a good build is
    /// installed and comes up healthy; a bad build is rolled back to it; and older manifests — signed
    /// by the operator, but replayed — are refused, including one newer than the rolled-back-to build.
    @Test func installsAGoodBuildRollsBackABadOneAndRefusesReplays() async throws {
        _ = try Bin.system("ansible-playbook", package: "ansible-core")
        let client = try Bin.path("iot-gateway-client")
        let host = try GatewayHost()
        let op = try await Operator(dir: host.root + "/operator")
        let http = HTTPClient.shared

        let v1 = try Self.build("client-1", from: client, into: op.dir)
        let v2 = try Self.build("client-2", from: client, into: op.dir)
        let bad = try Self.badBuild(into: op.dir)
        let playbook = try await op.playbookArchive()
        // Installed by hand before the updater ever ran; the agent is not running.
        try HostUpdater.copyDurably(from: v1, to: host.installPath)

        let files = ServedFiles()
        for (name, path) in [("client-2", v2), ("bad-build", bad), ("playbook.tar.gz", playbook), ("client-1", v1)] {
            await files.set(name, try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        try await withUpdateServer(files) { port in
            let base = "http://127.0.0.1:\(port)"
            let config = try host.writeConfig(host.config(manifestURL: base + "/manifest.json", publicKey: op.key.publicKey, healthTimeout: 45))

            // 1. A good build, installed while the agent is down.
            await files.set("manifest.json", try await op.sign(version: "2.0.0", client: v2, clientURL: "client-2", playbook: playbook))
            var r = try await hostctl(host, config)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("installed: 2.0.0 is installed and healthy"))
            #expect(sha256(host.installed()) == sha256(FileManager.default.contents(atPath: v2)))
            #expect(sha256(FileManager.default.contents(atPath: host.installPath + ".previous")) == sha256(FileManager.default.contents(atPath: v1)))
            #expect(await host.healthy(http: http, within: .seconds(5)))
            #expect(try state(host) == HostState(installedVersion: "2.0.0", highestAcceptedVersion: "2.0.0", previousVersion: nil))
            let goodPID = try #require(host.pid)

            // The same manifest again: up to date, nothing restarted.
            r = try await hostctl(host, config)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("upToDate"))
            #expect(host.pid == goodPID)

            // 2. A bad build: installed, never healthy, rolled back to 2.0.0, which answers again.
            await files.set("manifest.json", try await op.sign(version: "3.0.0", client: bad, clientURL: "bad-build", playbook: playbook))
            r = try await hostctl(host, config)
            #expect(r.status == 3, "\(r.output)")
            #expect(r.output.contains("rolledBack"))
            #expect(sha256(host.installed()) == sha256(FileManager.default.contents(atPath: v2)))
            #expect(await host.healthy(http: http, within: .seconds(5)))
            #expect(host.pid != goodPID)
            #expect(try state(host) == HostState(installedVersion: "2.0.0", highestAcceptedVersion: "3.0.0", previousVersion: "2.0.0"))
            let last = try #require(StateStore(directory: host.stateDirectory).lastRun())
            #expect(last.outcome == .rolledBack && last.version == "3.0.0")
            #expect(last.message.contains("not healthy"))

            // The rolled-back manifest is still served: never tried again.
            let rolledBackPID = host.pid
            r = try await hostctl(host, config)
            #expect(r.status == 3, "\(r.output)")
            #expect(r.output.contains("alreadyRolledBack"))
            #expect(host.pid == rolledBackPID)

            // 3. Replays of older, validly signed manifests are refused: one older than the installed
            // build, and one newer than it but older than the version accepted (and rolled back) before.
            let stateBefore = try state(host)
            for version in ["1.5.0", "2.5.0"] {
                await files.set("manifest.json", try await op.sign(version: version, client: v1, clientURL: "client-1", playbook: playbook))
                r = try await hostctl(host, config)
                #expect(r.status == 2, "\(version): \(r.output)")
                #expect(r.output.contains("refused"))
                #expect(StateStore(directory: host.stateDirectory).lastRun()?.code == .replay)
                #expect(try state(host) == stateBefore)
                #expect(sha256(host.installed()) == sha256(FileManager.default.contents(atPath: v2)))
                #expect(host.pid == rolledBackPID)
            }
            #expect(await host.healthy(http: http, within: .seconds(5)))

            // 4. A run killed between replacing the binary and the health check (power loss, say): the
            // next run does not trust that build and puts the kept one back before anything else.
            try HostUpdater.copyDurably(from: bad, to: host.installPath)
            var interrupted = try state(host)
            interrupted.highestAcceptedVersion = "4.0.0"
            interrupted.pendingVersion = "4.0.0"
            try StateStore(directory: host.stateDirectory).save(interrupted)
            r = try await hostctl(host, config)
            #expect(r.status == 3, "\(r.output)")
            #expect(r.output.contains("interrupted"))
            #expect(sha256(host.installed()) == sha256(FileManager.default.contents(atPath: v2)))
            #expect(try state(host) == HostState(installedVersion: "2.0.0", highestAcceptedVersion: "4.0.0", previousVersion: "2.0.0"))
            #expect(await host.healthy(http: http, within: .seconds(5)))
        }
    }

    /// An agent that is up but wedged (its socket accepts, nothing answers) is no obstacle: the update
    /// needs nothing from it, the restart replaces it, and only the new agent can pass the health check.
    @Test func updatesAWedgedAgent() async throws {
        _ = try Bin.system("ansible-playbook", package: "ansible-core")
        let client = try Bin.path("iot-gateway-client")
        let host = try GatewayHost()
        let op = try await Operator(dir: host.root + "/operator")
        let v1 = try Self.build("client-1", from: client, into: op.dir)
        let v2 = try Self.build("client-2", from: client, into: op.dir)
        let playbook = try await op.playbookArchive()
        try HostUpdater.copyDurably(from: v1, to: host.installPath)
        try await host.startWedged()
        let wedged = try #require(host.pid)
        _ = try await eventuallyTrue { FileManager.default.fileExists(atPath: host.socket) }
        #expect(await HealthCheck(socketPath: host.socket, http: .shared).probe() != nil, "the wedged agent must not look healthy")

        let files = ServedFiles()
        await files.set("client-2", try Data(contentsOf: URL(fileURLWithPath: v2)))
        await files.set("playbook.tar.gz", try Data(contentsOf: URL(fileURLWithPath: playbook)))
        try await withUpdateServer(files) { port in
            let config = try host.writeConfig(host.config(manifestURL: "http://127.0.0.1:\(port)/manifest.json", publicKey: op.key.publicKey))
            await files.set("manifest.json", try await op.sign(version: "2.0.0", client: v2, clientURL: "client-2", playbook: playbook))
            let r = try await hostctl(host, config)
            #expect(r.status == 0, "\(r.output)")
            #expect(sha256(host.installed()) == sha256(FileManager.default.contents(atPath: v2)))
            #expect(host.pid != wedged)
            #expect(!Self.isRunning(wedged), "the wedged agent is still running")
            #expect(await host.healthy(http: .shared, within: .seconds(5)))
        }
    }

    /// Tampered or unacceptable manifests and artifacts are refused before anything changes: the
    /// installed binary, the running agent, the state file and the kept previous build stay as they were.
    @Test func tamperedManifestsAndArtifactsChangeNothing() async throws {
        _ = try Bin.system("ansible-playbook", package: "ansible-core")
        let client = try Bin.path("iot-gateway-client")
        let host = try GatewayHost()
        let op = try await Operator(dir: host.root + "/operator")
        let http = HTTPClient.shared

        let v1 = try Self.build("client-1", from: client, into: op.dir)
        let v2 = try Self.build("client-2", from: client, into: op.dir)
        let playbook = try await op.playbookArchive()
        try HostUpdater.copyDurably(from: v1, to: host.installPath)
        try await host.start()
        #expect(await host.healthy(http: http), "the agent under test did not come up: \(String(decoding: host.file("agent.log") ?? Data(), as: UTF8.self))")
        let pid = try #require(host.pid)

        // A playbook archive with a symbolic link in it, correctly signed: the archive rules still hold.
        var linked = TarBuilder()
        linked.add("site.yml", type: "2", link: "/etc/shadow")
        let v2Bytes = try Data(contentsOf: URL(fileURLWithPath: v2))
        var flipped = v2Bytes
        flipped[flipped.count / 2] ^= 0xff

        let files = ServedFiles()
        await files.set("client-2", v2Bytes)
        await files.set("client-2-flipped", flipped)
        await files.set("playbook.tar.gz", try Data(contentsOf: URL(fileURLWithPath: playbook)))
        await files.set("linked.tar", linked.finished())
        try linked.finished().write(to: URL(fileURLWithPath: op.dir + "/linked.tar"))

        try await withUpdateServer(files) { port in
            let config = try host.writeConfig(host.config(manifestURL: "http://127.0.0.1:\(port)/manifest.json", publicKey: op.key.publicKey))
            let good = try await op.sign(version: "2.0.0", client: v2, clientURL: "client-2", playbook: playbook)
            let envelope = try JSONDecoder().decode(SignedHostManifest.self, from: good)
            let payload = try #require(Data(base64Encoded: envelope.payload))
            let manifest = try WireJSON.decoder().decode(HostManifest.self, from: payload)

            var cases: [(String, Data, HostUpdateError.Code)] = []
            // The payload changed after signing (a higher version).
            var tampered = envelope
            tampered.payload = Data(String(decoding: payload, as: UTF8.self).replacingOccurrences(of: "\"2.0.0\"", with: "\"9.0.0\"").utf8)
                .base64EncodedString()
            cases.append(("tampered payload", try JSONEncoder().encode(tampered), .badSignature))
            // Signed by someone else's key (a vendor's, say).
            let stranger = ManifestSigner(privateKey: Curve25519.Signing.PrivateKey())
            cases.append(("another key", try JSONEncoder().encode(try stranger.sign(manifest)), .badSignature))
            // The operator's bytes signed as another kind of document.
            let asBootstrap = try Envelope.sign(payload, domain: Envelope.bootstrapDomain, key: op.key)
            cases.append(("bootstrap-domain signature", try JSONEncoder().encode(SignedHostManifest(
                payload: envelope.payload, signature: asBootstrap.base64EncodedString(), keyID: envelope.keyID)), .badSignature))
            // Expired.
            var expired = manifest
            expired.issuedAt = Date().addingTimeInterval(-7200)
            expired.expiresAt = Date().addingTimeInterval(-60)
            cases.append(("expired", try JSONEncoder().encode(try ManifestSigner(privateKey: op.key).sign(expired)), .expired))
            // The server serves other bytes than the signed digest.
            var swapped = manifest
            swapped.client.url = "client-2-flipped"
            cases.append(("artifact hash mismatch", try JSONEncoder().encode(try ManifestSigner(privateKey: op.key).sign(swapped)), .digestMismatch))
            // The playbook archive holds a link.
            cases.append(("link in playbook", try await op.sign(version: "2.0.1", client: v2, clientURL: "client-2",
                                                                  playbook: op.dir + "/linked.tar", playbookURL: "linked.tar"), .unsafeArchive))

            for (name, served, code) in cases {
                await files.set("manifest.json", served)
                let r = try await hostctl(host, config)
                #expect(r.status == 2, "\(name): \(r.output)")
                let last = StateStore(directory: host.stateDirectory).lastRun()
                #expect(last?.outcome == .refused, "\(name)")
                #expect(last?.code == code, "\(name): \(last?.message ?? "no record")")
                #expect(!FileManager.default.fileExists(atPath: host.stateDirectory + "/state.json"), "\(name)")
                #expect(sha256(host.installed()) == sha256(FileManager.default.contents(atPath: v1)), "\(name)")
                #expect(!FileManager.default.fileExists(atPath: host.installPath + ".previous"), "\(name)")
                #expect(host.pid == pid, "\(name)")
                #expect(!FileManager.default.fileExists(atPath: StateStore(directory: host.stateDirectory).workDirectory), "\(name)")
            }
            #expect(await host.healthy(http: http, within: .seconds(5)))

            // A fresh gateway installed with 2.5.0 (initialVersion) takes no older manifest, though it has no state yet.
            var seeded = host.config(manifestURL: "http://127.0.0.1:\(port)/manifest.json", publicKey: op.key.publicKey)
            seeded.initialVersion = "2.5.0"
            await files.set("manifest.json", good)
            var r = try await hostctl(host, try host.writeConfig(seeded))
            #expect(r.status == 2, "\(r.output)")
            #expect(StateStore(directory: host.stateDirectory).lastRun()?.code == .replay)
            #expect(!FileManager.default.fileExists(atPath: host.stateDirectory + "/state.json"))
            #expect(sha256(host.installed()) == sha256(FileManager.default.contents(atPath: v1)))
            _ = try host.writeConfig(host.config(manifestURL: "http://127.0.0.1:\(port)/manifest.json", publicKey: op.key.publicKey))

            // And the good manifest still installs afterwards (nothing was burned by the refusals).
            r = try await hostctl(host, config)
            #expect(r.status == 0, "\(r.output)")
            #expect(sha256(host.installed()) == sha256(v2Bytes))
        }
    }
}
