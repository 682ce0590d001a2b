extension LXDClient {
    /// `GET /1.0`.
    public func server() async throws -> Server {
        try await sync(.GET, "/1.0", as: Server.self).0
    }

    /// Extensions this client relies on (all present in LXD 5.0.2).
    public static let requiredExtensions = [
        "instances", "container_exec_recording", "file_delete", "file_append", "directory_manipulation",
    ]

    /// Checks the server has every extension in `extensions`, else throws `.missingExtension` naming them.
    @discardableResult
    public func requireExtensions(_ extensions: [String] = LXDClient.requiredExtensions) async throws -> Server {
        let info = try await server()
        let missing = extensions.filter { !info.apiExtensions.contains($0) }
        guard missing.isEmpty else {
            throw LXDError(code: .missingExtension,
                           message: "LXD \(info.environment?.serverVersion ?? "?") lacks API extensions: \(missing.joined(separator: ", "))")
        }
        return info
    }
}
