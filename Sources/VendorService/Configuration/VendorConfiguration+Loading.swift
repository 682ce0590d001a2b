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
    /// Checks every field; throws a ``ConfigurationError`` naming the first bad one. Limits and tokens
    /// follow `PlanValidator`'s rules, so every plan composed from a valid configuration is accepted by gateways.
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
        guard Self.isVendorID(vendor) else { throw fail("vendor", "\"\(vendor)\" must match [a-z][a-z0-9-]{0,30}") }
        guard !listen.host.isEmpty else { throw fail("listen.host", "must not be empty") }
        guard (0...65535).contains(listen.port) else { throw fail("listen.port", "\(listen.port) is not a TCP port") }
        guard !database.isEmpty else { throw fail("database", "must be a file path") }
        guard !signingKey.isEmpty else { throw fail("signingKey", "must be a file path") }
        guard (60...(366 * 86_400)).contains(planTTLSeconds) else {
            throw fail("planTTLSeconds", "\(planTTLSeconds) must be between 60 and \(366 * 86_400)")
        }
        guard Self.isToken(image.alias) else { throw fail("image.alias", "\"\(image.alias)\" must be 1-64 of [A-Za-z0-9._-]") }
        guard image.fingerprint.count == 64, image.fingerprint.allSatisfy({ $0.isASCII && $0.isHexDigit }) else {
            throw fail("image.fingerprint", "must be the image's SHA-256: 64 hex digits")
        }
        guard container.cpus >= 1 else { throw fail("container.cpus", "must be at least 1") }
        guard container.memoryMiB >= 16 else { throw fail("container.memoryMiB", "must be at least 16") }
        guard container.diskMiB >= 64 else { throw fail("container.diskMiB", "must be at least 64") }
        guard container.processes >= 8 else { throw fail("container.processes", "must be at least 8") }

        var appNames = Set<String>()
        for (i, app) in apps.enumerated() {
            guard Self.isToken(app.name) else { throw fail("apps[\(i)].name", "\"\(app.name)\" must be 1-64 of [A-Za-z0-9._-]") }
            guard appNames.insert(app.name).inserted else { throw fail("apps[\(i)].name", "app \"\(app.name)\" is defined twice") }
            guard !app.version.isEmpty, app.version.count <= 64 else { throw fail("apps[\(i)].version", "must be 1-64 characters") }
            guard !app.runList.isEmpty else { throw fail("apps[\(i)].runList", "must name at least one recipe or role") }
            for entry in app.runList where entry.isEmpty {
                throw fail("apps[\(i)].runList", "entries must not be empty")
            }
            if let profile = app.inspecProfile, !Self.isToken(profile) {
                throw fail("apps[\(i)].inspecProfile", "\"\(profile)\" must be 1-64 of [A-Za-z0-9._-]")
            }
        }

        var modelNames = Set<String>()
        for (i, model) in models.enumerated() {
            guard Self.isToken(model.name) else { throw fail("models[\(i)].name", "\"\(model.name)\" must be 1-64 of [A-Za-z0-9._-]") }
            guard modelNames.insert(model.name).inserted else { throw fail("models[\(i)].name", "model \"\(model.name)\" is defined twice") }
            guard Self.isHex4(model.vendorID) else { throw fail("models[\(i)].vendorID", "\"\(model.vendorID)\" must be 4 hex digits") }
            guard Self.isHex4(model.productID) else { throw fail("models[\(i)].productID", "\"\(model.productID)\" must be 4 hex digits") }
            if model.kind == .unixChar {
                guard let path = model.devicePath, Self.isDevicePath(path) else {
                    throw fail("models[\(i)].devicePath", "a unix-char device needs a path under /dev/ (no \"..\", under 128 characters)")
                }
            }
            for app in model.apps where !appNames.contains(app) {
                throw fail("models[\(i)].apps", "model \(model.name) references unknown app \"\(app)\"")
            }
        }
        if let chef { try chef.validate() }
    }

    /// `[a-z][a-z0-9-]{0,30}`.
    public static func isVendorID(_ s: String) -> Bool {
        guard let first = s.first, first.isASCII, first.isLowercase, (1...31).contains(s.count) else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }

    static func isHex4(_ s: String) -> Bool { s.count == 4 && s.allSatisfy { $0.isASCII && $0.isHexDigit } }

    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 64 && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }

    static func isDevicePath(_ p: String) -> Bool { p.hasPrefix("/dev/") && !p.contains("..") && p.count < 128 }
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
        if let environment {
            guard !environment.isEmpty, environment.count <= 255,
                  environment.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else {
                throw fail("environment", "\"\(environment)\" must be a Chef environment name of [A-Za-z0-9_-]")
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
