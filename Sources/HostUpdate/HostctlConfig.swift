import Crypto
import Foundation
import GatewayProtocol

/// The gateway owner's configuration of the updater (JSON, `/etc/iot-gateway/hostctl.json`): whose
/// updates to take and how to install and restart the agent. Only the owner's operator's key is ever
/// trusted here, never a vendor's.
public struct HostctlConfig: Sendable, Codable, Equatable {
    /// Where the signed manifest is fetched; https unless ``allowInsecureHTTP``.
    public var manifestURL: String
    /// Base64 of the operator's raw 32-byte Ed25519 public key.
    public var publicKey: String
    /// Plain http for the manifest and artifacts: tests and lab networks only.
    public var allowInsecureHTTP: Bool
    /// The updater's state (versions, last run, downloads); root-only.
    public var stateDirectory: String
    /// The installed agent binary; the one it replaces is kept at `<installPath>.previous` for rollback.
    public var installPath: String
    /// The agent's control socket, whose `GET /v1/status` is the health check.
    public var controlSocket: String
    /// Restarts the agent (argv, no shell), for the update and for a rollback.
    public var restartCommand: [String]
    /// How long the restarted agent has to answer its health check before the build is rolled back.
    public var healthTimeoutSeconds: Double
    public var ansiblePlaybook: String
    /// Longest `ansible-playbook` run.
    public var playbookTimeoutSeconds: Double
    public var maxClientBytes: Int
    public var maxPlaybookBytes: Int
    /// The version this gateway was installed with (its package's or image's): the floor until the
    /// updater has installed one itself, so a fresh gateway does not take an older, replayed manifest.
    public var initialVersion: String?

    public static let defaultPath = "/etc/iot-gateway/hostctl.json"

    public init(manifestURL: String, publicKey: String, allowInsecureHTTP: Bool = false,
                stateDirectory: String = "/var/lib/iot-gateway-hostctl", installPath: String = "/usr/lib/iot-gateway/iot-gateway-client",
                controlSocket: String = "/run/iot-gateway/control.sock",
                restartCommand: [String] = ["systemctl", "restart", "iot-gateway-client.service"], healthTimeoutSeconds: Double = 120,
                ansiblePlaybook: String = "ansible-playbook", playbookTimeoutSeconds: Double = 900,
                maxClientBytes: Int = 512 * 1024 * 1024, maxPlaybookBytes: Int = 4 * 1024 * 1024, initialVersion: String? = nil) {
        self.manifestURL = manifestURL
        self.publicKey = publicKey
        self.allowInsecureHTTP = allowInsecureHTTP
        self.stateDirectory = stateDirectory
        self.installPath = installPath
        self.controlSocket = controlSocket
        self.restartCommand = restartCommand
        self.healthTimeoutSeconds = healthTimeoutSeconds
        self.ansiblePlaybook = ansiblePlaybook
        self.playbookTimeoutSeconds = playbookTimeoutSeconds
        self.maxClientBytes = maxClientBytes
        self.maxPlaybookBytes = maxPlaybookBytes
        self.initialVersion = initialVersion
    }

    enum CodingKeys: String, CodingKey {
        case manifestURL, publicKey, allowInsecureHTTP, stateDirectory, installPath, controlSocket, restartCommand,
             healthTimeoutSeconds, ansiblePlaybook, playbookTimeoutSeconds, maxClientBytes, maxPlaybookBytes, initialVersion
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = HostctlConfig(manifestURL: "", publicKey: "")
        manifestURL = try c.decode(String.self, forKey: .manifestURL)
        publicKey = try c.decode(String.self, forKey: .publicKey)
        allowInsecureHTTP = try c.decodeIfPresent(Bool.self, forKey: .allowInsecureHTTP) ?? d.allowInsecureHTTP
        stateDirectory = try c.decodeIfPresent(String.self, forKey: .stateDirectory) ?? d.stateDirectory
        installPath = try c.decodeIfPresent(String.self, forKey: .installPath) ?? d.installPath
        controlSocket = try c.decodeIfPresent(String.self, forKey: .controlSocket) ?? d.controlSocket
        restartCommand = try c.decodeIfPresent([String].self, forKey: .restartCommand) ?? d.restartCommand
        healthTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .healthTimeoutSeconds) ?? d.healthTimeoutSeconds
        ansiblePlaybook = try c.decodeIfPresent(String.self, forKey: .ansiblePlaybook) ?? d.ansiblePlaybook
        playbookTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .playbookTimeoutSeconds) ?? d.playbookTimeoutSeconds
        maxClientBytes = try c.decodeIfPresent(Int.self, forKey: .maxClientBytes) ?? d.maxClientBytes
        maxPlaybookBytes = try c.decodeIfPresent(Int.self, forKey: .maxPlaybookBytes) ?? d.maxPlaybookBytes
        initialVersion = try c.decodeIfPresent(String.self, forKey: .initialVersion)
    }

    public static func load(path: String) throws -> HostctlConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HostUpdateError(.config, "cannot read \(path)")
        }
        let c: HostctlConfig
        do { c = try JSONDecoder().decode(HostctlConfig.self, from: data) } catch {
            throw HostUpdateError(.config, "\(path) is not a valid updater configuration: \(error)")
        }
        try c.validate()
        return c
    }

    /// The operator's key.
    public func key() throws -> Curve25519.Signing.PublicKey {
        do { return try Keys.decodePublic(publicKey) } catch {
            throw HostUpdateError(.config, "publicKey must be base64 of the operator's 32-byte Ed25519 public key")
        }
    }

    public func validate() throws {
        _ = try key()
        _ = try URLPolicy(allowInsecureHTTP: allowInsecureHTTP).check(manifestURL, relativeTo: nil)
        for (name, path) in [("stateDirectory", stateDirectory), ("installPath", installPath), ("controlSocket", controlSocket)] {
            guard path.hasPrefix("/") else { throw HostUpdateError(.config, "\(name) must be an absolute path") }
        }
        if let initialVersion, HostVersion(initialVersion) == nil {
            throw HostUpdateError(.config, "initialVersion must be dotted decimal numbers, e.g. 1.4.0")
        }
        guard let exe = restartCommand.first, !exe.isEmpty else { throw HostUpdateError(.config, "restartCommand must name a program") }
        guard healthTimeoutSeconds > 0, playbookTimeoutSeconds > 0, maxClientBytes > 0, maxPlaybookBytes > 0 else {
            throw HostUpdateError(.config, "timeouts and size limits must be positive")
        }
    }
}

/// https only, unless the owner allowed plain http.
public struct URLPolicy: Sendable {
    public var allowInsecureHTTP: Bool

    public init(allowInsecureHTTP: Bool) { self.allowInsecureHTTP = allowInsecureHTTP }

    /// The absolute URL, or an error saying why it is refused.
    public func check(_ text: String, relativeTo base: URL?) throws -> URL {
        guard let url = URL(string: text, relativeTo: base)?.absoluteURL, let scheme = url.scheme?.lowercased(), url.host != nil else {
            throw HostUpdateError(.config, "\(Fields.quote(text)) is not a URL")
        }
        switch scheme {
        case "https": return url
        case "http" where allowInsecureHTTP: return url
        case "http": throw HostUpdateError(.insecureURL, "\(url.absoluteString) is plain http; set allowInsecureHTTP only for tests")
        default: throw HostUpdateError(.insecureURL, "\(url.absoluteString): only https is accepted")
        }
    }
}
