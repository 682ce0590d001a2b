import LXD

/// The container operations the gateway core performs, so that the per-vendor state machines can be
/// unit-tested without LXD or root. `LXDClient` is the real one.
public protocol ContainerHost: Sendable {
    func instance(_ name: String) async throws -> (instance: Instance, etag: String?)
    func createInstance(_ spec: InstancesPost, timeout: Duration?) async throws
    /// Creates, calling `idmapAllocated` once the new instance holds its id map (see
    /// `LXDClient.createInstance(_:timeout:pollInterval:idmapAllocated:)`); by default when the create is over.
    func createInstance(_ spec: InstancesPost, timeout: Duration?, idmapAllocated: @escaping @Sendable () async -> Void) async throws
    func patchInstance(_ name: String, config: [String: String], devices: [String: Device], ifMatch etag: String?) async throws
    func setState(_ name: String, _ action: InstanceStatePut.Action, timeout: Int, force: Bool) async throws
    func addDevice(_ instance: String, name: String, _ device: Device) async throws
    func removeDevice(_ instance: String, name: String) async throws
    func state(_ name: String) async throws -> InstanceState
    func verifyImage(alias: String, fingerprint: String) async throws
    func storagePool(_ name: String) async throws -> StoragePool
    func createSnapshot(_ instance: String, name: String) async throws
    func restoreSnapshot(_ instance: String, name: String) async throws
    func snapshots(_ instance: String) async throws -> [InstanceSnapshot]
    func deleteSnapshot(_ instance: String, name: String) async throws
    func server() async throws -> Server
    /// Instances whose `user.*` config matches every filter entry (keys without the `user.` prefix).
    func listInstances(userFilter: [String: String]) async throws -> [Instance]
    /// Deletes a stopped instance with its snapshots.
    func deleteInstance(_ name: String) async throws
    /// Renames a stopped instance (a rebuild swaps the new container in under the vendor's name).
    func renameInstance(_ name: String, to newName: String) async throws
}

extension LXDClient: ContainerHost {
    public func createInstance(_ spec: InstancesPost, timeout: Duration?, idmapAllocated: @escaping @Sendable () async -> Void) async throws {
        try await createInstance(spec, timeout: timeout, pollInterval: .milliseconds(20), idmapAllocated: idmapAllocated)
    }
}

extension ContainerHost {
    public func createInstance(_ spec: InstancesPost, timeout: Duration?, idmapAllocated: @escaping @Sendable () async -> Void) async throws {
        try await createInstance(spec, timeout: timeout)
        await idmapAllocated()
    }

    /// Stops a running instance cleanly, by force if it does not shut down in time; one already stopped (or
    /// stopped meanwhile) is left as it is. LXD being away is rethrown, not answered with a forced stop.
    func stopGracefully(_ name: String) async throws {
        guard try await instance(name).instance.isRunning else { return }
        do { try await setState(name, .stop, timeout: 30, force: false) } catch where !error.isLXDOutage {
            if try await instance(name).instance.isRunning { try await setState(name, .stop, timeout: 30, force: true) }
        }
    }
}
