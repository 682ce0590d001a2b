import Foundation

/// What `knife bootstrap` writes on a node (chef 18 `knife/lib/chef/knife/bootstrap/templates/chef-full.erb`
/// and `knife/lib/chef/knife/core/bootstrap_context.rb`), as pure data: the caller puts the files
/// into the container with the given modes and then runs `chefClientCommand`.
///
/// For a validatorless bootstrap set `clientKeyPEM` to the key `ChefClient.registerClient` returned.
public struct BootstrapFiles: Sendable, Equatable {
    public static let directory = "/etc/chef"
    public static let clientRBPath = "/etc/chef/client.rb"
    public static let clientKeyPath = "/etc/chef/client.pem"
    public static let firstBootPath = "/etc/chef/first-boot.json"
    public static let trustedCertsDirectory = "/etc/chef/trusted_certs"
    public static let encryptedDataBagSecretPath = "/etc/chef/encrypted_data_bag_secret"
    /// `client.pem` (and the data bag secret): knife writes them under `umask 077`.
    public static let clientKeyMode = 0o600
    /// Every other file (knife's `cat >` under the default umask 022).
    public static let fileMode = 0o644
    public static let directoryMode = 0o755

    /// `log_location` in `client.rb`.
    public enum LogLocation: Sendable, Equatable {
        case stdout, stderr, syslog
        case file(String)
    }

    /// `log_level` in `client.rb`.
    public enum LogLevel: String, Sendable, CaseIterable {
        case trace, debug, info, warn, error, fatal
    }

    /// `ssl_verify_mode` in `client.rb`.
    public enum SSLVerifyMode: String, Sendable {
        case verifyNone = "verify_none"
        case verifyPeer = "verify_peer"
    }

    /// A Policyfile assignment, which replaces the run list in `first-boot.json`.
    public struct Policy: Sendable, Equatable {
        public var name: String
        public var group: String
        public init(name: String, group: String) {
            self.name = name
            self.group = group
        }
    }

    /// A CA certificate for `/etc/chef/trusted_certs/<name>` (knife copies `*.crt` and `*.pem`).
    public struct TrustedCert: Sendable, Equatable {
        public var fileName: String
        public var pem: String
        public init(fileName: String, pem: String) {
            self.fileName = fileName
            self.pem = pem
        }
    }

    /// A file to write on the node.
    public struct File: Sendable, Equatable {
        public var path: String
        public var contents: String
        public var mode: Int
    }

    /// `chef_server_url`: `ChefClient.baseURL` (with `/organizations/NAME` on Chef Infra Server).
    public var chefServerURL: String
    /// `node_name`; `nil` writes knife's `# Using default node name (fqdn)`.
    public var nodeName: String?
    /// The new client's private key (validatorless bootstrap). Secret.
    public var clientKeyPEM: String?
    public var runList: [String]
    /// First-boot attributes (`--json-attributes`): top level of `first-boot.json`, which
    /// chef-client stores as normal attributes.
    public var attributes: [String: ChefJSONValue]
    public var tags: [String]
    public var policy: Policy?
    /// Chef environment, passed to chef-client as `-E`.
    public var environment: String?
    /// knife always writes it, also for validatorless bootstraps.
    public var validationClientName: String
    /// `chef_license`; chef-client 15+ refuses to run (exit 172) without acceptance.
    public var chefLicense: String?
    public var logLevel: LogLevel?
    public var logLocation: LogLocation
    public var verifyAPICert: Bool?
    public var sslVerifyMode: SSLVerifyMode?
    public var trustedCerts: [TrustedCert]
    /// Contents of `/etc/chef/encrypted_data_bag_secret`. Secret.
    public var encryptedDataBagSecret: String?
    public var fips: Bool
    public var fileCachePath: String?
    public var fileBackupPath: String?

    public init(chefServerURL: String, nodeName: String?, clientKeyPEM: String?, runList: [String] = [],
                attributes: [String: ChefJSONValue] = [:], tags: [String] = [], policy: Policy? = nil,
                environment: String? = nil, validationClientName: String = "chef-validator",
                chefLicense: String? = "accept", logLevel: LogLevel? = .info, logLocation: LogLocation = .stdout,
                verifyAPICert: Bool? = nil, sslVerifyMode: SSLVerifyMode? = nil, trustedCerts: [TrustedCert] = [],
                encryptedDataBagSecret: String? = nil, fips: Bool = false,
                fileCachePath: String? = nil, fileBackupPath: String? = nil) {
        self.chefServerURL = chefServerURL
        self.nodeName = nodeName
        self.clientKeyPEM = clientKeyPEM
        self.runList = runList
        self.attributes = attributes
        self.tags = tags
        self.policy = policy
        self.environment = environment
        self.validationClientName = validationClientName
        self.chefLicense = chefLicense
        self.logLevel = logLevel
        self.logLocation = logLocation
        self.verifyAPICert = verifyAPICert
        self.sslVerifyMode = sslVerifyMode
        self.trustedCerts = trustedCerts
        self.encryptedDataBagSecret = encryptedDataBagSecret
        self.fips = fips
        self.fileCachePath = fileCachePath
        self.fileBackupPath = fileBackupPath
    }

    // MARK: - Outputs

    /// `/etc/chef/client.rb`, line for line as knife's `config_content` (spacing included).
    /// Values are emitted as Ruby string literals; unlike knife, `"`, `\` and `#` are escaped, so
    /// no value can inject Ruby into a file chef-client evaluates as root.
    public var clientRB: String {
        var s = "chef_server_url  \(Self.ruby(chefServerURL))\n"
        s += "validation_client_name \(Self.ruby(validationClientName))\n"
        if let chefLicense { s += "chef_license \(Self.ruby(chefLicense))\n" }
        if let logLevel { s += "log_level   :\(logLevel.rawValue)\n" }
        s += "log_location   \(Self.rubyLogLocation(logLocation))\n"
        if let nodeName {
            s += "node_name \(Self.ruby(nodeName))\n"
        } else {
            s += "# Using default node name (fqdn)\n"
        }
        if let verifyAPICert { s += "verify_api_cert \(verifyAPICert)\n" }
        if let sslVerifyMode { s += "ssl_verify_mode :\(sslVerifyMode.rawValue)\n" }
        if encryptedDataBagSecret != nil { s += "encrypted_data_bag_secret \(Self.ruby(Self.encryptedDataBagSecretPath))\n" }
        if !trustedCerts.isEmpty { s += "trusted_certs_dir \(Self.ruby(Self.trustedCertsDirectory))\n" }
        if fips { s += "fips true\n" }
        if let fileCachePath { s += "file_cache_path \(Self.ruby(fileCachePath))\n" }
        if let fileBackupPath { s += "file_backup_path \(Self.ruby(fileBackupPath))\n" }
        return s
    }

    /// `/etc/chef/first-boot.json` as knife's `first_boot`: the attributes, then `run_list` (or
    /// `policy_name` + `policy_group`), then `tags` if any. Compact, keys of nested objects sorted,
    /// no trailing newline; e.g. `{"run_list":["recipe[base]","role[web]"]}`.
    public var firstBootJSON: String {
        var members: [(String, ChefJSONValue)] = attributes
            .filter { !["run_list", "policy_name", "policy_group", "tags"].contains($0.key) }
            .sorted { $0.key < $1.key }
            .map { ($0.key, $0.value) }
        if let policy {
            members.append(("policy_name", .string(policy.name)))
            members.append(("policy_group", .string(policy.group)))
        } else {
            members.append(("run_list", .array(runList.map { .string($0) })))
        }
        if !tags.isEmpty { members.append(("tags", .array(tags.map { .string($0) }))) }
        // Encoding a ChefJSONValue fails only for non-finite doubles, which JSON cannot carry.
        return JSONText.object(members.map { ($0.0, (try? JSONText.encode($0.1)) ?? "null") })
    }

    /// `/etc/chef/client.pem`, with the trailing newline PEM files end with.
    public var clientPEM: String? {
        clientKeyPEM.map { $0.hasSuffix("\n") ? $0 : $0 + "\n" }
    }

    /// Directories to create first (`mkdir -p`), parents before children.
    public var directories: [String] {
        trustedCerts.isEmpty ? [Self.directory] : [Self.directory, Self.trustedCertsDirectory]
    }

    /// Every file, in the order the bootstrap script writes them.
    public var files: [File] {
        var out: [File] = []
        if let clientPEM { out.append(File(path: Self.clientKeyPath, contents: clientPEM, mode: Self.clientKeyMode)) }
        if let encryptedDataBagSecret {
            out.append(File(path: Self.encryptedDataBagSecretPath, contents: encryptedDataBagSecret, mode: Self.clientKeyMode))
        }
        for cert in trustedCerts {
            out.append(File(path: Self.trustedCertsDirectory + "/" + cert.fileName,
                            contents: cert.pem.hasSuffix("\n") ? cert.pem : cert.pem + "\n", mode: Self.fileMode))
        }
        out.append(File(path: Self.clientRBPath, contents: clientRB, mode: Self.fileMode))
        out.append(File(path: Self.firstBootPath, contents: firstBootJSON, mode: Self.fileMode))
        return out
    }

    /// What the bootstrap runs last: `chef-client -j /etc/chef/first-boot.json [-E env] --no-color`.
    public var chefClientCommand: [String] {
        ChefClientRun.command(environment: environment)
    }

    /// Rejects what knife would reject or what cannot work, before anything is written.
    public func validate() throws {
        guard chefServerURL.hasPrefix("http://") || chefServerURL.hasPrefix("https://") else {
            throw ChefError(code: .invalidArgument, message: "chef_server_url must be http(s), got '\(chefServerURL)'")
        }
        if let nodeName { try ChefClient.validateName(nodeName, "node") }
        for cert in trustedCerts {
            guard !cert.fileName.isEmpty, !cert.fileName.contains("/"), cert.fileName != ".", cert.fileName != "..",
                  cert.fileName.hasSuffix(".crt") || cert.fileName.hasSuffix(".pem") else {
                throw ChefError(code: .invalidArgument, message: "trusted cert file name must be a plain *.crt or *.pem name, got '\(cert.fileName)'")
            }
        }
        if let clientKeyPEM { _ = try ChefPrivateKey(pemRepresentation: clientKeyPEM) }
    }

    // MARK: - Encoding

    /// A Ruby double-quoted string literal. For ordinary values this is exactly knife's `"#{value}"`.
    static func ruby(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "#": out += "\\#"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func rubyLogLocation(_ l: LogLocation) -> String {
        switch l {
        case .stdout: "STDOUT"
        case .stderr: "STDERR"
        case .syslog: ":syslog"
        case .file(let path): ruby(path)
        }
    }
}
