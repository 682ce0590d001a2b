/// The argv for running one profile with `inspec exec` inside a container:
///
/// ```
/// inspec exec PROFILE --reporter json:REPORT --chef-license accept-silent --no-color --no-create-lockfile [--controls ID...]
/// ```
///
/// - `--reporter json:REPORT` writes the report to a file and, since a reporter is given,
///   prints nothing else (the default `cli` reporter is not added); read the file back and
///   decode it with ``InSpecReport/decode(from:)``.
/// - `--chef-license accept-silent`: InSpec ≥ 4 exits 172 without it.
/// - `--no-color`: plain stderr for logs.
/// - `--no-create-lockfile`: do not write `inspec.lock` into the (pushed, throwaway) profile.
/// - `--controls ID...` only when the policy has an allow-list (minus denied IDs); it is last,
///   because it takes every following argument. InSpec treats a value wrapped in `/.../` as a
///   regular expression; plain IDs match exactly.
///
/// `--no-distinct-exit` is deliberately not passed, so exit 100/101 keep their meaning
/// (``InSpecExitCode``). The argv runs without a shell: nothing needs quoting.
public struct InSpecCommand: Sendable, Hashable {
    /// The InSpec executable, `inspec` (resolved on `PATH`) unless told otherwise.
    public var executable: String
    /// The profile directory (or archive) inside the container.
    public var profilePath: String
    /// Where the json report is written inside the container.
    public var reportPath: String
    /// Control IDs for `--controls`; empty runs every control.
    public var controls: [String]

    /// - Throws: ``InSpecError`` `.invalidArgument` for an empty path, a report path InSpec would
    ///   misread, or a control ID that InSpec's option parser would take for an option.
    public init(executable: String = "inspec", profilePath: String, reportPath: String, controls: [String] = []) throws {
        guard !executable.isEmpty else {
            throw InSpecError(code: .invalidArgument, message: "empty InSpec executable")
        }
        guard !profilePath.isEmpty, !profilePath.hasPrefix("-") else {
            throw InSpecError(code: .invalidArgument, message: "invalid profile path \(profilePath.debugDescription)")
        }
        // The reporter value is `name:path`, and several reporters are separated by spaces.
        guard !reportPath.isEmpty, !reportPath.contains(" "), reportPath != "-" else {
            throw InSpecError(code: .invalidArgument, message: "invalid report path \(reportPath.debugDescription)")
        }
        for id in controls where id.isEmpty || id.hasPrefix("-") {
            throw InSpecError(code: .invalidArgument,
                              message: "control ID \(id.debugDescription) cannot be passed to --controls")
        }
        self.executable = executable
        self.profilePath = profilePath
        self.reportPath = reportPath
        self.controls = controls
    }

    /// The command for `policy`: `--controls` gets the policy's ``ValidationPolicy/effectiveAllowList``.
    public init(executable: String = "inspec", profilePath: String, reportPath: String,
                policy: ValidationPolicy) throws {
        try self.init(executable: executable, profilePath: profilePath, reportPath: reportPath,
                      controls: policy.effectiveAllowList)
    }

    /// The full argv, executable first.
    public var arguments: [String] {
        var argv = [
            executable, "exec", profilePath,
            "--reporter", "json:\(reportPath)",
            "--chef-license", "accept-silent",
            "--no-color",
            "--no-create-lockfile",
        ]
        if !controls.isEmpty {
            argv.append("--controls")
            argv += controls
        }
        return argv
    }
}
