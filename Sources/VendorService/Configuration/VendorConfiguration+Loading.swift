import Foundation
import GatewayProtocol
import Yams

extension VendorConfiguration {
    /// Reads, decodes and validates a configuration file. Relative `database`, `signingKey` and
    /// `chef.adminKey` paths are resolved against the file's folder, so a configuration works wherever the
    /// daemon is started from.
    public static func load(from path: String) throws -> VendorConfiguration {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigurationError(.unreadable, "cannot read configuration file", path: path)
        }
        do {
            var configuration = try parse(yaml: text)
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
            configuration.database = resolve(configuration.database, against: folder)
            configuration.signingKey = resolve(configuration.signingKey, against: folder)
            if let dir = configuration.ansible?.playbookDirectory {
                configuration.ansible?.playbookDirectory = resolve(dir, against: folder)
            }
            if let adminKey = configuration.chef?.adminKey {
                configuration.chef?.adminKey = resolve(adminKey, against: folder)
            }
            if let file = configuration.postgres?.passwordFile {
                configuration.postgres?.passwordFile = resolve(file, against: folder)
            }
            if var fleet = configuration.fleet {
                fleet.caCertificate = resolve(fleet.caCertificate, against: folder)
                fleet.certificate = resolve(fleet.certificate, against: folder)
                fleet.key = resolve(fleet.key, against: folder)
                fleet.certificateDirectory = fleet.certificateDirectory.map { resolve($0, against: folder) }
                configuration.fleet = fleet
            }
            return configuration
        } catch var error as ConfigurationError {
            error.path = path
            throw error
        }
    }

    /// Decodes and validates configuration YAML (paths are kept as written).
    public static func parse(yaml: String) throws -> VendorConfiguration {
        let configuration: VendorConfiguration
        do { configuration = try YAMLDecoder().decode(VendorConfiguration.self, from: yaml) } catch let error as DecodingError {
            throw Self.describe(error)
        } catch {
            throw ConfigurationError(.malformed, "not valid YAML: \(error)")
        }
        try configuration.validate()
        return configuration
    }

    private static func resolve(_ path: String, against folder: URL) -> String {
        path.hasPrefix("/") ? path : folder.appendingPathComponent(path).standardizedFileURL.path
    }

    private static func describe(_ error: DecodingError) -> ConfigurationError {
        func name(_ path: [any CodingKey]) -> String? {
            var s = ""
            for key in path {
                if let i = key.intValue { s += "[\(i)]" } else { s += s.isEmpty ? key.stringValue : ".\(key.stringValue)" }
            }
            return s.isEmpty ? nil : s
        }
        switch error {
        case .keyNotFound(let key, let context):
            return ConfigurationError(.malformed, field: name(context.codingPath + [key]), "required field is missing")
        case .typeMismatch(let type, let context):
            return ConfigurationError(.malformed, field: name(context.codingPath), "expected a value of type \(type)")
        case .valueNotFound(let type, let context):
            return ConfigurationError(.malformed, field: name(context.codingPath), "expected a value of type \(type), found none")
        case .dataCorrupted(let context):
            return ConfigurationError(.malformed, field: name(context.codingPath), context.debugDescription)
        @unknown default:
            return ConfigurationError(.malformed, "\(error)")
        }
    }
}

extension VendorConfiguration {
    /// Checks every field; throws a ``ConfigurationError`` naming the first bad one. Names, versions, run
    /// lists, paths and limits follow the rules gateways check plans with (`Fields`, `PlanValidator`), so
    /// every plan composed from a valid configuration is accepted by gateways.
    public func validate() throws {
        if chef != nil, ansible != nil {
            throw ConfigurationError(.invalidField, field: "ansible", "configure either chef or ansible, not both")
        }
        if let dir = ansible?.playbookDirectory,
           !FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("site.yml")) {
            throw ConfigurationError(.invalidField, field: "ansible.playbookDirectory", "\(dir) has no site.yml")
        }
        func fail(_ field: String, _ message: String) -> ConfigurationError {
            ConfigurationError(.invalidField, field: field, message)
        }
        /// The rule's own message (it names the form), under the configuration's field name.
        func check(_ rule: FieldRule, _ value: String, _ field: String) throws {
            guard rule.isValid(value) else { throw fail(field, "\(Fields.quote(value)) must be \(rule.form)") }
        }
        guard Self.isVendorID(vendor) else { throw fail("vendor", "\"\(vendor)\" must match [a-z][a-z0-9-]{0,30}") }
        guard !listen.host.isEmpty else { throw fail("listen.host", "must not be empty") }
        guard (0...65535).contains(listen.port) else { throw fail("listen.port", "\(listen.port) is not a TCP port") }
        if let metrics {
            guard !metrics.host.isEmpty else { throw fail("metrics.host", "must not be empty") }
            guard (0...65535).contains(metrics.port) else { throw fail("metrics.port", "\(metrics.port) is not a TCP port") }
            // Its own listener: the public one never serves /metrics.
            guard metrics.port == 0 || metrics.port != listen.port else {
                throw fail("metrics.port", "\(metrics.port) is the public listen.port: metrics need a port of their own")
            }
        }
        if let publicHosts {
            guard !publicHosts.isEmpty else { throw fail("publicHosts", "must list at least one host name, or be left out") }
            for (i, host) in publicHosts.enumerated() { try check(Fields.host, host, "publicHosts[\(i)]") }
        }
        guard !database.isEmpty else { throw fail("database", "must be a file path") }
        guard !signingKey.isEmpty else { throw fail("signingKey", "must be a file path") }
        guard (60...(366 * 86_400)).contains(planTTLSeconds) else {
            throw fail("planTTLSeconds", "\(planTTLSeconds) must be between 60 and \(366 * 86_400)")
        }
        try check(Fields.name, image.alias, "image.alias")
        guard Fields.sha256.isValid(image.fingerprint) else { throw fail("image.fingerprint", "must be the image's SHA-256: 64 hex digits") }
        if let url = image.url { try check(Fields.url, url, "image.url") }
        for (field, value, range) in [("cpus", container.cpus, 1...1024), ("memoryMiB", container.memoryMiB, 16...(1 << 24)),
                                      ("diskMiB", container.diskMiB, 64...(1 << 30)), ("processes", container.processes, 8...(1 << 22))]
            where !range.contains(value) {
            throw fail("container.\(field)", "must be between \(range.lowerBound) and \(range.upperBound)")
        }

        guard apps.count <= PlanValidator.maxApps else { throw fail("apps", "at most \(PlanValidator.maxApps) apps") }
        var appNames = Set<String>()
        for (i, app) in apps.enumerated() {
            try check(Fields.name, app.name, "apps[\(i)].name")
            guard appNames.insert(app.name).inserted else { throw fail("apps[\(i)].name", "app \"\(app.name)\" is defined twice") }
            if ansible != nil, !Fields.variableName.isValid(AnsiblePlaybookProvisioner.variableName(forApp: app.name)) {
                throw fail("apps[\(i)].name", "\"\(app.name)\" cannot name an Ansible variable (start with a letter, at most 56 characters)")
            }
            try check(Fields.version, app.version, "apps[\(i)].version")
            guard (1...PlanValidator.maxRunListItems).contains(app.runList.count) else {
                throw fail("apps[\(i)].runList", "must name 1-\(PlanValidator.maxRunListItems) recipes or roles")
            }
            for entry in app.runList { try check(Fields.runListItem, entry, "apps[\(i)].runList") }
            if let profile = app.inspecProfile { try check(Fields.name, profile, "apps[\(i)].inspecProfile") }
        }

        var modelNames = Set<String>()
        for (i, model) in models.enumerated() {
            try check(Fields.name, model.name, "models[\(i)].name")
            guard modelNames.insert(model.name).inserted else { throw fail("models[\(i)].name", "model \"\(model.name)\" is defined twice") }
            guard Fields.usbID.isValid(model.vendorID) else { throw fail("models[\(i)].vendorID", "\"\(model.vendorID)\" must be 4 hex digits") }
            guard Fields.usbID.isValid(model.productID) else { throw fail("models[\(i)].productID", "\"\(model.productID)\" must be 4 hex digits") }
            if model.kind == .unixChar {
                guard let path = model.devicePath, Self.isDevicePath(path) else {
                    throw fail("models[\(i)].devicePath", "a unix-char device needs a path under /dev/ that is not one the container relies on "
                        + "(segments of [A-Za-z0-9._-], the last at most 31 characters, so a serial suffix fits)")
                }
            }
            for app in model.apps where !appNames.contains(app) {
                throw fail("models[\(i)].apps", "model \(model.name) references unknown app \"\(app)\"")
            }
        }
        if let chef { try chef.validate() }
        if let postgres { try postgres.validate() }
        if let fleet {
            guard Fields.host.isValid(fleet.host), (1...65535).contains(fleet.port) else {
                throw ConfigurationError(.invalidField, field: "fleet.host", "must be a host name or IPv4 address, with fleet.port 1-65535")
            }
            if let issue = fleet.issueCommand, issue.isEmpty || fleet.certificateDirectory == nil {
                throw ConfigurationError(.invalidField, field: "fleet.issueCommand", "needs an argv and fleet.certificateDirectory")
            }
        }
    }

    /// `[a-z][a-z0-9-]{0,30}`, not ending in `-` (`Fields.vendorID`).
    public static func isVendorID(_ s: String) -> Bool { Fields.vendorID.isValid(s) }

    /// A model's device path: valid in a plan (`Fields.containerDevicePath`) also with the longest suffix
    /// ``PlanComposer`` gives a second device of the model (`-` and 32 characters of its serial, plus a counter).
    static func isDevicePath(_ p: String) -> Bool {
        Fields.containerDevicePath.isValid(p) && Fields.containerDevicePath.isValid(p + "-" + String(repeating: "x", count: PlanComposer.maxSuffixLength))
    }
}

extension VendorConfiguration.ChefSettings {
    /// Checks the `chef` section; throws a ``ConfigurationError`` naming the first bad field (`chef.serverURL`).
    /// The admin key file is read when the daemon starts (``ChefProvisioner/configured(by:store:logger:now:)``).
    public func validate() throws {
        func fail(_ field: String, _ message: String) -> ConfigurationError {
            ConfigurationError(.invalidField, field: "chef.\(field)", message)
        }
        for (field, url) in [("serverURL", serverURL), ("containerServerURL", containerServerURL)] {
            guard let url else { continue }
            if let problem = Self.urlProblem(url) { throw fail(field, problem) }
        }
        if let organization {
            guard !organization.isEmpty, organization.count <= 255,
                  organization.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw fail("organization", "\"\(organization)\" must be an organization name of [a-z0-9_-] (or /organizations/NAME)")
            }
        }
        guard !adminName.isEmpty, adminName.count <= 255,
              adminName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }) else {
            throw fail("adminName", "\"\(adminName)\" must be a Chef user or client name of [A-Za-z0-9_.-]")
        }
        guard !adminKey.isEmpty else { throw fail("adminKey", "must be the path of the admin's PEM private key") }
        // What containers are told must pass the gateway's check of the bootstrap bundle.
        guard Fields.url.isValid(containerChefServerURL) else {
            throw fail(containerServerURL == nil ? "serverURL" : "containerServerURL",
                       "\(Fields.quote(containerChefServerURL)) must be \(Fields.url.form), at most \(Fields.url.maxLength) characters")
        }
        if let environment {
            // Gateways check the bundle's environment as a name (`Fields.name`).
            guard Fields.name.isValid(environment), !environment.contains(".") else {
                throw fail("environment", "\"\(environment)\" must be a Chef environment name of [A-Za-z0-9_-] starting with a letter or digit")
            }
        }
    }

    /// Why `url` cannot be a Chef server URL, or nil when it can.
    static func urlProblem(_ url: String) -> String? {
        guard let parsed = URLComponents(string: url), let scheme = parsed.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = parsed.host, !host.isEmpty, !url.contains(where: \.isWhitespace) else {
            return "\"\(url)\" must be an http(s) URL like http://chef.example:4545"
        }
        guard parsed.query == nil, parsed.fragment == nil, parsed.user == nil, parsed.password == nil else {
            return "\"\(url)\" must not carry a query, fragment or credentials"
        }
        guard !parsed.path.contains("/organizations/") else {
            return "\"\(url)\" must not include the organization path; set chef.organization instead"
        }
        return nil
    }
}
