import Foundation
import GatewayAgent
import LXD
import Synchronization

/// A `ContainerHost` that passes every call to LXD and counts them: `writes` are the calls that
/// change LXD (create, patch, state, devices, snapshots, delete), `reads` the others.
final class CountingHost: ContainerHost {
    let lxd: any ContainerHost
    private let counts = Mutex<(reads: Int, writes: Int)>((0, 0))

    init(_ lxd: any ContainerHost) { self.lxd = lxd }

    var reads: Int { counts.withLock { $0.reads } }
    var writes: Int { counts.withLock { $0.writes } }

    private func read() { counts.withLock { $0.reads += 1 } }
    private func write() { counts.withLock { $0.writes += 1 } }

    // Reads.
    func instance(_ name: String) async throws -> (instance: Instance, etag: String?) {
        read()
        return try await lxd.instance(name)
    }

    func state(_ name: String) async throws -> InstanceState {
        read()
        return try await lxd.state(name)
    }

    func verifyImage(alias: String, fingerprint: String) async throws {
        read()
        try await lxd.verifyImage(alias: alias, fingerprint: fingerprint)
    }

    func storagePool(_ name: String) async throws -> StoragePool {
        read()
        return try await lxd.storagePool(name)
    }

    func snapshots(_ instance: String) async throws -> [InstanceSnapshot] {
        read()
        return try await lxd.snapshots(instance)
    }

    func server() async throws -> Server {
        read()
        return try await lxd.server()
    }

    func listInstances(userFilter: [String: String]) async throws -> [Instance] {
        read()
        return try await lxd.listInstances(userFilter: userFilter)
    }

    // Writes.
    func createInstance(_ spec: InstancesPost, timeout: Duration?) async throws {
        write()
        try await lxd.createInstance(spec, timeout: timeout)
    }

    func createInstance(_ spec: InstancesPost, timeout: Duration?, idmapAllocated: @escaping @Sendable () async -> Void) async throws {
        write()
        try await lxd.createInstance(spec, timeout: timeout, idmapAllocated: idmapAllocated)
    }

    func patchInstance(_ name: String, config: [String: String], devices: [String: Device], ifMatch etag: String?) async throws {
        write()
        try await lxd.patchInstance(name, config: config, devices: devices, ifMatch: etag)
    }

    func setState(_ name: String, _ action: InstanceStatePut.Action, timeout: Int, force: Bool) async throws {
        write()
        try await lxd.setState(name, action, timeout: timeout, force: force)
    }

    func addDevice(_ instance: String, name: String, _ device: Device) async throws {
        write()
        try await lxd.addDevice(instance, name: name, device)
    }

    func removeDevice(_ instance: String, name: String) async throws {
        write()
        try await lxd.removeDevice(instance, name: name)
    }

    func createSnapshot(_ instance: String, name: String) async throws {
        write()
        try await lxd.createSnapshot(instance, name: name)
    }

    func restoreSnapshot(_ instance: String, name: String) async throws {
        write()
        try await lxd.restoreSnapshot(instance, name: name)
    }

    func deleteSnapshot(_ instance: String, name: String) async throws {
        write()
        try await lxd.deleteSnapshot(instance, name: name)
    }

    func deleteInstance(_ name: String) async throws {
        write()
        try await lxd.deleteInstance(name)
    }

    func renameInstance(_ name: String, to newName: String) async throws {
        write()
        try await lxd.renameInstance(name, to: newName)
    }
}

/// This process's resident memory, from /proc/self.
struct MemorySample: Sendable {
    /// `VmRSS` of /proc/self/status, in KiB.
    var rssKiB: Int
    /// `Anonymous` of /proc/self/smaps_rollup (heap, stacks), in KiB.
    var anonymousKiB: Int

    static func now() -> MemorySample {
        MemorySample(rssKiB: IdleMemory.residentKiB() ?? 0,
                     anonymousKiB: IdleMemory.procField("Anonymous:", in: "/proc/self/smaps_rollup") ?? 0)
    }
}
