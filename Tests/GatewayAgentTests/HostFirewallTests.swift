import Foundation
import Testing
@testable import GatewayAgent

/// The host firewall's table as the kernel reads it (`nft --check`: parsed and validated by the running
/// kernel's nf_tables, nothing applied), with and without the per-vendor uplink limit. Traffic through
/// it is measured end to end in `aHostileVendorIsContainedAndCannotTouchTheOwnerOrAnotherVendor`.
@Suite struct HostFirewallTests {
    @Test(arguments: [0, 1, 20, 1000])
    func theTableIsOneTheKernelTakes(mbit: Int) async throws {
        let firewall = HostFirewall(bridge: "iotgwbr0", bandwidthMbit: mbit)
        let r = try await Subprocess.run("/usr/sbin/nft", ["--check", "-f", "-"], stdin: firewall.ruleset)
        #expect(r.status == 0, "nft refused the table: \(r.stderr)")
        #expect(firewall.ruleset.contains("upload is capped") == (mbit > 0))
        #expect(firewall.ruleset.contains("download is capped") == (mbit > 0))
    }

    /// Applied for real, in a network namespace of the test's own (nftables tables are per namespace, so
    /// the host's table is not touched): the table is in place only while it holds the owner's rate.
    @Test func aTableMadeForAnotherRateIsNotInPlace() async throws {
        let ns = "iotgw-fw-\(UInt32.random(in: 0..<0xffff))"
        #expect(try await Subprocess.run("/sbin/ip", ["netns", "add", ns]).status == 0)
        defer { _ = try? Process.run(URL(fileURLWithPath: "/sbin/ip"), arguments: ["netns", "del", ns]).waitUntilExit() }
        let nft = FileManager.default.temporaryDirectory.appendingPathComponent("\(ns)-nft").path
        try "#!/bin/sh\nexec /sbin/ip netns exec \(ns) /usr/sbin/nft \"$@\"\n".write(toFile: nft, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: nft) }
        #expect(chmod(nft, 0o755) == 0)
        let twenty = HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 20, nft: nft)
        let fifty = HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 50, nft: nft)
        let none = HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 0, nft: nft)
        #expect(try await !twenty.isInPlace())
        try await twenty.apply()
        #expect(try await twenty.isInPlace())
        #expect(try await !fifty.isInPlace())
        #expect(try await !none.isInPlace())
        try await fifty.ensure()
        #expect(try await fifty.isInPlace())
        #expect(try await !twenty.isInPlace())
        try await none.ensure()
        #expect(try await none.isInPlace())
        #expect(try await !fifty.isInPlace())
    }

    /// Mbit/s (10^6 bits) into nft's kbytes (KiB) per second, a burst of half a second.
    @Test func twentyMbitIsTwoAndAHalfMillionBytesASecond() {
        #expect(HostFirewall(bridge: "b", bandwidthMbit: 20).rate == "limit rate over 2441 kbytes/second burst 1220 kbytes")
    }

    @Test func theOwnerSetsTheLimitAndOnlyASaneOne() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gateway-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        func load(_ lxd: String) throws -> GatewayConfig {
            try "stateDirectory: /tmp/x\ncontrolSocket: /tmp/x/control.sock\nlxd: {network: iotgwbr0\(lxd)}\nvendors: []\n"
                .write(toFile: path, atomically: true, encoding: .utf8)
            return try GatewayConfig.load(path: path)
        }
        #expect(try load("").lxd.vendorBandwidthMbit == 20)
        #expect(try load(", vendorBandwidthMbit: 0").lxd.vendorBandwidthMbit == 0)
        #expect(throws: ConfigError.self) { try load(", vendorBandwidthMbit: -1") }
        #expect(throws: ConfigError.self) { try load(", vendorBandwidthMbit: 100001") }
    }
}
