import NIOCore

/// `definitions.Project` as far as the gateway reads it.
public struct Project: Sendable, Decodable, Equatable {
    public var name: String
    public var config: [String: String]
    public var usedBy: [String]?
    public var description: String?

    enum CodingKeys: String, CodingKey {
        case name, config, description
        case usedBy = "used_by"
    }
}

struct ProjectsPost: Encodable {
    var name: String
    var description: String
    var config: [String: String]
}

struct ProjectPatch: Encodable {
    var config: [String: String]
    var description: String
}

extension LXDClient {
    /// `GET /1.0/projects/<name>`.
    public func project(_ name: String) async throws -> Project {
        try LXDName.validateObject(name, kind: "project")
        return try await sync(.GET, "/1.0/projects/\(Self.pathEscape(name))", as: Project.self).0
    }

    /// `POST /1.0/projects` (409 `.conflict` if it exists).
    public func createProject(_ name: String, description: String, config: [String: String]) async throws {
        try LXDName.validateObject(name, kind: "project")
        try await syncSend(.POST, "/1.0/projects", body: ProjectsPost(name: name, description: description, config: config))
    }

    /// Merges config keys into a project's: read, merged, written back whole (`PUT`, with `If-Match`). LXD
    /// 5.0's `PATCH` of a project replaces its whole config (checked here: the `features.*` keys went, and on
    /// a project holding instances it is refused as a change of features).
    public func patchProject(_ name: String, config: [String: String]) async throws {
        try LXDName.validateObject(name, kind: "project")
        let path = "/1.0/projects/\(Self.pathEscape(name))"
        let (current, etag) = try await sync(.GET, path, as: Project.self)
        let put = ProjectPatch(config: current.config.merging(config) { $1 }, description: current.description ?? "")
        try await syncSend(.PUT, path, body: put, ifMatch: etag)
    }

    /// `DELETE /1.0/projects/<name>` (LXD refuses while it holds instances or non-default profiles).
    public func deleteProject(_ name: String) async throws {
        try LXDName.validateObject(name, kind: "project")
        try check(try await exchange(makeRequest(.DELETE, uri("/1.0/projects/\(Self.pathEscape(name))"))))
    }

    /// This client, talking to `name`'s project.
    public func inProject(_ name: String?) -> LXDClient {
        var c = self
        c.project = name
        c.projectRouting = nil
        return c
    }
}
