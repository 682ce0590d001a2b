extension LXDClient {
    /// `GET /1.0/storage-pools/<name>`.
    public func storagePool(_ name: String) async throws -> StoragePool {
        try LXDName.validateObject(name, kind: "storage pool")
        return try await sync(.GET, "/1.0/storage-pools/\(Self.pathEscape(name))", as: StoragePool.self).0
    }

    /// `GET /1.0/storage-pools/<name>/resources`: how full the pool is.
    public func storagePoolResources(_ name: String) async throws -> StoragePoolResources {
        try LXDName.validateObject(name, kind: "storage pool")
        return try await sync(.GET, "/1.0/storage-pools/\(Self.pathEscape(name))/resources", as: StoragePoolResources.self).0
    }
}
