/// Running chef-client on a node: the command knife bootstrap uses and what its exit status means.
///
/// Exit codes: Chef RFC 062 as implemented in chef `lib/chef/application/exit_code.rb`
/// (`VALID_RFC_062_EXIT_CODES`), plus 172 from the license-acceptance gem, which chef-client
/// calls through `LicenseAcceptance::Acceptor.check_and_persist!` before it does anything else.
public enum ChefClientRun {
    /// `chef-client -j /etc/chef/first-boot.json [-l debug|trace] [-E env] --no-color`, as knife's
    /// `start_chef` builds it (with `--no-color` since there is no terminal).
    public static func command(chefClientPath: String = "chef-client", firstBootPath: String = BootstrapFiles.firstBootPath,
                               environment: String? = nil, logLevel: BootstrapFiles.LogLevel? = nil) -> [String] {
        var argv = [chefClientPath, "-j", firstBootPath]
        if let logLevel { argv += ["-l", logLevel.rawValue] }
        if let environment { argv += ["-E", environment] }
        argv.append("--no-color")
        return argv
    }

    /// The outcome of one chef-client run, from its exit status.
    public enum Outcome: Sendable, Hashable, CustomStringConvertible {
        /// 0: the run converged.
        case success
        /// 1 (`GENERIC_FAILURE`): the run failed (compile or converge error, server unreachable...).
        case failed
        /// 2 (`SIGINT_RECEIVED`).
        case interrupted
        /// 3 (`SIGTERM_RECEIVED`).
        case terminated
        /// 35 (`REBOOT_SCHEDULED`): the run asked for a reboot (`reboot` resource, `:request_reboot`).
        case rebootScheduled
        /// 37 (`REBOOT_NEEDED`): a reboot is pending before the run can complete.
        case rebootNeeded
        /// 41 (`REBOOT_FAILED`): the reboot chef-client initiated failed.
        case rebootFailed
        /// 42: audit mode failed after a successful converge (chef 12.x-14; retired, never reused).
        case auditFailed
        /// 43 (`CONFIG_FAILURE`): chef-client's configuration is invalid.
        case configurationFailed
        /// 172: the Chef license was not accepted (`chef_license "accept"` missing from client.rb).
        case licenseNotAccepted
        /// 173 (`LICENSE_NOT_ENTITLED`, newer chef-client builds): the license does not cover this use.
        case licenseNotEntitled
        /// 174 (`LICENSE_NOT_SET`, newer chef-client builds): no license key configured.
        case licenseNotSet
        /// 213 (`CLIENT_UPGRADED`): chef-client upgraded itself and exited; run it again.
        case clientUpgraded
        /// 255 (`DEPRECATED_FAILURE`, -1 on Windows): failure from chef-client before RFC 062.
        case deprecatedFailure
        /// 126/127 from the shell: chef-client is not installed or not executable.
        case notInstalled(Int32)
        /// Any other status: not one chef-client documents.
        case other(Int32)

        public init(exitCode: Int32) {
            switch exitCode {
            case 0: self = .success
            case 1: self = .failed
            case 2: self = .interrupted
            case 3: self = .terminated
            case 35: self = .rebootScheduled
            case 37: self = .rebootNeeded
            case 41: self = .rebootFailed
            case 42: self = .auditFailed
            case 43: self = .configurationFailed
            case 172: self = .licenseNotAccepted
            case 173: self = .licenseNotEntitled
            case 174: self = .licenseNotSet
            case 213: self = .clientUpgraded
            case 255, -1: self = .deprecatedFailure
            case 126, 127: self = .notInstalled(exitCode)
            default: self = .other(exitCode)
            }
        }

        public var exitCode: Int32 {
            switch self {
            case .success: 0
            case .failed: 1
            case .interrupted: 2
            case .terminated: 3
            case .rebootScheduled: 35
            case .rebootNeeded: 37
            case .rebootFailed: 41
            case .auditFailed: 42
            case .configurationFailed: 43
            case .licenseNotAccepted: 172
            case .licenseNotEntitled: 173
            case .licenseNotSet: 174
            case .clientUpgraded: 213
            case .deprecatedFailure: 255
            case .notInstalled(let c), .other(let c): c
            }
        }

        /// The node converged: success, or success that wants a reboot.
        public var converged: Bool {
            switch self {
            case .success, .rebootScheduled, .rebootNeeded: true
            default: false
            }
        }

        /// The node must be rebooted before the next run (scheduled, needed, or a failed attempt).
        public var needsReboot: Bool {
            switch self {
            case .rebootScheduled, .rebootNeeded, .rebootFailed: true
            default: false
            }
        }

        /// Running chef-client again, unchanged, may succeed (it was stopped or upgraded itself).
        public var worthRetrying: Bool {
            switch self {
            case .interrupted, .terminated, .clientUpgraded: true
            default: false
            }
        }

        public var description: String {
            switch self {
            case .success: "chef-client run succeeded"
            case .failed: "chef-client run failed"
            case .interrupted: "chef-client was interrupted (SIGINT)"
            case .terminated: "chef-client was terminated (SIGTERM)"
            case .rebootScheduled: "chef-client run succeeded and scheduled a reboot"
            case .rebootNeeded: "chef-client needs a reboot to complete"
            case .rebootFailed: "the reboot chef-client initiated failed"
            case .auditFailed: "chef-client converged but audit mode failed"
            case .configurationFailed: "chef-client configuration is invalid"
            case .licenseNotAccepted: "chef-client refused to run: Chef license not accepted (set chef_license \"accept\")"
            case .licenseNotEntitled: "chef-client refused to run: license not entitled"
            case .licenseNotSet: "chef-client refused to run: no license set"
            case .clientUpgraded: "chef-client upgraded itself; run it again"
            case .deprecatedFailure: "chef-client failed (legacy exit code -1/255)"
            case .notInstalled(let c): "chef-client is not installed or not executable (exit \(c))"
            case .other(let c): "chef-client exited with undocumented status \(c)"
            }
        }
    }
}
