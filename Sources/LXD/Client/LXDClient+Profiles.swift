import Foundation
import Yams

extension LXDClient {
    static func profilePath(_ name: String) -> String { "/1.0/profiles/\(pathEscape(name))" }

    /// All profiles with their content.
    public func listProfiles() async throws -> [Profile] {
        try await sync(.GET, "/1.0/profiles", query: [("recursion", "1")], as: [Profile].self).0
    }

    /// One profile and its ETag.
    public func profile(_ name: String) async throws -> (profile: Profile, etag: String?) {
        try LXDName.validateObject(name, kind: "profile")
        return try await sync(.GET, Self.profilePath(name), as: Profile.self)
    }

    /// Creates a profile (409 `.conflict` if it exists).
    public func createProfile(_ name: String, _ put: ProfilePut) async throws {
        try LXDName.validateObject(name, kind: "profile")
        try await syncSend(.POST, "/1.0/profiles",
                           body: ProfilesPost(name: name, description: put.description, config: put.config, devices: put.devices))
    }

    /// Replaces a profile's content.
    public func updateProfile(_ name: String, _ put: ProfilePut, ifMatch etag: String? = nil) async throws {
        try LXDName.validateObject(name, kind: "profile")
        try await syncSend(.PUT, Self.profilePath(name), body: put, ifMatch: etag)
    }

    /// Deletes a profile (fails while instances use it).
    public func deleteProfile(_ name: String) async throws {
        try LXDName.validateObject(name, kind: "profile")
        let raw = try await exchange(makeRequest(.DELETE, uri(Self.profilePath(name))))
        try check(raw)
    }

    /// Makes profile `name` equal `put`: creates it, updates it if it differs, or leaves it alone.
    /// Returns whether anything changed.
    @discardableResult
    public func ensureProfile(_ name: String, _ put: ProfilePut) async throws -> Bool {
        do {
            let (current, etag) = try await profile(name)
            guard current.put != put else { return false }
            try await updateProfile(name, put, ifMatch: etag)
            return true
        } catch let e as LXDError where e.code == .notFound {
            try await createProfile(name, put)
            return true
        }
    }

    /// Parses a profile YAML as `lxc profile show` prints it (`description`, `config`, `devices`).
    /// Non-string scalars (`true`, `500`) are accepted and sent as strings, as LXD requires.
    public static func parseProfileYAML(_ yaml: String) throws -> ProfilePut {
        let node: Node?
        do { node = try Yams.compose(yaml: yaml) } catch {
            throw LXDError(code: .invalidArgument, message: "profile YAML does not parse: \(error)")
        }
        guard let map = node?.mapping else { throw LXDError(code: .invalidArgument, message: "profile YAML must be a mapping") }
        func stringMap(_ n: Node?, _ what: String) throws -> [String: String] {
            guard let n else { return [:] }
            if case .scalar(let s) = n, s.string.isEmpty || s.string == "{}" { return [:] }
            guard let m = n.mapping else { throw LXDError(code: .invalidArgument, message: "\(what) must be a mapping") }
            var out: [String: String] = [:]
            for (k, v) in m {
                guard let key = k.scalar?.string, let value = v.scalar?.string else {
                    throw LXDError(code: .invalidArgument, message: "\(what) values must be scalars")
                }
                out[key] = value
            }
            return out
        }
        var devices: [String: Device] = [:]
        if let d = map["devices"], let dm = d.mapping {
            for (k, v) in dm {
                guard let key = k.scalar?.string else { continue }
                devices[key] = Device(try stringMap(v, "device \(key)"))
            }
        }
        for key in map.keys.compactMap(\.scalar?.string) where !["description", "config", "devices", "name", "used_by"].contains(key) {
            throw LXDError(code: .invalidArgument, message: "unknown profile key \"\(key)\"")
        }
        return ProfilePut(description: map["description"]?.scalar?.string ?? "",
                          config: try stringMap(map["config"], "config"), devices: devices)
    }

    /// Creates or updates profile `name` from a YAML file.
    @discardableResult
    public func ensureProfile(_ name: String, yamlFile: String) async throws -> Bool {
        let text: String
        do { text = try String(contentsOfFile: yamlFile, encoding: .utf8) } catch {
            throw LXDError(code: .invalidArgument, message: "cannot read \(yamlFile): \(error.localizedDescription)")
        }
        return try await ensureProfile(name, try Self.parseProfileYAML(text))
    }
}
