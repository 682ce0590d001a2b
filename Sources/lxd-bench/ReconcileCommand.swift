import ArgumentParser
import AsyncHTTPClient
import Crypto
import Foundation
import GatewayAgent
import GatewayProtocol
import GRDB
import LXD
import Logging

/// `lxd-bench reconcile`: the cost of the gateway's steady state. N vendors, each with an approved
/// plan and its container created through the real reconcile path; then C cycles of one no-op
/// reconcile pass per vendor against the real LXD. Run through scripts/bench-reconcile.
struct ReconcileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile",
        abstract: "Time no-op reconcile passes of N vendor containers; count LXD writes; measure memory growth.",
        discussion: """
            Builds the gateway core in-process (AgentEnvironment and GatewayAgent as iot-gateway-client wires \
            them, with a temporary state directory /var/tmp/iotgw-bench-rec-<pid>) with N vendors bench-rec-NNN \
            (network none, 1 CPU, 64 MiB, 256 MiB disk, 64 processes). For each vendor it generates a signing key, \
            signs plan v1, checks it as the gateway checks a vendor's answer, records and approves it. One \
            reconcile pass of every vendor then creates and starts the N containers iotgw-bench-rec-NNN \
            (creations go one at a time, by design). Then C cycles: each cycle runs one reconcile pass of every \
            vendor, all vendors at once as their lanes would (GatewayAgent.reconcileAllOnce), and is timed.

            As in the daemon, the core reads containers through InstanceCache, kept true by LXD's /1.0/events \
            (followed here from the start). LXD is reached behind it through a counting decorator of \
            ContainerHost: every call that changes LXD counts as a write, the others as reads that reached LXD. Memory is this process's VmRSS (/proc/self/status) and anonymous memory \
            (/proc/self/smaps_rollup) after the first 100 cycles (or all, if fewer) and after the last.

            Targets: p99 of the cycle times <= 100 ms, no LXD write during the cycles, RSS growth <= 2 MB \
            (10^6 bytes). Exit status: 0 every target met, 1 a target missed, 3 benchmark failed (or another \
            run holds /run/lock/lxd-bench-reconcile.lock), 64 usage error, 130 interrupted. The containers and \
            the state directory are removed at exit, also after a failure or Ctrl-C; iotgw-bench-rec-* \
            leftovers are deleted at start.
            """)

    @Option(parsing: .unconditional, help: ArgumentHelp("Vendors, one container each (1...200).", valueName: "N"))
    var vendors = 50

    @Option(parsing: .unconditional, help: ArgumentHelp("No-op reconcile cycles over all vendors (1...1000000).", valueName: "C"))
    var cycles = 10_000

    @Option(help: ArgumentHelp("Local image alias.", valueName: "ALIAS"))
    var image = "iotgw-busybox"

    @Option(help: ArgumentHelp("LXD unix socket (default: LXD_SOCKET, LXD_DIR, snap, /var/lib/lxd).", valueName: "PATH"))
    var socket: String?

    @Flag(name: .shortAndLong, help: "Log the gateway core and every LXD request at debug level (stderr).")
    var verbose = false

    func validate() throws {
        try requireInRange(vendors, 1...200, option: "--vendors")
        try requireInRange(cycles, 1...1_000_000, option: "--cycles")
    }

    func run() async throws {
        // As iot-gateway-client does at start: the memory figure is the daemon's.
        IdleMemory.limitArenas()
        let status = await benchmark()
        if status != 0 { throw ExitCode(status) }
    }

    /// Setup, run, cleanup, verdict (the structure of the other modes); returns the exit status.
    func benchmark() async -> Int32 {
        let name = "lxd-bench reconcile"
        func fail(_ message: String) -> Int32 {
            stderrLine("\(name): \(message)")
            return 3
        }
        var logger = Logger(label: "lxd-bench") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = verbose ? .debug : .warning
        let client: LXDClient
        do { client = try LXDClient(socketPath: socket, logger: logger) } catch { return fail("\(error)") }
        guard let lock = RunLock(path: "/run/lock/lxd-bench-reconcile.lock") else {
            return fail("another lxd-bench reconcile is running (lock /run/lock/lxd-bench-reconcile.lock)")
        }
        defer { lock.release() }
        let stateDirectory = "/var/tmp/\(ReconcileBenchmark.namePrefix)\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: stateDirectory) }

        let bench = ReconcileBenchmark(lxd: client, image: image, vendors: vendors, cycles: cycles, socket: socket,
                                       stateDirectory: stateDirectory, logger: logger)
        let (outcome, cleanupFailed) = await runInterruptibly(as: name, {
            try await bench.run { stderrLine("\(name): \($0)") }
        }, cleanup: {
            let removed = try await Benchmark.removeInstances(prefix: ReconcileBenchmark.namePrefix, lxd: client, logger: logger)
            if removed > 0 { stderrLine("\(name): deleted \(removed) \(ReconcileBenchmark.namePrefix)* containers") }
        })
        let result: ReconcileResult
        switch outcome {
        case .finished(let r): result = r
        case .interrupted: return 130
        case .failed(let e): return fail("FAILED: \(e)")
        }
        print(result.report().joined(separator: "\n"))
        if cleanupFailed { return 3 }
        return result.passed ? 0 : 1
    }
}

/// What one run measured.
struct ReconcileResult: Sendable {
    static let targetMs = 100.0
    static let targetGrowthMB = 2.0

    var vendors: Int
    var cycles: Int
    var setupSeconds: Double
    /// Wall time of each cycle, in order.
    var cycleMs: [Double]
    var lxdWrites: Int
    var lxdReads: Int
    /// Container reads answered from the instance cache instead of LXD.
    var cacheHits: Int
    /// Rows the store inserted, updated or deleted during the cycles (SQLite total_changes).
    var storeChanges: Int
    var baselineCycles: Int
    var baseline: MemorySample
    var last: MemorySample

    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    static func megabytes(_ kib: Int) -> Double { Double(kib) * 1024 / 1_000_000 }

    var sorted: [Double] { cycleMs.sorted() }
    var p50: Double { Self.percentile(sorted, 50) }
    var p99: Double { Self.percentile(sorted, 99) }
    var rssGrowthMB: Double { Self.megabytes(last.rssKiB - baseline.rssKiB) }
    var anonymousGrowthMB: Double { Self.megabytes(last.anonymousKiB - baseline.anonymousKiB) }

    var fastEnough: Bool { p99 <= Self.targetMs }
    var passed: Bool { fastEnough && lxdWrites == 0 && rssGrowthMB <= Self.targetGrowthMB }

    func report() -> [String] {
        let s = sorted
        let mean = s.reduce(0, +) / Double(max(s.count, 1))
        let passes = vendors * cycles
        func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
        var out = [
            "lxd-bench reconcile: \(vendors) vendors, containers created through the reconcile path in \(f(setupSeconds)) s",
            "no-op reconcile of \(vendors) containers: p50 \(f(p50)) ms, p99 \(f(p99)) ms (target <= \(f(Self.targetMs, 0)) ms)",
            "  \(cycles) cycles, each one pass per vendor, all vendors at once: mean \(f(mean)) ms, max \(f(s.last ?? .nan)) ms",
            "LXD writes during \(vendors)*\(cycles) no-op passes: \(lxdWrites) (target 0)",
            "  LXD reads: \(lxdReads) (\(f(Double(lxdReads) / Double(max(passes, 1)), 2)) per pass), container reads served from the "
                + "events-kept cache: \(cacheHits); store rows written: \(storeChanges)",
            "RSS growth over \(cycles) cycles: \(f(rssGrowthMB, 2)) MB (target <= \(f(Self.targetGrowthMB, 0)) MB)",
            "  VmRSS \(f(Self.megabytes(baseline.rssKiB))) MB after \(baselineCycles) cycles -> \(f(Self.megabytes(last.rssKiB))) MB after \(cycles); "
                + "anonymous \(f(Self.megabytes(baseline.anonymousKiB))) -> \(f(Self.megabytes(last.anonymousKiB))) MB "
                + "(growth \(f(anonymousGrowthMB, 2)) MB)",
        ]
        var missed: [String] = []
        if !fastEnough { missed.append("p99 above \(f(Self.targetMs, 0)) ms") }
        if lxdWrites != 0 { missed.append("LXD written during no-op passes") }
        if rssGrowthMB > Self.targetGrowthMB { missed.append("RSS grew more than \(f(Self.targetGrowthMB, 0)) MB") }
        out.append(missed.isEmpty ? "verdict: OK - every target met" : "verdict: FAIL - " + missed.joined(separator: "; "))
        return out
    }
}

/// Sets up the vendors and their containers through the gateway core, then runs the no-op cycles.
struct ReconcileBenchmark: Sendable {
    /// Containers are `iotgw-<vendor>`, vendors `bench-rec-NNN`: every container starts with this.
    static let namePrefix = "iotgw-bench-rec-"
    /// Memory is first sampled after this many cycles (the allocator and caches have settled by then).
    static let baselineCycles = 100

    let lxd: LXDClient
    let image: String
    let vendors: Int
    let cycles: Int
    let socket: String?
    let stateDirectory: String
    let logger: Logger

    static func vendorID(_ i: Int) -> String { "bench-rec-" + String(format: "%03d", i) }

    func run(progress: @Sendable (String) -> Void) async throws -> ReconcileResult {
        let fingerprint: String
        do { fingerprint = try await lxd.imageAlias(image).target } catch let e as LXDError where e.code == .notFound {
            throw BenchError(message: "image alias \(image) not found in LXD (scripts/build-image busybox builds iotgw-busybox)")
        }
        let removed = try await Benchmark.removeInstances(prefix: Self.namePrefix, lxd: lxd, logger: logger)
        if removed > 0 { progress("deleted \(removed) \(Self.namePrefix)* leftovers of an earlier run") }

        let keys = (1...vendors).map { (Self.vendorID($0), Curve25519.Signing.PrivateKey()) }
        let config = try writeConfig(keys.map { ($0.0, Keys.encode($0.1.publicKey)) })
        let identity = try IdentityStore.loadOrCreate(stateDirectory: config.stateDirectory)
        let store = try GatewayStore(path: (config.stateDirectory as NSString).appendingPathComponent("gateway.sqlite"))
        let host = CountingHost(lxd)
        // As GatewayAgent.make wires it (reconcile reads through the instance cache that LXD's events keep
        // true), with LXD behind the counter, so reads are those that reached LXD; the vendors are never called.
        let instances = InstanceCache(host: host, events: lxd, logger: logger)
        let env = AgentEnvironment(config: config, store: store, identity: identity, host: instances,
                                   vendors: VendorClient(http: .shared, identity: identity, logger: logger),
                                   registry: DeviceRegistry(directory: config.deviceDirectory),
                                   delivery: LXDDeliveryDriver(lxd: lxd, delivery: config.delivery, logger: logger),
                                   network: NoNetworkGuard(), logger: logger, instances: instances)
        let agent = GatewayAgent(environment: env)
        // The agent's run() would follow the events; the benchmark drives passes itself, so it follows them here.
        let following = Task { try await instances.run() }
        defer { following.cancel() }
        let clock = ContinuousClock()
        let followDeadline = clock.now + .seconds(30)
        while !instances.isLive {
            guard clock.now < followDeadline else { throw BenchError(message: "LXD's events stream was not followed within 30 s") }
            try await Task.sleep(for: .milliseconds(20))
        }

        progress("signing, checking, recording and approving plan v1 of \(vendors) vendors")
        for (i, (vendor, key)) in keys.enumerated() {
            // One device granted and never plugged: a plan granting nothing is a withdrawal, which makes no container.
            let grant = DeviceGrant(serial: "BENCH\(i)", vendorID: String(format: "%04x", 0xb000 + i), productID: "0001",
                                    kind: .unixChar, path: "/dev/ttyBENCH0")
            let plan = ProvisioningPlan(vendor: vendor, gatewayID: identity.id, version: 1, issuedAt: Date(),
                                        expiresAt: Date().addingTimeInterval(86_400),
                                        container: ContainerSpec(name: ProvisioningPlan.containerName(forVendor: vendor),
                                                                 image: ImageRef(alias: image, fingerprint: fingerprint),
                                                                 limits: ResourceLimits(cpus: 1, memoryMiB: 64, diskMiB: 256, processes: 64),
                                                                 network: .none),
                                        devices: [grant], apps: [])
            let body = try WireJSON.encoder().encode(try PlanSigner(privateKey: key).sign(plan))
            let (checked, payload) = try PlanValidator(vendor: vendor, vendorKey: key.publicKey, gatewayID: identity.id)
                .validate(rawBody: body, held: try await store.heldPlan(vendor), now: Date())
            let rec = try await store.recordPlan(vendor: vendor, version: checked.version, signedJSON: body,
                                                 payloadSHA256: Keys.sha256Hex(payload))
            guard let id = rec.id else { throw BenchError(message: "plan of \(vendor) was recorded without an id") }
            try await store.decide(planID: id, approve: true, by: "lxd-bench", digest: rec.payloadSHA256)
            try await agent.decided(planID: id)
        }

        progress("creating \(vendors) containers \(Self.namePrefix)* through the reconcile path (one at a time)")
        let setupStart = clock.now
        try Self.check(await agent.reconcileAllOnce(), what: "creation")
        let setupSeconds = Self.seconds(setupStart.duration(to: clock.now))
        for (vendor, _) in keys {
            let name = ProvisioningPlan.containerName(forVendor: vendor)
            guard try await lxd.instance(name).instance.isRunning else { throw BenchError(message: "\(name) is not running after creation") }
        }

        progress("\(cycles) no-op cycles over \(vendors) vendors")
        let writes = host.writes, reads = host.reads, changes = try await Self.storeChanges(store)
        let served = instances.counts.hits
        var cycleMs: [Double] = []
        cycleMs.reserveCapacity(cycles)  // no growth of our own during the cycles
        let baselineAt = min(Self.baselineCycles, cycles)
        let progressEvery = max(cycles / 20, 1)
        var baseline = MemorySample.now()
        for c in 1...cycles {
            try Task.checkCancellation()
            let start = clock.now
            let failed = await agent.reconcileAllOnce()
            cycleMs.append(Self.seconds(start.duration(to: clock.now)) * 1000)
            try Self.check(failed, what: "cycle \(c)")
            if c == baselineAt { baseline = MemorySample.now() }
            if c.isMultiple(of: progressEvery) {
                let recent = cycleMs.suffix(progressEvery).sorted()
                progress("cycle \(c)/\(cycles): median of the last \(progressEvery) \(String(format: "%.1f", recent[recent.count / 2])) ms, "
                         + "RSS \(MemorySample.now().rssKiB) KiB")
            }
        }
        let last = MemorySample.now()
        return ReconcileResult(vendors: vendors, cycles: cycles, setupSeconds: setupSeconds, cycleMs: cycleMs,
                               lxdWrites: host.writes - writes, lxdReads: host.reads - reads,
                               cacheHits: instances.counts.hits - served,
                               storeChanges: try await Self.storeChanges(store) - changes,
                               baselineCycles: baselineAt, baseline: baseline, last: last)
    }

    /// The owner's configuration file for the bench vendors, loaded (and so validated) as the daemon loads it.
    func writeConfig(_ vendors: [(id: String, publicKey: String)]) throws -> GatewayConfig {
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        var yaml = """
            stateDirectory: \(stateDirectory)/state
            controlSocket: \(stateDirectory)/control.sock
            deviceDirectory: /dev/\(Self.namePrefix)nodes
            lxd: {\(socket.map { "socket: \"\($0)\", " } ?? "")profiles: [default, iotgw-vendor], network: iotgwbr0, storagePool: default, hostFirewall: false, projects: false}
            caps: {cpus: 1, memoryMiB: 64, diskMiB: 256, processes: 64, allowNesting: false}
            vendors:

            """
        for (i, v) in vendors.enumerated() {
            // A USB vendor ID of its own per bench vendor; no device is ever plugged.
            yaml += "  - {id: \(v.id), match: [{vendorID: \"\(String(format: "%04x", 0xb000 + i))\"}], "
                + "daemonURL: \"https://\(v.id).invalid\", publicKey: \"\(v.publicKey)\", policy: ask}\n"
        }
        let path = (stateDirectory as NSString).appendingPathComponent("gateway.yaml")
        try Data(yaml.utf8).write(to: URL(fileURLWithPath: path))
        return try GatewayConfig.load(path: path)
    }

    static func check(_ failed: [String: any Error], what: String) throws {
        guard let (vendor, error) = failed.min(by: { $0.key < $1.key }) else { return }
        throw BenchError(message: "\(what): reconcile of \(failed.count) vendor(s) failed, first \(vendor): \(error)")
    }

    /// Rows written by the store's one writer connection so far (SQLite total_changes).
    static func storeChanges(_ store: GatewayStore) async throws -> Int {
        try await store.db.writeWithoutTransaction { $0.totalChangesCount }
    }

    static func seconds(_ d: Duration) -> Double {
        d / .seconds(1)
    }
}
