import Foundation

/// Medians per phase, their ratio and the verdict. Pure: computed from the samples alone.
///
/// A phase counts as *slower* only if both hold:
/// - the ratio of the median round totals (client/cli) exceeds `1 + margin`, and
/// - the slowdown is not noise: the 95% bootstrap interval of the ratio of per-container medians
///   lies entirely above 1.
///
/// A ratio above the margin whose interval still contains 1 is reported as *inconclusive* (the
/// host was too noisy to tell; re-run with more rounds) and does not fail the run.
struct Report: Codable, Sendable {
    enum Verdict: String, Codable, Sendable {
        case ok, inconclusive, slower
    }

    struct Row: Codable, Sendable {
        var phase: String
        /// Median over rounds of the phase's total over all containers.
        var clientMs: Double
        var cliMs: Double
        /// clientMs / cliMs.
        var ratio: Double
        /// 95% bootstrap interval of (median client container) / (median cli container).
        var ratioLow: Double
        var ratioHigh: Double
        /// Median over every container of every round.
        var clientPerContainerMs: Double
        var cliPerContainerMs: Double
        /// (max - min) / median of the round totals: how much the rounds disagree.
        var clientSpread: Double
        var cliSpread: Double
        var verdict: Verdict
    }

    var count: Int
    var rounds: Int
    var margin: Double
    var rows: [Row]
    var total: Row
    var samples: [RoundSample]

    init(samples: [RoundSample], count: Int, rounds: Int, margin: Double) {
        self.count = count
        self.rounds = rounds
        self.margin = margin
        self.samples = samples
        func side(_ kind: DriverKind) -> [RoundSample] { samples.filter { $0.driver == kind } }
        func totals(_ kind: DriverKind, _ phases: [Phase]) -> [Double] {
            side(kind).map { s in phases.compactMap { s.times($0)?.totalMs }.reduce(0, +) }
        }
        func perContainer(_ kind: DriverKind, _ phases: [Phase]) -> [Double] {
            // A container's time summed over `phases`, for every container of every round.
            side(kind).flatMap { s -> [Double] in
                let lists = phases.compactMap { s.times($0)?.perContainerMs }
                guard let n = lists.first?.count else { return [] }
                return (0..<n).map { i in lists.reduce(0) { $0 + $1[i] } }
            }
        }
        func row(_ label: String, _ phases: [Phase]) -> Row {
            let a = totals(.client, phases), c = totals(.cli, phases)
            let pa = perContainer(.client, phases), pc = perContainer(.cli, phases)
            let ma = Self.median(a), mc = Self.median(c)
            let ratio = mc > 0 ? ma / mc : .infinity
            // With a handful of containers the interval says nothing about noise: judge nothing then.
            let enough = pa.count >= Self.minSamples && pc.count >= Self.minSamples
            let (low, high) = enough ? Self.bootstrapMedianRatio(pa, pc) : (.nan, .nan)
            let verdict: Verdict = ratio <= 1 + margin ? .ok : (enough && low > 1 ? .slower : .inconclusive)
            return Row(phase: label, clientMs: ma, cliMs: mc, ratio: ratio, ratioLow: low, ratioHigh: high,
                       clientPerContainerMs: Self.median(pa), cliPerContainerMs: Self.median(pc),
                       clientSpread: Self.spread(a), cliSpread: Self.spread(c), verdict: verdict)
        }
        rows = Phase.allCases.map { row($0.rawValue, [$0]) }
        total = row("total", Phase.allCases)
    }

    // MARK: - Statistics

    /// Fewest per-container samples per side (count x rounds) for which a phase can fail.
    static let minSamples = 5

    static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        return s.count.isMultiple(of: 2) ? (s[s.count / 2 - 1] + s[s.count / 2]) / 2 : s[s.count / 2]
    }

    static func spread(_ xs: [Double]) -> Double {
        let m = median(xs)
        guard m > 0, let lo = xs.min(), let hi = xs.max() else { return 0 }
        return (hi - lo) / m
    }

    /// Percentile bootstrap (2.5%, 97.5%) of median(a) / median(c), each side resampled on its own.
    /// Seeded, so the same samples always give the same interval.
    static func bootstrapMedianRatio(_ a: [Double], _ c: [Double], iterations: Int = 2000) -> (Double, Double) {
        guard !a.isEmpty, !c.isEmpty else { return (.nan, .nan) }
        var rng = SplitMix64(seed: 0x1D_B3_4C_11)
        func resampledMedian(_ xs: [Double]) -> Double {
            median((0..<xs.count).map { _ in xs[Int.random(in: 0..<xs.count, using: &rng)] })
        }
        var ratios: [Double] = []
        ratios.reserveCapacity(iterations)
        for _ in 0..<iterations {
            let ma = resampledMedian(a), mc = resampledMedian(c)
            ratios.append(mc > 0 ? ma / mc : .infinity)
        }
        ratios.sort()
        return (ratios[Int(Double(iterations) * 0.025)], ratios[Int(Double(iterations) * 0.975) - 1])
    }

    // MARK: - Output

    var slowerPhases: [Row] { rows.filter { $0.verdict == .slower } }
    var inconclusivePhases: [Row] { rows.filter { $0.verdict == .inconclusive } }
    var passed: Bool { slowerPhases.isEmpty }

    var verdictLines: [String] {
        let limit = String(format: "%.2f", 1 + margin)
        func list(_ rows: [Row]) -> String {
            rows.map { "\($0.phase) (ratio \(String(format: "%.2f", $0.ratio)), 95% \(Self.interval($0)))" }
                .joined(separator: ", ")
        }
        var lines: [String] = []
        if !inconclusivePhases.isEmpty {
            let why = count * rounds < Self.minSamples
                ? "too few samples (count x rounds < \(Self.minSamples)) to tell a slowdown from noise"
                : "within noise (interval contains 1)"
            lines.append("warning: ratio above \(limit) but \(why) in: "
                         + "\(list(inconclusivePhases)); re-run with more --rounds to settle it")
        }
        if passed {
            lines.append("verdict: OK - the client is not slower than the CLI in any phase (margin \(limit))")
        } else {
            lines.append("verdict: FAIL - the client is slower than the CLI (ratio > \(limit), beyond noise) in: "
                         + list(slowerPhases))
        }
        return lines
    }

    static func interval(_ r: Row) -> String {
        r.ratioLow.isNaN ? "n/a" : String(format: "%.2f-%.2f", r.ratioLow, r.ratioHigh)
    }

    /// Lays out rows with common column widths (first column left-aligned, the rest right-aligned),
    /// and returns them with a rule as wide as the table.
    static func align(_ rows: [[String]]) -> (lines: [String], rule: String) {
        let widths = (rows.first ?? []).indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        let lines = rows.map { cells in
            cells.enumerated().map { i, s in
                let pad = String(repeating: " ", count: widths[i] - s.count)
                return i == 0 ? s + pad : pad + s
            }.joined(separator: "  ")
        }
        return (lines, String(repeating: "-", count: widths.reduce(0, +) + 2 * max(widths.count - 1, 0)))
    }

    /// The human table.
    func table() -> String {
        let header = ["phase", "client ms", "cli ms", "ratio", "95% interval", "client/ct", "cli/ct", "spread client/cli"]
        func cells(_ r: Row) -> [String] {
            let mark = r.phase == "total" ? "" : (r.verdict == .slower ? " !" : r.verdict == .inconclusive ? " ?" : "")
            return [r.phase, Self.fmt(r.clientMs), Self.fmt(r.cliMs), String(format: "%.2f", r.ratio) + mark,
                    Self.interval(r), Self.fmt(r.clientPerContainerMs), Self.fmt(r.cliPerContainerMs),
                    String(format: "%.0f%% / %.0f%%", r.clientSpread * 100, r.cliSpread * 100)]
        }
        let (lines, rule) = Self.align([header] + rows.map(cells) + [cells(total)])
        var out = [
            "lxd-bench: \(count) containers x \(rounds) rounds per driver, sequential; ms = median over rounds of the phase total",
            "ratio = client ms / cli ms; 95% interval = bootstrap of the per-container median ratio;",
            "/ct = median per container; spread = (max - min) / median of the round totals",
            "",
            lines[0], rule,
        ]
        out += lines.dropFirst().dropLast()
        out += [rule, lines[lines.count - 1], ""]
        out += verdictLines
        return out.joined(separator: "\n")
    }

    static func fmt(_ ms: Double) -> String { String(format: "%.1f", ms) }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        struct Out: Encodable { var report: Report; var verdict: [String]; var passed: Bool }
        return String(decoding: try encoder.encode(Out(report: self, verdict: verdictLines, passed: passed)), as: UTF8.self)
    }
}

/// A small seeded generator (SplitMix64), so the bootstrap is reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
