import Foundation
import LXD

/// How full the storage pool is. `LXDClient` is the real one (LXD's resources API).
public protocol DiskSpace: Sendable {
    func poolFree(_ pool: String) async throws -> Int64
}

extension LXDClient: DiskSpace {
    public func poolFree(_ pool: String) async throws -> Int64 { try await storagePoolResources(pool).free }
}

/// Keeps the gateway's disk from filling: before a download, a container creation or an app delivery,
/// the space the step needs plus the owner's reserve (`disk.reserveMiB`) must be free: on the storage
/// pool (LXD's resources API) for containers and deliveries, on the state directory's filesystem for a
/// download (the tarball, and LXD's copy of it). Short of space, it prunes (`prune`: unused downloaded
/// images, finished journal rows) and looks again; still short, the step is deferred with
/// ``GatewayError/Code/diskSpace``, which the vendor's lane records in its status, reports to the
/// vendor and retries with back-off.
public struct DiskGuard: Sendable {
    let space: any DiskSpace
    let pool: String
    let reserve: Int64
    let prune: @Sendable () async -> Void

    public init(space: any DiskSpace, pool: String, reserveBytes: Int64, prune: @escaping @Sendable () async -> Void = {}) {
        self.space = space
        self.pool = pool
        reserve = reserveBytes
        self.prune = prune
    }

    /// The pool's free space as read at one moment.
    public struct Reading: Sendable {
        public var free: Int64
        public var at: ContinuousClock.Instant
    }

    /// How long a reading stands in for a fresh one: it is taken while a vendor answers an announcement,
    /// to be used by the container creation right after. Another creation may land in between, as it may
    /// between any reading and the create it guards.
    static let readingLifetime: Duration = .seconds(2)

    public func read() async throws -> Reading { Reading(free: try await space.poolFree(pool), at: .now) }

    /// - Parameters:
    ///   - what: the step, as the owner and the vendor read it ("creating iotgw-acme", say).
    ///   - recent: a reading taken ahead (used for the first look if under ``readingLifetime`` old).
    public func ensurePool(_ need: Int64, for what: String, recent: Reading? = nil) async throws {
        let ahead = recent.flatMap { $0.at.duration(to: .now) <= Self.readingLifetime ? $0.free : nil }
        try await ensure(need, for: what, where: "storage pool \(pool)", firstLook: ahead) { try await space.poolFree(pool) }
    }

    /// The filesystem holding `path` (a download lands there).
    public func ensureHost(_ need: Int64, at path: String, for what: String) async throws {
        try await ensure(need, for: what, where: "the filesystem of \(path)") { try Self.hostFree(path) }
    }

    private func ensure(_ need: Int64, for what: String, where place: String, firstLook: Int64? = nil,
                        free: () async throws -> Int64) async throws {
        let first: Int64
        if let firstLook { first = firstLook } else { first = try await free() }
        if first - need >= reserve { return }
        await prune()
        let left = try await free()
        guard left - need >= reserve else {
            throw GatewayError(.diskSpace, "deferred: \(what) needs \(Self.mib(need)) MiB and the owner keeps \(Self.mib(reserve)) MiB free, "
                               + "but \(place) has \(Self.mib(left)) MiB free (after pruning)")
        }
    }

    static func hostFree(_ path: String) throws -> Int64 {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { throw GatewayError(.diskSpace, "cannot read the free space of \(path) (errno \(errno))") }
        return Int64(s.f_bavail) * Int64(s.f_frsize)
    }

    static func mib(_ bytes: Int64) -> Int64 { (bytes + (1 << 20) - 1) >> 20 }
}
