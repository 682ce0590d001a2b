import LXD

/// What one converge did.
public struct ConvergeOutcome: Sendable, Equatable, Codable {
    public var succeeded: Bool
    /// Resources the run changed (drives "validate only when something changed" in production).
    public var changedResources: Int
    public var exitCode: Int
    /// One line for the owner and the vendor, e.g. "chef-client: run failed (exit 1)".
    public var summary: String
    /// The tail of the tool's output, for the report.
    public var outputTail: String
}

/// A configuration-management tool that installs a vendor's apps inside its container.
/// Implementations work only through LXD's file and exec APIs: nothing inbound is ever needed.
public protocol Provisioner: Sendable {
    /// `chef` or `ansible`.
    var name: String { get }
    /// Writes what the tool needs in the container (idempotent; installs the tool if configured to).
    func bootstrap(_ container: String, lxd: LXDClient) async throws
    /// Runs one converge.
    func converge(_ container: String, lxd: LXDClient) async throws -> ConvergeOutcome
}

extension LXDClient {
    /// Whether `command` is on the container's PATH. The probe never exits 127: LXD 5.0 turns any
    /// exit 127, even a shell's "not found", into a failed "Command not found" operation.
    func hasCommand(_ container: String, _ command: String) async throws -> Bool {
        try await exec(container, ["sh", "-c", "command -v \"$1\" >/dev/null 2>&1 || exit 3", "sh", command],
                       captureOutput: false).exitCode == 0
    }
}

extension ExecResult {
    /// The last `lines` lines of stdout and stderr, for reports.
    func tail(_ lines: Int = 20) -> String {
        (stdout + stderr).split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}
