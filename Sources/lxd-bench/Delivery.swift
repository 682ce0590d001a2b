// `lxd-bench delivery`: how long does delivering an app payload into a running container take
// through our LXDClient (`pushFile`, the gateway's path) compared with a plain `lxc file push` of
// the same bytes? Run through scripts/bench-delivery; the command is DeliveryCommand.swift.
import Foundation
import LXD
import Logging

/// One timed push.
struct DeliverySample: Codable, Sendable {
    var sizeMiB: Int
    var driver: DriverKind
    var round: Int
    var ms: Double
}

/// What was found inside the container after a driver's untimed push of one size.
struct DeliveryCheck: Codable, Sendable {
    var sizeMiB: Int
    var driver: DriverKind
    var bytes: Int
    /// Octal permission bits as `stat -c %a` prints them, e.g. `644`.
    var mode: String
    var uid: Int
    var gid: Int
    var sha256: String
}

/// A local payload file.
struct Payload: Sendable {
    var sizeMiB: Int
    var path: String
    var sha256: String
    var bytes: Int { sizeMiB << 20 }
    var remotePath: String { "\(DeliveryBenchmark.remoteDirectory)/payload-\(sizeMiB)" }
}

/// Runs the delivery benchmark against one container.
struct DeliveryBenchmark: Sendable {
    static let namePrefix = Benchmark.namePrefix + "delivery-"
    static let remoteDirectory = "/root"
    static let payloadDirectory = "/var/tmp"
    static let payloadPrefix = "lxd-bench-delivery-"
    /// What the client asks for; `lxc file push` takes the local file's owner (root) and mode (0644).
    static let attributes = FileAttributes(uid: 0, gid: 0, mode: 0o644)

    let client: LXDClient
    let lxc: CommandRunner
    let sha256sum: CommandRunner
    let container: String
    let image: String
    let sizesMiB: [Int]
    let rounds: Int
    let logger: Logger

    /// Payload files of this process, `<dir>/<prefix><pid>-<n>MiB.bin`.
    static func payloadPath(sizeMiB: Int, pid: Int32 = getpid()) -> String {
        "\(payloadDirectory)/\(payloadPrefix)\(pid)-\(sizeMiB)MiB.bin"
    }

    /// Deletes payload files; with `pid` nil, those of every run (only safe under the run lock).
    static func removePayloads(pid: Int32?) {
        let fm = FileManager.default
        let prefix = payloadPrefix + (pid.map { "\($0)-" } ?? "")
        for f in (try? fm.contentsOfDirectory(atPath: payloadDirectory)) ?? [] where f.hasPrefix(prefix) && f.hasSuffix(".bin") {
            try? fm.removeItem(atPath: "\(payloadDirectory)/\(f)")
        }
    }

    func run(progress: @Sendable (String) -> Void) async throws -> (samples: [DeliverySample], checks: [DeliveryCheck]) {
        do {
            _ = try await client.imageAlias(image)
        } catch let e as LXDError where e.code == .notFound {
            throw BenchError(message: "image alias \(image) not found in LXD (scripts/build-image busybox builds iotgw-busybox)")
        }
        let removed = try await Benchmark.removeInstances(prefix: Self.namePrefix, lxd: client, logger: logger)
        if removed > 0 { progress("deleted \(removed) \(Self.namePrefix)* leftovers of an earlier run") }

        var payloads: [Payload] = []
        for size in sizesMiB {
            progress("writing \(size) MiB of random bytes to \(Self.payloadPath(sizeMiB: size))")
            payloads.append(try await makePayload(sizeMiB: size))
        }

        progress("creating and starting \(container) (\(image))")
        try await client.createInstance(InstancesPost(name: container, source: .image(alias: image)))
        try await client.start(container)

        var samples: [DeliverySample] = []
        var checks: [DeliveryCheck] = []
        let clock = ContinuousClock()
        for p in payloads {
            for kind in DriverKind.allCases {
                progress("\(p.sizeMiB) MiB: untimed \(kind.rawValue) push into a deleted \(p.remotePath), verifying")
                try await deleteRemote(p.remotePath)
                try await push(kind, p)
                checks.append(try await verify(kind, p))
            }
            for r in 0..<rounds {
                for kind in Benchmark.schedule(round: r) {
                    try Task.checkCancellation()
                    progress("\(p.sizeMiB) MiB: round \(r + 1)/\(rounds): \(kind.rawValue)")
                    // Writeback of the previous push's pages must not land in this one's time.
                    sync()
                    let start = clock.now
                    try await push(kind, p)
                    let ms = Benchmark.milliseconds(start.duration(to: clock.now))
                    logger.debug("push done", metadata: [
                        "bench.driver": "\(kind.rawValue)", "bench.size": "\(p.sizeMiB)", "bench.ms": "\(ms)",
                    ])
                    samples.append(DeliverySample(sizeMiB: p.sizeMiB, driver: kind, round: r, ms: ms))
                }
            }
        }
        return (samples, checks)
    }

    func push(_ kind: DriverKind, _ p: Payload) async throws {
        do {
            switch kind {
            case .client:
                try await client.pushFile(container, localPath: p.path, to: p.remotePath, attributes: Self.attributes)
            case .cli:
                try await lxc.run(["file", "push", p.path, "\(container)\(p.remotePath)"])
            }
        } catch let e as CancellationError {
            throw e
        } catch {
            throw BenchError(message: "\(kind.rawValue) push of \(p.sizeMiB) MiB to \(container)\(p.remotePath): \(error)")
        }
    }

    func deleteRemote(_ path: String) async throws {
        do {
            try await client.deleteFile(container, path: path)
        } catch let e as LXDError where e.code == .notFound {
            return
        }
    }

    /// Size, mode, owner and sha256 of the pushed file, read inside the container.
    func verify(_ kind: DriverKind, _ p: Payload) async throws -> DeliveryCheck {
        func run(_ command: [String]) async throws -> [Substring] {
            let r = try await client.exec(container, command)
            guard r.succeeded else {
                throw BenchError(message: "verify: \(command.joined(separator: " ")) in \(container) exited \(r.exitCode): \(r.stderr)")
            }
            return r.stdout.split(whereSeparator: \.isWhitespace)
        }
        let st = try await run(["stat", "-c", "%s %a %u %g", p.remotePath])
        let sum = try await run(["sha256sum", p.remotePath])
        guard st.count == 4, let bytes = Int(st[0]), let uid = Int(st[2]), let gid = Int(st[3]), let hash = sum.first else {
            throw BenchError(message: "verify: unexpected output of stat/sha256sum for \(p.remotePath): \(st) \(sum)")
        }
        let check = DeliveryCheck(sizeMiB: p.sizeMiB, driver: kind, bytes: bytes, mode: String(st[1]), uid: uid, gid: gid,
                                  sha256: String(hash))
        var wrong: [String] = []
        if bytes != p.bytes { wrong.append("size \(bytes), expected \(p.bytes)") }
        if check.sha256 != p.sha256 { wrong.append("sha256 \(check.sha256), expected \(p.sha256)") }
        if check.mode != "644" { wrong.append("mode \(check.mode), expected 644") }
        if uid != 0 || gid != 0 { wrong.append("owner \(uid):\(gid), expected 0:0") }
        guard wrong.isEmpty else {
            throw BenchError(message: "\(kind.rawValue) push of \(p.sizeMiB) MiB arrived wrong in \(container)\(p.remotePath): "
                             + wrong.joined(separator: "; "))
        }
        return check
    }

    /// Writes `sizeMiB` MiB from /dev/urandom, mode 0644, and hashes it with the host's sha256sum.
    func makePayload(sizeMiB: Int) async throws -> Payload {
        let path = Self.payloadPath(sizeMiB: sizeMiB)
        let fm = FileManager.default
        try? fm.removeItem(atPath: path)
        guard fm.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]),
              let out = FileHandle(forWritingAtPath: path),
              let random = FileHandle(forReadingAtPath: "/dev/urandom")
        else {
            throw BenchError(message: "cannot create \(path)")
        }
        defer {
            try? out.close()
            try? random.close()
        }
        for _ in 0..<sizeMiB {
            try Task.checkCancellation()
            guard let block = try random.read(upToCount: 1 << 20), block.count == 1 << 20 else {
                throw BenchError(message: "short read from /dev/urandom")
            }
            try out.write(contentsOf: block)
        }
        try out.synchronize()
        // umask must not narrow what lxc file push copies.
        try fm.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let sum = try await sha256sum.output([path]).split(whereSeparator: \.isWhitespace).first.map(String.init)
        guard let sum, sum.count == 64 else { throw BenchError(message: "sha256sum \(path) printed no hash") }
        return Payload(sizeMiB: sizeMiB, path: path, sha256: sum)
    }
}

/// Medians per size, throughput, the ratio client/cli and the verdict, with the same noise rule as
/// `Report`: a size is *slower* only if the ratio of medians exceeds `1 + margin` and the 95%
/// bootstrap interval of that ratio lies entirely above 1; above the margin but with 1 inside the
/// interval (or fewer than `Report.minSamples` pushes per side) it is *inconclusive*.
struct DeliveryReport: Codable, Sendable {
    struct Row: Codable, Sendable {
        var sizeMiB: Int
        /// Median push time over the rounds.
        var clientMs: Double
        var cliMs: Double
        /// MiB per second at the median time.
        var clientMiBps: Double
        var cliMiBps: Double
        var ratio: Double
        var ratioLow: Double
        var ratioHigh: Double
        /// (max - min) / median of the push times.
        var clientSpread: Double
        var cliSpread: Double
        var verdict: Report.Verdict
    }

    var container: String
    var image: String
    var rounds: Int
    var margin: Double
    var rows: [Row]
    var checks: [DeliveryCheck]
    var samples: [DeliverySample]

    init(samples: [DeliverySample], checks: [DeliveryCheck], sizesMiB: [Int], container: String, image: String,
         rounds: Int, margin: Double) {
        self.container = container
        self.image = image
        self.rounds = rounds
        self.margin = margin
        self.checks = checks
        self.samples = samples
        rows = sizesMiB.map { size in
            func times(_ kind: DriverKind) -> [Double] {
                samples.filter { $0.sizeMiB == size && $0.driver == kind }.map(\.ms)
            }
            let a = times(.client), c = times(.cli)
            let ma = Report.median(a), mc = Report.median(c)
            let ratio = mc > 0 ? ma / mc : .infinity
            let enough = a.count >= Report.minSamples && c.count >= Report.minSamples
            let (low, high) = enough ? Report.bootstrapMedianRatio(a, c) : (.nan, .nan)
            let verdict: Report.Verdict = ratio <= 1 + margin ? .ok : (enough && low > 1 ? .slower : .inconclusive)
            func rate(_ ms: Double) -> Double { ms > 0 ? Double(size) / (ms / 1000) : 0 }
            return Row(sizeMiB: size, clientMs: ma, cliMs: mc, clientMiBps: rate(ma), cliMiBps: rate(mc),
                       ratio: ratio, ratioLow: low, ratioHigh: high,
                       clientSpread: Report.spread(a), cliSpread: Report.spread(c), verdict: verdict)
        }
    }

    var slowerSizes: [Row] { rows.filter { $0.verdict == .slower } }
    var inconclusiveSizes: [Row] { rows.filter { $0.verdict == .inconclusive } }
    var passed: Bool { slowerSizes.isEmpty }

    static func interval(_ r: Row) -> String {
        r.ratioLow.isNaN ? "n/a" : String(format: "%.2f-%.2f", r.ratioLow, r.ratioHigh)
    }

    var verdictLines: [String] {
        let limit = String(format: "%.2f", 1 + margin)
        func list(_ rows: [Row]) -> String {
            rows.map { "\($0.sizeMiB) MiB (ratio \(String(format: "%.2f", $0.ratio)), 95% \(Self.interval($0)))" }
                .joined(separator: ", ")
        }
        var lines: [String] = []
        if !inconclusiveSizes.isEmpty {
            let why = rounds < Report.minSamples
                ? "too few rounds (< \(Report.minSamples)) to tell a slowdown from noise"
                : "within noise (interval contains 1)"
            lines.append("warning: ratio above \(limit) but \(why) at: \(list(inconclusiveSizes)); re-run with more --rounds to settle it")
        }
        if passed {
            lines.append("verdict: OK - delivery through the client is within the target (ratio <= \(limit) or noise) at every size")
        } else {
            lines.append("verdict: FAIL - delivery through the client is slower than lxc file push (ratio > \(limit), beyond noise) at: "
                         + list(slowerSizes))
        }
        return lines
    }

    func table() -> String {
        let header = ["size", "client ms", "cli ms", "client MiB/s", "cli MiB/s", "ratio", "95% interval", "spread client/cli"]
        let body = rows.map { r -> [String] in
            let mark = r.verdict == .slower ? " !" : r.verdict == .inconclusive ? " ?" : ""
            return ["\(r.sizeMiB) MiB", Report.fmt(r.clientMs), Report.fmt(r.cliMs), Report.fmt(r.clientMiBps),
                    Report.fmt(r.cliMiBps), String(format: "%.2f", r.ratio) + mark, Self.interval(r),
                    String(format: "%.0f%% / %.0f%%", r.clientSpread * 100, r.cliSpread * 100)]
        }
        let (lines, rule) = Report.align([header] + body)
        var out = [
            "lxd-bench delivery: push of a payload into \(container) (\(image)):/root/payload-<n>,",
            "\(rounds) timed rounds per size and driver, alternating; client = LXDClient.pushFile, cli = lxc file push",
            "ms = median push time; MiB/s at that median; ratio = client ms / cli ms;",
            "95% interval = bootstrap of the ratio of medians; spread = (max - min) / median",
            "",
            lines[0], rule,
        ]
        out += lines.dropFirst()
        out.append(rule)
        let verified = checks.map { "\($0.sizeMiB) MiB \($0.driver.rawValue)" }.joined(separator: ", ")
        out.append("verified inside the container (size, mode 644, owner 0:0, sha256): \(verified)")
        out.append("")
        out += verdictLines
        return out.joined(separator: "\n")
    }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        struct Out: Encodable { var report: DeliveryReport; var verdict: [String]; var passed: Bool }
        return String(decoding: try encoder.encode(Out(report: self, verdict: verdictLines, passed: passed)), as: UTF8.self)
    }
}
