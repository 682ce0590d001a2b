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

    public init(bridge: String, nft: String = "/usr/sbin/nft", recheck: TimeInterval = 60) {
        self.bridge = bridge
        self.nft = nft
        self.recheck = recheck
    }

    /// The table, applied atomically (`nft -f`): created if missing, then replaced as a whole.
    public var ruleset: String {
        """
        table inet \(Self.table)
        delete table inet \(Self.table)
        table inet \(Self.table) {
        \tchain forward {
        \t\ttype filter hook forward priority filter; policy accept;
        \t\tiifname "\(bridge)" oifname "\(bridge)" counter drop comment "iotgw: no vendor reaches another through the host"
        \t}
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

    /// Whether the table exists with both drop rules for this bridge.
    public func isInPlace() async throws -> Bool {
        guard FileManager.default.isExecutableFile(atPath: nft) else { return false }
        let r = try await Subprocess.run(nft, ["list", "table", "inet", Self.table])
        return r.status == 0 && r.stdout.contains("iifname \"\(bridge)\" oifname \"\(bridge)\"") && r.stdout.contains("vendors do not reach")
    }

    /// Removes the table (tests, uninstall).
    public func remove() async throws {
        _ = try await Subprocess.run(nft, ["delete", "table", "inet", Self.table])
        checkedAt.withLock { $0 = nil }
    }
}
