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

    public init(bridge: String, bandwidthMbit: Int = 20, nft: String = "/usr/sbin/nft", recheck: TimeInterval = 60) {
        self.bridge = bridge
        self.bandwidthMbit = bandwidthMbit
        self.nft = nft
        self.recheck = recheck
    }

    /// The table, applied atomically (`nft -f`): created if missing, then replaced as a whole.
    public var ruleset: String {
        """
        table inet \(Self.table)
        delete table inet \(Self.table)
        table inet \(Self.table) {
        \(bandwidthSets)\tchain forward {
        \t\ttype filter hook forward priority filter; policy accept;
        \t\tiifname "\(bridge)" oifname "\(bridge)" counter drop comment "iotgw: no vendor reaches another through the host"
        \(bandwidthRules)\t}
        \tchain input {
        \t\ttype filter hook input priority filter; policy accept;
        \t\tiifname != "\(bridge)" accept
        \t\tct state established,related accept
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

    /// One dynamic set per direction and family: each container address met gets its own bucket.
    var bandwidthSets: String {
        guard bandwidthMbit > 0 else { return "" }
        return [("ip4", "ipv4_addr"), ("ip6", "ipv6_addr")].flatMap { family, type in
            ["up", "down"].map { "\tset \($0)-\(family) { type \(type); size 4096; flags dynamic, timeout; timeout 10m; }\n" }
        }.joined()
    }

    /// Names the rate, so that a table made for another rate is not taken as in place (nft prints a
    /// rule's rate in units of its own choosing, its comment as written).
    func capComment(_ direction: String) -> String { "iotgw: each vendor's \(direction) is capped at \(bandwidthMbit) Mbit/s" }

    var bandwidthRules: String {
        guard bandwidthMbit > 0 else { return "" }
        return [("ip4", "ip"), ("ip6", "ip6")].map { family, match in
            "\t\tiifname \"\(bridge)\" update @up-\(family) { \(match) saddr \(rate) } counter drop comment \"\(capComment("upload"))\"\n"
                + "\t\toifname \"\(bridge)\" update @down-\(family) { \(match) daddr \(rate) } counter drop comment \"\(capComment("download"))\"\n"
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

    /// Whether the table exists with both drop rules for this bridge, and the uplink cap at this rate.
    public func isInPlace() async throws -> Bool {
        guard FileManager.default.isExecutableFile(atPath: nft) else { return false }
        let r = try await Subprocess.run(nft, ["list", "table", "inet", Self.table])
        return r.status == 0 && r.stdout.contains("iifname \"\(bridge)\" oifname \"\(bridge)\"") && r.stdout.contains("vendors do not reach")
            && (bandwidthMbit == 0 ? !r.stdout.contains("upload is capped") : r.stdout.contains(capComment("upload")))
    }

    /// Removes the table (tests, uninstall).
    public func remove() async throws {
        _ = try await Subprocess.run(nft, ["delete", "table", "inet", Self.table])
        checkedAt.withLock { $0 = nil }
    }
}
