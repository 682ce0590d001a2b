extension LXDClient {
    /// `GET /1.0/storage-pools/<name>`.
    public func storagePool(_ name: String) async throws -> StoragePool {
        try LXDName.validateObject(name, kind: "storage pool")
        return try await sync(.GET, "/1.0/storage-pools/\(Self.pathEscape(name))", as: StoragePool.self).0
    }
}
