import ArgumentParser
import AsyncHTTPClient
import Crypto
import Foundation
import GatewayProtocol
import HostUpdate
import Logging

/// The failsafe updater of the gateway software (issue 10), run by a systemd timer; and the
/// operator's tools to make keys and sign manifests.
@main
struct HostctlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iot-gateway-hostctl",
        abstract: "Updates iot-gateway-client from the operator's signed manifests, rolling back a build that is not healthy.",
        discussion: """
            Exit codes of 'run': 0 installed or up to date, 1 could not run (server unreachable, busy), \
            2 manifest or artifact refused (nothing changed), 3 rolled back, 4 rollback failed.
            """,
        subcommands: [Run.self, Status.self, SignManifest.self, GenerateKey.self],
        defaultSubcommand: Run.self)

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check for an update once and install it (the timer's command).")

        @Option(name: .shortAndLong, help: "Updater configuration file (JSON).")
        var config: String = HostctlConfig.defaultPath

        @Option(help: "Log level (trace, debug, info, notice, warning, error).")
        var logLevel: Logger.Level = .info

        func run() async throws {
            let cfg: HostctlConfig
            do { cfg = try HostctlConfig.load(path: config) } catch let e as HostUpdateError { throw ValidationError(e.message) }
            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = .trace
                return h
            }
            var logger = Logger(label: "iot-gateway-hostctl")
            logger.logLevel = logLevel
            let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: Fetcher.httpConfiguration)
            let record = await HostUpdater(config: cfg, http: http, logger: logger).run()
            try? await http.shutdown()
            print("\(record.outcome.rawValue): \(record.message)")
            if record.exitCode != 0 { throw ExitCode(record.exitCode) }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the installed version and the last run.")

        @Option(name: .shortAndLong, help: "Updater configuration file (JSON).")
        var config: String = HostctlConfig.defaultPath

        func run() async throws {
            let cfg: HostctlConfig
            do { cfg = try HostctlConfig.load(path: config) } catch let e as HostUpdateError { throw ValidationError(e.message) }
            let store = StateStore(directory: cfg.stateDirectory)
            let state: HostState
            do { state = try store.load() } catch let e as HostUpdateError { throw ValidationError(e.message) }
            print("installed:         \(state.installedVersion ?? "-")")
            print("highest accepted:  \(state.highestAcceptedVersion ?? "-")")
            print("previous (kept):   \(state.previousVersion ?? "-")")
            if let r = store.lastRun() {
                print("last run:          \(r.outcome.rawValue) \(r.version ?? "") at \(r.finishedAt): \(r.message)")
            }
        }
    }

    struct SignManifest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sign-manifest",
            abstract: "Sign an update manifest with the operator's key (digests and sizes are computed from the files).")

        @Option(help: "The operator's private key file (base64 of 32 bytes, from generate-key).")
        var key: String
        @Option(help: "Version of the build (dotted decimal, e.g. 1.4.0); gateways install only newer ones.")
        var version: String
        @Option(help: "The iot-gateway-client binary.")
        var client: String
        @Option(help: "Where gateways download the binary (absolute, or relative to the manifest's URL).")
        var clientURL: String
        @Option(help: "The playbook archive (tar or tar.gz, site.yml at its top).")
        var playbook: String
        @Option(help: "Where gateways download the playbook archive.")
        var playbookURL: String
        @Option(help: "Days the manifest stays valid.")
        var validDays: Double = 14
        @Option(help: "Free text kept in the manifest.")
        var notes: String?
        @Option(name: .shortAndLong, help: "Write the signed manifest here instead of stdout.")
        var output: String?

        func validate() throws {
            guard HostVersion(version) != nil else { throw ValidationError("--version must be dotted decimal numbers, e.g. 1.4.0") }
            guard validDays > 0, validDays <= 366 else { throw ValidationError("--valid-days must be between 0 and 366") }
        }

        func run() async throws {
            guard let keyText = FileManager.default.contents(atPath: key) else { throw ValidationError("cannot read \(key)") }
            let privateKey: Curve25519.Signing.PrivateKey
            do { privateKey = try Keys.decodePrivate(String(decoding: keyText, as: UTF8.self)) } catch {
                throw ValidationError("\(key) is not a base64 32-byte Ed25519 private key")
            }
            func artifact(_ path: String, _ url: String) throws -> HostManifest.Artifact {
                guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
                return HostManifest.Artifact(url: url, sha256: Keys.sha256Hex(data), size: data.count)
            }
            let now = Date()
            let manifest = HostManifest(version: version, issuedAt: now, expiresAt: now.addingTimeInterval(validDays * 86_400),
                                        client: try artifact(client, clientURL), playbook: try artifact(playbook, playbookURL), notes: notes)
            let signed = try ManifestSigner(privateKey: privateKey).sign(manifest)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            let bytes = try encoder.encode(signed)
            if let output {
                try bytes.write(to: URL(fileURLWithPath: output), options: .atomic)
            } else {
                print(String(decoding: bytes, as: UTF8.self))
            }
        }
    }

    struct GenerateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "generate-key",
            abstract: "Make the operator's signing key pair: the private key to a file (0600), the public key to stdout.")

        @Option(name: .shortAndLong, help: "Where to write the private key (must not exist).")
        var output: String

        func run() async throws {
            guard !FileManager.default.fileExists(atPath: output) else { throw ValidationError("\(output) exists; refusing to overwrite a key") }
            let key = Curve25519.Signing.PrivateKey()
            guard FileManager.default.createFile(atPath: output, contents: Data((key.rawRepresentation.base64EncodedString() + "\n").utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("cannot write \(output)")
            }
            print(Keys.encode(key.publicKey))
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
