/// The exit status of `inspec exec`, from the `EXIT_*` constants in InSpec's
/// `lib/inspec/ui.rb` (authoritative; one paragraph of the CLI docs swaps 100 and 101).
///
/// With `--no-distinct-exit` InSpec collapses test failures to 1; ``InSpecCommand`` never
/// passes that flag, so 1 always means the run itself went wrong.
public enum InSpecExitCode: Sendable, Hashable, CustomStringConvertible {
    /// 0: every control passed (`EXIT_NORMAL`).
    case normal
    /// 100: at least one control failed (`EXIT_FAILED_TESTS`).
    case failedTests
    /// 101: at least one control skipped and none failed (`EXIT_SKIPPED_TESTS`).
    case skippedTests
    /// 1: usage or general error, e.g. the profile did not load (`EXIT_USAGE_ERROR`).
    case usageError
    /// 2: a plugin failed (`EXIT_PLUGIN_ERROR`).
    case pluginError
    /// 3: a deprecation configured as fatal was hit (`EXIT_FATAL_DEPRECATION`).
    case fatalDeprecation
    /// 4: a gem dependency failed to load (`EXIT_GEM_DEPENDENCY_LOAD_ERROR`).
    case gemDependencyLoadError
    /// 5: a signed profile's signature did not verify (`EXIT_BAD_SIGNATURE`).
    case badSignature
    /// 6: signature verification is required and the profile is unsigned (`EXIT_SIGNATURE_REQUIRED`).
    case signatureRequired
    /// 130: interrupted with Ctrl-C (`EXIT_TERMINATED_BY_CTL_C`).
    case terminatedByCtrlC
    /// 172: the Chef license was not accepted (`EXIT_LICENSE_NOT_ACCEPTED`).
    case licenseNotAccepted
    /// 173: the license does not entitle this use (`EXIT_LICENSE_NOT_ENTITILED`, sic upstream).
    case licenseNotEntitled
    /// 174: no license key is set (`EXIT_LICENSE_NOT_SET`).
    case licenseNotSet
    /// 201: a gem dependency was not found (`EXIT_GEM_DEPENDENCY_NOT_FOUND`).
    case gemDependencyNotFound
    /// Any other status (a shell's 126/127, a signal, a newer InSpec's new code), kept as is.
    case other(Int)

    /// Maps a process exit status; unknown values become ``other(_:)``.
    public init(rawValue: Int) {
        switch rawValue {
        case 0: self = .normal
        case 100: self = .failedTests
        case 101: self = .skippedTests
        case 1: self = .usageError
        case 2: self = .pluginError
        case 3: self = .fatalDeprecation
        case 4: self = .gemDependencyLoadError
        case 5: self = .badSignature
        case 6: self = .signatureRequired
        case 130: self = .terminatedByCtrlC
        case 172: self = .licenseNotAccepted
        case 173: self = .licenseNotEntitled
        case 174: self = .licenseNotSet
        case 201: self = .gemDependencyNotFound
        default: self = .other(rawValue)
        }
    }

    /// The process exit status.
    public var rawValue: Int {
        switch self {
        case .normal: 0
        case .failedTests: 100
        case .skippedTests: 101
        case .usageError: 1
        case .pluginError: 2
        case .fatalDeprecation: 3
        case .gemDependencyLoadError: 4
        case .badSignature: 5
        case .signatureRequired: 6
        case .terminatedByCtrlC: 130
        case .licenseNotAccepted: 172
        case .licenseNotEntitled: 173
        case .licenseNotSet: 174
        case .gemDependencyNotFound: 201
        case .other(let code): code
        }
    }

    // `.other(100)` and `.failedTests` are the same exit status.
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.rawValue == rhs.rawValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }

    /// True for 0, 100 and 101: the tests ran and a report was written.
    public var testsRan: Bool {
        switch self {
        case .normal, .failedTests, .skippedTests: true
        default: false
        }
    }

    /// True for 172, 173 and 174.
    public var isLicenseError: Bool {
        switch self {
        case .licenseNotAccepted, .licenseNotEntitled, .licenseNotSet: true
        default: false
        }
    }

    /// What the status means, with the fix where there is an obvious one.
    public var explanation: String {
        switch self {
        case .normal: "all controls passed"
        case .failedTests: "at least one control failed"
        case .skippedTests: "at least one control was skipped and none failed"
        case .usageError: "InSpec usage or general error (e.g. the profile failed to load)"
        case .pluginError: "InSpec plugin error"
        case .fatalDeprecation: "InSpec hit a deprecation configured as fatal"
        case .gemDependencyLoadError: "InSpec could not load a gem dependency"
        case .badSignature: "profile signature did not verify"
        case .signatureRequired: "profile signature required but the profile is unsigned"
        case .terminatedByCtrlC: "InSpec was interrupted (SIGINT)"
        case .licenseNotAccepted: "InSpec license not accepted: pass --chef-license accept-silent"
        case .licenseNotEntitled: "InSpec license does not entitle this use"
        case .licenseNotSet: "InSpec license not set: configure a license key (inspec license add)"
        case .gemDependencyNotFound: "InSpec could not find a gem dependency"
        case .other(127): "inspec exited with status 127: command not found (is InSpec installed?)"
        case .other(126): "inspec exited with status 126: command not executable"
        case .other(let code): "inspec exited with unexpected status \(code)"
        }
    }

    public var description: String { "\(rawValue) (\(explanation))" }
}
