/// Applies `policy` to one `inspec exec` run. Pure.
///
/// - Parameters:
///   - report: the decoded `json` report, or nil when none was written or it could not be read.
///   - exitCode: the `inspec exec` exit status.
///   - policy: what counts and whether it is enforced.
/// - Returns: `.error` when the exit status is not 0/100/101 (license 172/173/174, usage 1,
///   plugin 2, …), when there is no report, or when a profile failed to load; otherwise
///   `.failed` when a counted control failed (any failed or error result) or an allow-listed
///   control is missing, else `.passed`. The report decides between passed and failed, not the
///   exit status (a policy may ignore the control that made InSpec exit 100).
public func evaluate(report: InSpecReport?, exitCode: InSpecExitCode, policy: ValidationPolicy) -> Verdict {
    var problems: [String] = []
    var notes: [String] = []
    if let report {
        for p in report.failedProfiles {
            problems.append("profile \(p.name ?? "(unnamed)") failed to load: \(p.statusMessage ?? p.skipMessage ?? "no reason given")")
        }
        for p in report.skippedProfiles {
            notes.append("profile \(p.name ?? "(unnamed)") was skipped: \(p.statusMessage ?? p.skipMessage ?? "no reason given")")
        }
    }
    return Evaluation(controls: report?.controlVerdicts(), exitCode: exitCode, policy: policy,
                      problems: problems, notes: notes).verdict()
}

/// Applies `policy` to one `inspec exec` run reported with `--reporter json-min`. Pure; the same
/// rules as ``evaluate(report:exitCode:policy:)`` (json-min carries no profile load status).
public func evaluate(minReport: InSpecMinReport?, exitCode: InSpecExitCode, policy: ValidationPolicy) -> Verdict {
    Evaluation(controls: minReport?.controlVerdicts(), exitCode: exitCode, policy: policy, problems: [], notes: [])
        .verdict()
}

struct Evaluation {
    var controls: [ControlVerdict]?
    var exitCode: InSpecExitCode
    var policy: ValidationPolicy
    /// Reasons the run is an error even though InSpec exited normally.
    var problems: [String]
    var notes: [String]

    func verdict() -> Verdict {
        let enforced = policy.mode == .enforced
        let counted = (controls ?? []).filter { policy.counts(controlID: $0.id) }
        var summary = VerdictSummary(counted)
        summary.ignored = (controls?.count ?? 0) - counted.count

        func make(_ status: Verdict.Status, failing: [ControlVerdict] = [], missing: [String] = [],
                  _ reasons: [String]) -> Verdict {
            Verdict(status: status, enforced: enforced, abortOnFailure: policy.abortOnFailure,
                    failingControls: failing, missingControlIDs: missing, summary: summary,
                    exitCode: exitCode.rawValue,
                    explanation: explain(status, enforced: enforced, summary: summary, reasons: reasons + notes))
        }

        guard exitCode.testsRan else {
            return make(.error, ["\(exitCode.explanation) (exit \(exitCode.rawValue))"])
        }
        guard let controls else {
            return make(.error, ["inspec exited \(exitCode.rawValue) (\(exitCode.explanation)) but no report was read"])
        }
        guard problems.isEmpty else {
            return make(.error, problems)
        }

        let failing = counted.filter { $0.outcome == .failed }
        let present = Set(controls.map(\.id))
        let missing = policy.effectiveAllowList.filter { !present.contains($0) }

        var reasons: [String] = []
        if !failing.isEmpty {
            let list = failing.map { c in
                c.messages.isEmpty ? c.id : "\(c.id) (\(c.messages.joined(separator: "; ")))"
            }
            reasons.append("failed: \(list.joined(separator: ", "))")
        }
        if !missing.isEmpty {
            let effect = policy.failOnMissingAllowListedControls ? "" : " (tolerated by policy)"
            reasons.append("allow-listed controls not in the report\(effect): \(missing.joined(separator: ", "))")
        }
        if exitCode == .failedTests, !controls.contains(where: { $0.outcome == .failed }) {
            reasons.append("note: inspec exited 100 but the report shows no failed control")
        }
        if counted.isEmpty {
            reasons.append("note: no control counted")
        }

        let failed = !failing.isEmpty || (policy.failOnMissingAllowListedControls && !missing.isEmpty)
        return make(failed ? .failed : .passed, failing: failing, missing: missing, reasons)
    }

    private func explain(_ status: Verdict.Status, enforced: Bool, summary: VerdictSummary,
                         reasons: [String]) -> String {
        let mode: String
        switch status {
        case .passed, .notRun: mode = enforced ? "enforced" : "report only"
        case .failed, .error: mode = enforced ? "enforced, blocks the gate" : "report only, does not block"
        }
        var parts: [String] = []
        if status != .error || summary.total + summary.ignored > 0 {
            var counts = "\(summary.passed) passed, \(summary.failed) failed, \(summary.skipped) skipped"
            if summary.ignored > 0 { counts += ", \(summary.ignored) ignored by policy" }
            parts.append(counts)
        }
        parts += reasons
        return "\(status.rawValue) (\(mode)): " + parts.joined(separator: "; ")
    }
}
