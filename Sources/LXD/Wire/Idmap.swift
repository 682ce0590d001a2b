import Foundation

/// One entry of the id map LXD 5.0 records for a container in `volatile.idmap.next` (the map of its next
/// start, set when it is created) and `volatile.idmap.current` (the map it runs with):
/// `{"Isuid":true,"Isgid":false,"Hostid":1065536,"Nsid":0,"Maprange":65536}`.
public struct IdmapEntry: Sendable, Decodable, Equatable {
    public var isUID: Bool
    public var isGID: Bool
    public var hostID: Int64
    public var nsID: Int64
    public var range: Int64

    enum CodingKeys: String, CodingKey {
        case isUID = "Isuid", isGID = "Isgid", hostID = "Hostid", nsID = "Nsid", range = "Maprange"
    }
}

extension Instance {
    /// The ids LXD gives a container that is not isolated span the host's whole subordinate range; isolated
    /// maps are carved out of that same range past its first 65,536 ids, which are the ones such a container
    /// uses in practice. So a container that is not isolated counts for those only.
    public static let sharedMapIDs: Int64 = 65_536

    /// The host ids this instance's processes run as, from the map LXD recorded for its next start (else
    /// the one it runs with): each entry's host range, for uids and for gids. Empty when LXD recorded none
    /// (a VM, a container being created) or the record cannot be read.
    public var hostIDRanges: [(uid: Bool, ids: Range<Int64>)] {
        guard let json = config["volatile.idmap.next"] ?? config["volatile.idmap.current"],
              let entries = try? JSONDecoder().decode([IdmapEntry].self, from: Data(json.utf8)) else { return [] }
        let isolated = (expandedConfig["security.idmap.isolated"] ?? config["security.idmap.isolated"]) == "true"
        return entries.flatMap { e -> [(uid: Bool, ids: Range<Int64>)] in
            let count = isolated ? e.range : min(e.range, Self.sharedMapIDs)
            guard count > 0 else { return [] }
            let ids = e.hostID..<(e.hostID + count)
            return (e.isUID ? [(true, ids)] : []) + (e.isGID ? [(false, ids)] : [])
        }
    }

    /// Whether some host uid, or some host gid, is in both instances' maps: a process of one would be a
    /// process of the other to the host's kernel (files, signals, per-user limits).
    public func sharesHostIDs(with other: Instance) -> Bool {
        let mine = hostIDRanges, theirs = other.hostIDRanges
        return mine.contains { m in theirs.contains { $0.uid == m.uid && $0.ids.overlaps(m.ids) } }
    }
}
