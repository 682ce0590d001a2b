/// The outcome of one control, computed from its results.
public enum ControlOutcome: String, Sendable, Hashable, Codable {
    case passed
    case failed
    /// Every result was skipped, or the control had no results at all (no tests ran).
    case skipped

    /// The rule (InSpec's enhanced-outcomes rule, with `error` folded into failure):
    /// any `failed`, `error` or unknown status ⇒ failed; otherwise all `skipped` ⇒ skipped;
    /// no results ⇒ skipped (no tests); otherwise passed. A control with some passed and some
    /// skipped results is passed.
    public init<S: Sequence>(statuses: S) where S.Element == ResultStatus {
        var any = false
        var allSkipped = true
        for status in statuses {
            any = true
            switch status {
            case .failed, .error, .other: self = .failed; return
            case .passed: allSkipped = false
            case .skipped: break
            }
        }
        self = (!any || allSkipped) ? .skipped : .passed
    }
}

/// One control's verdict: what a gate reports about it.
public struct ControlVerdict: Sendable, Hashable, Codable {
    /// The control ID.
    public var id: String
    /// The top-level profile the control was counted under (nil when the report names none).
    public var profile: String?
    public var title: String?
    public var impact: Double?
    public var outcome: ControlOutcome
    /// Human-readable detail: for a failed control one line per failed or erroring result
    /// (`code_desc: message`); for a skipped control the skip messages, or "no tests ran".
    public var messages: [String]
    /// How many results the control had.
    public var resultCount: Int

    enum CodingKeys: String, CodingKey {
        case id
        case profile
        case title
        case impact
        case outcome
        case messages
        case resultCount = "result_count"
    }

    public init(id: String, profile: String? = nil, title: String? = nil, impact: Double? = nil,
                outcome: ControlOutcome, messages: [String] = [], resultCount: Int = 0) {
        self.id = id
        self.profile = profile
        self.title = title
        self.impact = impact
        self.outcome = outcome
        self.messages = messages
        self.resultCount = resultCount
    }

    /// Computes the verdict of `control` counted under `profile`.
    public init(control: InSpecReport.Control, profile: String?) {
        self.init(id: control.id, profile: profile, title: control.title, impact: control.impact,
                  results: control.results)
    }

    init(id: String, profile: String?, title: String?, impact: Double?, results: [InSpecReport.ControlResult]) {
        let outcome = ControlOutcome(statuses: results.map(\.status))
        self.init(id: id, profile: profile, title: title, impact: impact, outcome: outcome,
                  messages: Self.messages(outcome: outcome, results: results), resultCount: results.count)
    }

    static func messages(outcome: ControlOutcome, results: [InSpecReport.ControlResult]) -> [String] {
        switch outcome {
        case .passed:
            return []
        case .skipped:
            if results.isEmpty { return ["no tests ran"] }
            return results.map { $0.skipMessage ?? "skipped: \($0.codeDesc)" }
        case .failed:
            return results.compactMap { r in
                switch r.status {
                case .passed, .skipped:
                    return nil
                case .failed:
                    return line(r.codeDesc, r.message ?? "failed")
                case .error:
                    let what = [r.exception, r.message].compactMap { $0 }.joined(separator: ": ")
                    return line(r.codeDesc, what.isEmpty ? "error" : "error: \(what)")
                case .other(let s):
                    return line(r.codeDesc, s.isEmpty ? "result has no status" : "unknown status \(s.debugDescription)")
                }
            }
        }
    }

    private static func line(_ codeDesc: String, _ detail: String) -> String {
        codeDesc.isEmpty ? detail : "\(codeDesc): \(detail)"
    }
}

/// Per-control counts.
public struct VerdictSummary: Sendable, Hashable, Codable {
    public var passed: Int
    public var failed: Int
    /// Includes controls with no results.
    public var skipped: Int
    /// Controls left out by the policy (deny-list, or not on the allow-list).
    public var ignored: Int

    enum CodingKeys: String, CodingKey {
        case passed
        case failed
        case skipped
        case ignored
    }

    public init(passed: Int = 0, failed: Int = 0, skipped: Int = 0, ignored: Int = 0) {
        self.passed = passed
        self.failed = failed
        self.skipped = skipped
        self.ignored = ignored
    }

    /// Counts `controls` by outcome (``ignored`` stays 0).
    public init(_ controls: some Sequence<ControlVerdict>) {
        self.init()
        for c in controls {
            switch c.outcome {
            case .passed: passed += 1
            case .failed: failed += 1
            case .skipped: skipped += 1
            }
        }
    }

    /// Controls counted (passed + failed + skipped).
    public var total: Int { passed + failed + skipped }
}
