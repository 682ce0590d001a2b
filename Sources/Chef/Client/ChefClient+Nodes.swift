import NIOHTTP1

/// `/nodes`. On goiardi a client may create nodes but change or delete only the node named like
/// itself; so knife saves the node signed as the new client, which then owns it.
extension ChefClient {
    /// `POST /nodes`. Throws `.conflict` if the node exists.
    public func createNode(_ node: ChefNode) async throws {
        try Self.validateName(node.name, "node")
        try await call(.POST, "nodes", body: Self.encode(node))
    }

    /// `GET /nodes/NAME`.
    public func node(named name: String) async throws -> ChefNode {
        try Self.validateName(name, "node")
        return try await call(.GET, "nodes/\(name)", as: ChefNode.self)
    }

    /// `GET /nodes/NAME`, `false` on 404.
    public func nodeExists(named name: String) async throws -> Bool {
        do {
            _ = try await node(named: name)
            return true
        } catch let e as ChefError where e.code == .notFound {
            return false
        }
    }

    /// `PUT /nodes/NAME` with the full node; returns the node as the server stored it.
    /// Throws `.notFound` if the node does not exist.
    @discardableResult
    public func updateNode(_ node: ChefNode) async throws -> ChefNode {
        try Self.validateName(node.name, "node")
        return try await call(.PUT, "nodes/\(node.name)", body: Self.encode(node), as: ChefNode.self)
    }

    /// `Chef::Node#save` as knife bootstrap calls it: `PUT`, and on 404 `POST`.
    public func saveNode(_ node: ChefNode) async throws {
        do {
            try await updateNode(node)
        } catch let e as ChefError where e.code == .notFound {
            try await createNode(node)
        }
    }

    /// Read-modify-write of a node (`GET`, `modify`, full `PUT`), like `knife node run_list set`.
    ///
    /// The Chef API has no conditional PUT, so a concurrent writer between the GET and the PUT is
    /// overwritten; callers that share a node must serialise their updates.
    @discardableResult
    public func updateNode(named name: String, _ modify: (inout ChefNode) throws -> Void) async throws -> ChefNode {
        var node = try await node(named: name)
        try modify(&node)
        guard node.name == name else {
            throw ChefError(code: .invalidArgument, message: "node '\(name)' cannot be renamed to '\(node.name)' by an update")
        }
        return try await updateNode(node)
    }

    /// Replaces a node's run list (read-modify-write). Entries look like `recipe[base]`, `role[web]`.
    @discardableResult
    public func setRunList(_ runList: [String], ofNode name: String) async throws -> ChefNode {
        try await updateNode(named: name) { $0.runList = runList }
    }

    /// `DELETE /nodes/NAME`. Throws `.notFound` if it does not exist.
    public func deleteNode(named name: String) async throws {
        try Self.validateName(name, "node")
        try await call(.DELETE, "nodes/\(name)")
    }

    /// `GET /nodes`: node names (the server maps each to its URL).
    public func nodeNames() async throws -> [String] {
        try await call(.GET, "nodes", as: [String: String].self).keys.sorted()
    }
}
