import Foundation
import Testing
@testable import GatewayAgent

/// The host firewall's table as the kernel reads it (`nft --check`: parsed and validated by the running
/// kernel's nf_tables, nothing applied), with and without the per-vendor uplink limit. Traffic through
/// it is measured end to end in `aHostileVendorIsContainedAndCannotTouchTheOwnerOrAnotherVendor`.
@Suite struct HostFirewallTests {
    @Test(arguments: [(0, 0), (1, 16), (20, 2048), (1000, 1_000_000)])
    func theTableIsOneTheKernelTakes(mbit: Int, connections: Int) async throws {
        let firewall = HostFirewall(bridge: "iotgwbr0", bandwidthMbit: mbit, connections: connections)
        let r = try await Subprocess.run("/usr/sbin/nft", ["--check", "-f", "-"], stdin: firewall.ruleset)
        #expect(r.status == 0, "nft refused the table: \(r.stderr)")
        #expect(firewall.ruleset.contains("upload is capped") == (mbit > 0))
        #expect(firewall.ruleset.contains("download is capped") == (mbit > 0))
        #expect(firewall.ruleset.contains("ct count over \(connections) ") == (connections > 0))
        #expect(firewall.ruleset.contains("limit rate over 200/second burst 400 packets"), "the host's services are always rate-limited")
    }

    /// Applied for real, in a network namespace of the test's own (nftables tables are per namespace, so
    /// the host's table is not touched): the table is in place only while it holds the owner's rate.
    @Test func aTableMadeForAnotherRateIsNotInPlace() async throws {
        let ns = "iotgw-fw-\(UInt32.random(in: 0..<0xffff))"
        #expect(try await Subprocess.run("/sbin/ip", ["netns", "add", ns]).status == 0)
        defer { _ = try? Process.run(URL(fileURLWithPath: "/sbin/ip"), arguments: ["netns", "del", ns]).waitUntilExit() }
        let nft = try Self.nft(in: ns, at: FileManager.default.temporaryDirectory.appendingPathComponent("\(ns)-nft").path)
        defer { try? FileManager.default.removeItem(atPath: nft) }
        let tables = [HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 20, nft: nft), HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 50, nft: nft),
                      HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 0, connections: 0, nft: nft),
                      HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 0, connections: 100, nft: nft)]
        #expect(try await !tables[0].isInPlace())
        for (i, table) in tables.enumerated() {
            try await table.ensure()
            for (j, other) in tables.enumerated() {
                #expect(try await other.isInPlace() == (i == j), "table \(j) in place after ensuring table \(i)")
            }
        }
    }

    /// An `nft` that works inside network namespace `ns` (nftables tables are per namespace).
    static func nft(in ns: String, at path: String) throws -> String {
        try "#!/bin/sh\nexec /sbin/ip netns exec \(ns) /usr/sbin/nft \"$@\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        guard chmod(path, 0o755) == 0 else { throw GatewayError(.network, "chmod \(path) failed") }
        return path
    }

    /// The kernel enforcing the table, in network namespaces of the test's own: a "gateway" with the
    /// bridge, its address and a DNS-port listener, and two vendors on the bridge. A vendor flooding the
    /// gateway's DNS port gets through only the burst and the rate, and the other vendor's datagrams,
    /// sent at the same time, all arrive; a vendor opening connections without end gets only its limit,
    /// and the other vendor still gets its own.
    @Test func aVendorCanNeitherFloodTheGatewayNorFillItsConnectionTable() async throws {
        let id = UInt32.random(in: 0..<0xffff)
        let gw = "iotgw-fwg-\(id)", vendors = ["iotgw-fwa-\(id)", "iotgw-fwb-\(id)"], python = "/usr/bin/python3"
        #expect(FileManager.default.isExecutableFile(atPath: python), "python3 (Debian's, which ansible-core brings) drives the traffic")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("iotgw-fw-\(id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func ip(_ args: String) async throws {
            let r = try await Subprocess.run("/sbin/ip", args.split(separator: " ").map(String.init))
            guard r.status == 0 else { throw GatewayError(.network, "ip \(args): \(r.stderr)") }
        }
        defer {
            for ns in [gw] + vendors { _ = try? Process.run(URL(fileURLWithPath: "/sbin/ip"), arguments: ["netns", "del", ns]).waitUntilExit() }
        }
        for step in ["netns add \(gw)", "-n \(gw) link add iotgwbr0 type bridge", "-n \(gw) addr add 10.77.0.1/24 dev iotgwbr0",
                     "-n \(gw) link set iotgwbr0 up"] {
            try await ip(step)
        }
        for (i, ns) in vendors.enumerated() {
            for step in ["netns add \(ns)", "-n \(gw) link add vb\(i) type veth peer name eth0 netns \(ns)", "-n \(gw) link set vb\(i) master iotgwbr0",
                         "-n \(gw) link set vb\(i) up", "-n \(ns) addr add 10.77.0.\(i + 2)/24 dev eth0", "-n \(ns) link set eth0 up"] {
                try await ip(step)
            }
        }
        let nft = try Self.nft(in: gw, at: dir.appendingPathComponent("nft").path)

        // The gateway's DNS port: takes TCP connections and holds them; counts UDP datagrams by sender into
        // a file, once nothing has come for 0.1 s.
        let counted = dir.appendingPathComponent("udp").path
        try """
        import socket, select
        t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("10.77.0.1", 53)); t.listen(1024)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE
        u.bind(("10.77.0.1", 53))
        held, got, written = [], {}, None
        while True:
            ready = select.select([t, u], [], [], 0.1)[0]
            for s in ready:
                if s is t: held.append(t.accept()[0])
                else: sender = u.recvfrom(64)[1][0]; got[sender] = got.get(sender, 0) + 1
            if not ready and got != written:
                open("\(counted)", "w").write("".join(f"{a} {n}\\n" for a, n in got.items())); written = dict(got)
        """.write(toFile: dir.appendingPathComponent("dns.py").path, atomically: true, encoding: .utf8)
        let dns = Process()
        dns.executableURL = URL(fileURLWithPath: "/sbin/ip")
        dns.arguments = ["netns", "exec", gw, python, dir.appendingPathComponent("dns.py").path]
        dns.standardOutput = FileHandle.nullDevice
        dns.standardError = FileHandle.nullDevice
        try dns.run()
        // SIGKILL: a child of this process starts with SIGTERM blocked (the test runner's threads block it).
        defer { kill(dns.processIdentifier, SIGKILL); dns.waitUntilExit() }
        try await Task.sleep(for: .milliseconds(500))
        try #require(dns.isRunning, "the listener in the gateway's namespace runs")
        @Sendable func inVendor(_ v: Int, _ script: String) async throws -> String {
            let r = try await Subprocess.run("/sbin/ip", ["netns", "exec", vendors[v], python, "-c", script])
            guard r.status == 0 else { throw GatewayError(.network, "python in vendor \(v)'s namespace: \(r.stderr)") }
            return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        /// Datagrams counted so far, by vendor.
        func arrived() -> [Int] {
            let lines = ((try? String(contentsOfFile: counted, encoding: .utf8)) ?? "").split(separator: "\n").map { $0.split(separator: " ") }
            return vendors.indices.map { v in lines.first { $0.first == "10.77.0.\(v + 2)" }.flatMap { Int($0[1]) } ?? 0 }
        }
        /// Each vendor sends its `count` datagrams over `seconds` at the same time; returns how many of each arrived.
        func flood(_ counts: [Int], seconds: [Double]) async throws -> [Int] {
            let before = arrived()
            try await withThrowingTaskGroup(of: String.self) { group in
                for v in vendors.indices where counts[v] > 0 {
                    group.addTask {
                        try await inVendor(v, """
                        import socket, time
                        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); start = time.time()
                        for i in range(\(counts[v])):
                            u.sendto(b"x", ("10.77.0.1", 53)); time.sleep(max(0, start + \(seconds[v]) * (i + 1) / \(counts[v]) - time.time()))
                        """)
                    }
                }
                try await group.waitForAll()
            }
            var last: [Int] = []
            for _ in 0..<20 where arrived() != last {
                last = arrived()
                try await Task.sleep(for: .milliseconds(300))
            }
            return zip(arrived(), before).map { $0 - $1 }
        }
        let connect = """
        import socket, select, time, sys
        socks = []
        for i in range(int(sys.argv[1])):
            s = socket.socket(); s.setblocking(False); s.connect_ex(("10.77.0.1", 53)); socks.append(s)
        pending, made, end = set(socks), 0, time.time() + 2
        while pending and time.time() < end:
            for s in select.select([], list(pending), [], 0.2)[1]:
                pending.discard(s); made += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        print(made)
        """
        func open(_ v: Int, _ count: Int) async throws -> Int {
            Int(try await inVendor(v, connect.replacingOccurrences(of: "int(sys.argv[1])", with: "\(count)"))) ?? -1
        }

        // Control, before the table: everything gets through.
        let free = try await flood([1000, 0], seconds: [0.5, 0])[0]
        let freeConnections = try await open(0, 150)
        #expect(free >= 990 && freeConnections == 150, "without the table \(free) of 1000 datagrams, \(freeConnections) of 150 connections")

        try await HostFirewall(bridge: "iotgwbr0", bandwidthMbit: 20, connections: 100, nft: nft).apply()
        // Vendor a: 4,000 datagrams in 2 s, of which the burst (400) and 200 a second get through, about 800.
        // Vendor b, meanwhile: 150 in 1 s, all within its own bucket.
        let got = try await flood([4000, 150], seconds: [2, 1])
        #expect((700...900).contains(got[0]), "\(got[0]) of vendor a's 4000 datagrams reached the gateway's DNS port")
        #expect(got[1] == 150, "\(got[1]) of vendor b's 150 datagrams arrived")
        // Vendor a: 150 connections at once, held: 100 are made (its datagrams' flow is one, so 99 or 100).
        // Vendor b: 50, all made.
        let made = [try await open(0, 150), try await open(1, 50)]
        #expect((99...100).contains(made[0]), "\(made[0]) of vendor a's 150 connections made with a limit of 100")
        #expect(made[1] == 50, "\(made[1]) of vendor b's 50 connections made")
        print("host firewall: without the table \(free) of 1000 datagrams in 0.5 s and \(freeConnections) of 150 connections; with it "
              + "vendor a \(got[0]) of 4000 datagrams in 2 s while vendor b \(got[1]) of 150, and \(made[0]) of 150 connections (limit 100) "
              + "while vendor b \(made[1]) of 50")
        let r = try await Subprocess.run(nft, ["list", "chain", "inet", HostFirewall.table, "prerouting"])
        let rule = r.stdout.split(separator: "\n").first { $0.contains("ether saddr ct count over 100") } ?? ""
        #expect(rule.contains("holds at most 100 connections") && !rule.contains("counter packets 0 "), "the limit's counter counted: \(r.stdout)")
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
        #expect(try load("").lxd.vendorConnections == 2048)
        #expect(try load(", vendorConnections: 0").lxd.vendorConnections == 0)
        #expect(throws: ConfigError.self) { try load(", vendorConnections: 8") }
        #expect(throws: ConfigError.self) { try load(", vendorConnections: -1") }
        #expect(try load("").lxd.vendorDiskMBps == 50)
        #expect(try load(", vendorDiskMBps: 0").lxd.vendorDiskMBps == 0)
        #expect(throws: ConfigError.self) { try load(", vendorDiskMBps: -1") }
        #expect(throws: ConfigError.self) { try load(", vendorDiskMBps: 100001") }
    }
}
