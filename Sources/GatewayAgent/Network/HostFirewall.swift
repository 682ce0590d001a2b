import Foundation
import Synchronization

/// Keeps vendor containers from reaching each other and the gateway host through the host itself.
///
/// Each vendor NIC is already MAC/IP filtered and port-isolated on the bridge (LXD), so vendors
/// cannot spoof or reach one another at layer 2. Two paths remain, both through the host: routing a
/// packet back out of the same bridge (the "hairpin", which LXD's own forward chain accepts) and the
/// host's own services listening on the bridge address. This guard owns one nftables table that drops
/// both, leaving containers DHCP, DNS, ICMP to the gateway and NAT to the outside. LXD never touches a
/// foreign table, so the table survives LXD restarts; a drop in any base chain is final, so LXD's
/// accepts cannot override it.
///
/// The same table shares the uplink: what each container sends out through the host and receives
/// through it is held to `bandwidthMbit` each way, one token bucket per container address (LXD's IP
/// filtering lets each NIC use only its own address, so one vendor cannot spend another's bucket).
/// Packets over the rate are dropped, which TCP answers by slowing down. LXD's own NIC limits would
/// need the kernel's tc police action for a container's upload, which not every gateway kernel has.
///
/// Two more things all tenants share are held per container (by its MAC): the kernel's connection-tracking
/// table (one vendor opening flows without end would fill it, and then nobody's new connection, the
/// owner's included, gets through), at most `connections` at once; and the gateway's own services a
/// container may reach (DHCP, DNS, ICMP), at most `hostPacketsPerSecond` packets a second, so that one
/// vendor's flood takes neither the gateway's processors nor the other vendors' name lookups.
public protocol NetworkGuard: Sendable {
    /// Makes sure the isolation is in place (cheap when it was checked recently). Throws if it cannot be.
    func ensure() async throws
}

/// The owner turned the host firewall off (`lxd.hostFirewall: false`): nothing to ensure.
public struct NoNetworkGuard: NetworkGuard {
    public init() {}
    public func ensure() async throws {}
}

public final class HostFirewall: NetworkGuard {
    public static let table = "iotgw"
    public let bridge: String
    let nft: String
    /// How long a successful check is trusted.
    let recheck: TimeInterval
    let checkedAt = Mutex<Date?>(nil)

    /// Mbit/s each way per container through the uplink; 0: no limit.
    public let bandwidthMbit: Int
    /// Connections each container may hold open through and to the host at once; 0: no limit.
    public let connections: Int
    /// Packets a second each container may send to the gateway's own services (replies to the host's
    /// own connections not counted), after a burst of twice that: plenty for DHCP, DNS and pings.
    public static let hostPacketsPerSecond = 200

    public init(bridge: String, bandwidthMbit: Int = 20, connections: Int = 2048, nft: String = "/usr/sbin/nft", recheck: TimeInterval = 60) {
        self.bridge = bridge
        self.bandwidthMbit = bandwidthMbit
        self.connections = connections
        self.nft = nft
        self.recheck = recheck
    }

    /// The table, applied atomically (`nft -f`): created if missing, then replaced as a whole.
    public var ruleset: String {
        """
        table inet \(Self.table)
        delete table inet \(Self.table)
        table inet \(Self.table) {
        \(perContainerSets)\(connectionChain)\tchain forward {
        \t\ttype filter hook forward priority filter; policy accept;
        \t\tiifname "\(bridge)" oifname "\(bridge)" counter drop comment "iotgw: no vendor reaches another through the host"
        \(bandwidthRules)\t}
        \tchain input {
        \t\ttype filter hook input priority filter; policy accept;
        \t\tiifname != "\(bridge)" accept
        \(hostRateRule)\t\tct state established,related accept
        \t\tudp dport 67 accept comment "iotgw: DHCP"
        \t\tmeta l4proto { tcp, udp } th dport 53 accept comment "iotgw: DNS"
        \t\tmeta l4proto icmp accept
        \t\tcounter drop comment "iotgw: vendors do not reach the gateway's own services"
        \t}
        }

        """
    }

    /// The rate in nft's words (its kbytes are KiB), with a burst of half a second.
    var rate: String {
        let bytesPerSecond = bandwidthMbit * 125_000
        return "limit rate over \(bytesPerSecond / 1024) kbytes/second burst \(max(bytesPerSecond / 2048, 64)) kbytes"
    }

    static let families = [(set: "ip4", type: "ipv4_addr", match: "ip"), (set: "ip6", type: "ipv6_addr", match: "ip6")]

    /// Dynamic sets, so that each container met gets a bucket or a connection count of its own. The
    /// uplink's are keyed by address (a download is known by its destination address only); the host's
    /// and the connections' by the container's MAC, which LXD's MAC filtering pins to one NIC: a DHCP
    /// request comes from 0.0.0.0, which every container shares. The connections' set has no timeout: a
    /// container leaves it with its last connection.
    var perContainerSets: String {
        let uplink = bandwidthMbit > 0
            ? Self.families.flatMap { f in
                ["up", "down"].map { "\tset \($0)-\(f.set) { type \(f.type); size 4096; flags dynamic, timeout; timeout 10m; }\n" }
            } : []
        return (uplink + ["\tset host { type ether_addr; size 4096; flags dynamic, timeout; timeout 10m; }\n"]
                + (connections > 0 ? ["\tset conns { type ether_addr; size 4096; flags dynamic; }\n"] : [])).joined()
    }

    /// Counted where every new flow from a container passes, whether it goes out or to the host: after
    /// conntrack has classified it (priority -200), before routing.
    var connectionChain: String {
        guard connections > 0 else { return "" }
        return "\tchain prerouting {\n\t\ttype filter hook prerouting priority filter; policy accept;\n"
            + "\t\tiifname \"\(bridge)\" ct state new add @conns { ether saddr ct count over \(connections) } counter drop comment \"\(connectionComment)\"\n"
            + "\t}\n"
    }

    /// Names the limit, as `capComment` names the rate.
    var connectionComment: String { "iotgw: each vendor holds at most \(connections) connections" }

    var hostRateRule: String {
        let limit = "limit rate over \(Self.hostPacketsPerSecond)/second burst \(2 * Self.hostPacketsPerSecond) packets"
        return "\t\tct direction original update @host { ether saddr \(limit) } counter drop comment \"iotgw: each vendor's packets to the gateway are rate-limited\"\n"
    }

    /// Names the rate, so that a table made for another rate is not taken as in place (nft prints a
    /// rule's rate in units of its own choosing, its comment as written).
    func capComment(_ direction: String) -> String { "iotgw: each vendor's \(direction) is capped at \(bandwidthMbit) Mbit/s" }

    var bandwidthRules: String {
        guard bandwidthMbit > 0 else { return "" }
        return Self.families.map { f in
            "\t\tiifname \"\(bridge)\" update @up-\(f.set) { \(f.match) saddr \(rate) } counter drop comment \"\(capComment("upload"))\"\n"
                + "\t\toifname \"\(bridge)\" update @down-\(f.set) { \(f.match) daddr \(rate) } counter drop comment \"\(capComment("download"))\"\n"
        }.joined()
    }

    public func ensure() async throws {
        if let at = checkedAt.withLock({ $0 }), Date().timeIntervalSince(at) < recheck { return }
        if try await !isInPlace() { try await apply() }
        checkedAt.withLock { $0 = Date() }
    }

    public func apply() async throws {
        guard FileManager.default.isExecutableFile(atPath: nft) else {
            throw GatewayError(.network, "\(nft) is missing (install nftables), so vendor containers cannot be isolated from each other "
                               + "and from the host; set lxd.hostFirewall: false to run without it")
        }
        let r = try await Subprocess.run(nft, ["-f", "-"], stdin: ruleset)
        guard r.status == 0 else {
            throw GatewayError(.network, "nft refused the isolation table (exit \(r.status)): \(r.stderr.prefix(300))")
        }
    }

    /// Whether the table exists with both drop rules for this bridge and the host's rate limit, and the
    /// uplink cap and connection limit at these figures.
    public func isInPlace() async throws -> Bool {
        guard FileManager.default.isExecutableFile(atPath: nft) else { return false }
        let r = try await Subprocess.run(nft, ["list", "table", "inet", Self.table])
        return r.status == 0 && r.stdout.contains("iifname \"\(bridge)\" oifname \"\(bridge)\"") && r.stdout.contains("vendors do not reach")
            && r.stdout.contains("packets to the gateway are rate-limited")
            && (bandwidthMbit == 0 ? !r.stdout.contains("upload is capped") : r.stdout.contains(capComment("upload")))
            && (connections == 0 ? !r.stdout.contains("holds at most") : r.stdout.contains("\"\(connectionComment)\""))
    }

    /// Removes the table (tests, uninstall).
    public func remove() async throws {
        _ = try await Subprocess.run(nft, ["delete", "table", "inet", Self.table])
        checkedAt.withLock { $0 = nil }
    }
}
