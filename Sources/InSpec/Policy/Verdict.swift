/// The result of applying a ``ValidationPolicy`` to one InSpec run.
public struct Verdict: Sendable, Hashable, Codable {
    public enum Status: String, Sendable, Hashable, Codable {
        /// No counted control failed (some may have been skipped).
        case passed
        /// At least one counted control failed, or an allow-listed control is missing.
        case failed
        /// InSpec did not produce a usable result: license, usage, plugin, signature errors,
        /// interruption, a profile that failed to load, or no report.
        case error
        /// Validation was not run (see ``ValidationPolicy/shouldValidate(environment:convergeChangedResources:)``).
        case notRun = "not_run"
    }

    public var status: Status
    /// Whether the policy enforces this verdict (mode `enforced`).
    public var enforced: Bool
    /// Copied from the policy; see ``shouldAbort``.
    public var abortOnFailure: Bool
    /// Counted controls whose outcome is failed, in report order.
    public var failingControls: [ControlVerdict]
    /// Allow-listed control IDs the report did not contain.
    public var missingControlIDs: [String]
    public var summary: VerdictSummary
    /// The InSpec exit status, when InSpec ran.
    public var exitCode: Int?
    /// One human-readable paragraph: what happened and why the verdict is what it is.
    public var explanation: String

    enum CodingKeys: String, CodingKey {
        case status
        case enforced
        case abortOnFailure = "abort_on_failure"
        case failingControls = "failing_controls"
        case missingControlIDs = "missing_control_ids"
        case summary
        case exitCode = "exit_code"
        case explanation
    }

    public init(status: Status, enforced: Bool, abortOnFailure: Bool = false, failingControls: [ControlVerdict] = [],
                missingControlIDs: [String] = [], summary: VerdictSummary = VerdictSummary(), exitCode: Int? = nil,
                explanation: String) {
        self.status = status
        self.enforced = enforced
        self.abortOnFailure = abortOnFailure
        self.failingControls = failingControls
        self.missingControlIDs = missingControlIDs
        self.summary = summary
        self.exitCode = exitCode
        self.explanation = explanation
    }

    /// Validation ran and every counted control passed or was skipped. Never true for an error
    /// or when validation did not run.
    public var passed: Bool { status == .passed }

    /// Whether the gate must fail: enforced, and failed or errored. Report-only never blocks.
    public var blocksGate: Bool { enforced && (status == .failed || status == .error) }

    /// Whether the caller should stop the whole run now (``blocksGate`` and `abortOnFailure`).
    public var shouldAbort: Bool { blocksGate && abortOnFailure }

    /// The verdict for a validation that was deliberately not run.
    public static func notRun(reason: String, policy: ValidationPolicy) -> Verdict {
        Verdict(status: .notRun, enforced: policy.mode == .enforced, abortOnFailure: policy.abortOnFailure,
                explanation: "validation not run: \(reason)")
    }
}
