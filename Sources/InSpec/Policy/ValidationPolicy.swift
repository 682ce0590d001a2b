/// How InSpec results gate a deployment. Modelled on what the Chef audit cookbook and Chef
/// Infra's Compliance Phase offered (report-only reporters versus the `audit-enforcer` reporter
/// that raises and ends the run), reduced to what a gateway needs.
///
/// Codable with snake_case keys so it can live in configuration; every key is optional and
/// defaults to the value of ``init(mode:abortOnFailure:allowList:denyList:changeOnlyEnvironments:failOnMissingAllowListedControls:)``.
public struct ValidationPolicy: Sendable, Hashable, Codable {
    public enum Mode: String, Sendable, Hashable, Codable {
        /// A failed or erroring validation fails the gate (``Verdict/blocksGate``).
        case enforced
        /// Results are reported, never acted on: the gate is never failed, not even by errors.
        case reportOnly = "report_only"
    }

    public var mode: Mode
    /// When enforced and the verdict blocks the gate, also ask the caller to stop the whole run
    /// at once (``Verdict/shouldAbort``), as `audit-enforcer` ends a Chef run, instead of only
    /// recording the failure and carrying on with other work. No effect in report-only mode.
    public var abortOnFailure: Bool
    /// Control IDs that count; empty means every control counts. When not empty, only these
    /// are run (``InSpecCommand`` passes them to `--controls`) and evaluated.
    public var allowList: [String]
    /// Control IDs that never count (e.g. a known-flaky check). Precedence: the deny-list wins;
    /// an ID on both lists is ignored and not passed to `--controls`.
    public var denyList: [String]
    /// Environments where validation runs only after a converge that changed something: a
    /// converge that updated no resource cannot have broken what the last validation checked,
    /// and periodic no-op converges then cost no InSpec run. Default `["production"]`; every
    /// other environment validates after every converge. See ``shouldValidate(environment:convergeChangedResources:)``.
    public var changeOnlyEnvironments: Set<String>
    /// When the allow-list names a control the report does not contain (typo, renamed control,
    /// profile did not load it), count that as a failure. Default true: a gate must not pass
    /// because the control it relies on silently did not run.
    public var failOnMissingAllowListedControls: Bool

    enum CodingKeys: String, CodingKey {
        case mode
        case abortOnFailure = "abort_on_failure"
        case allowList = "allow_list"
        case denyList = "deny_list"
        case changeOnlyEnvironments = "change_only_environments"
        case failOnMissingAllowListedControls = "fail_on_missing_allow_listed_controls"
    }

    public init(mode: Mode = .enforced, abortOnFailure: Bool = false, allowList: [String] = [],
                denyList: [String] = [], changeOnlyEnvironments: Set<String> = ["production"],
                failOnMissingAllowListedControls: Bool = true) {
        self.mode = mode
        self.abortOnFailure = abortOnFailure
        self.allowList = allowList
        self.denyList = denyList
        self.changeOnlyEnvironments = changeOnlyEnvironments
        self.failOnMissingAllowListedControls = failOnMissingAllowListedControls
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ValidationPolicy()
        mode = try c.decodeIfPresent(Mode.self, forKey: .mode) ?? d.mode
        abortOnFailure = try c.decodeIfPresent(Bool.self, forKey: .abortOnFailure) ?? d.abortOnFailure
        allowList = try c.decodeIfPresent([String].self, forKey: .allowList) ?? d.allowList
        denyList = try c.decodeIfPresent([String].self, forKey: .denyList) ?? d.denyList
        changeOnlyEnvironments = try c.decodeIfPresent(Set<String>.self, forKey: .changeOnlyEnvironments)
            ?? d.changeOnlyEnvironments
        failOnMissingAllowListedControls = try c.decodeIfPresent(Bool.self, forKey: .failOnMissingAllowListedControls)
            ?? d.failOnMissingAllowListedControls
    }

    /// Whether a control with this ID counts towards the verdict (deny-list first, then allow-list).
    public func counts(controlID id: String) -> Bool {
        if denyList.contains(id) { return false }
        return allowList.isEmpty || allowList.contains(id)
    }

    /// The allow-list minus denied IDs, without duplicates, in the allow-list's order: what is
    /// passed to `--controls` and what must appear in the report.
    public var effectiveAllowList: [String] {
        var seen: Set<String> = []
        return allowList.filter { !denyList.contains($0) && seen.insert($0).inserted }
    }

    /// Whether to run validation at all after a converge.
    ///
    /// - Parameters:
    ///   - environment: the node's environment (Chef environment name), compared exactly.
    ///   - convergeChangedResources: how many resources the converge updated.
    /// - Returns: false only in a ``changeOnlyEnvironments`` environment after a converge that
    ///   changed nothing; true otherwise.
    public func shouldValidate(environment: String, convergeChangedResources: Int) -> Bool {
        guard changeOnlyEnvironments.contains(environment) else { return true }
        return convergeChangedResources > 0
    }
}
