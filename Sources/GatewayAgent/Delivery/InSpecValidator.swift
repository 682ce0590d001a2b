import Foundation
import InSpec
import LXD
import NIOCore
import NIOFoundationCompat

/// Runs InSpec profiles inside the container after a converge and turns the JSON report into a
/// verdict under the configured policy.
public struct InSpecValidator: Sendable {
    public var policy: ValidationPolicy
    /// Where profiles are pushed in the container.
    public var remoteDirectory = "/var/lib/iotgw/inspec"
    public var executable = "inspec"

    public init(policy: ValidationPolicy) { self.policy = policy }

    /// What one validation run found: the gate verdict per profile and every control's outcome.
    public struct Outcome: Sendable {
        public var verdicts: [String: Verdict] = [:]
        /// `profile/control-id` → `passed`, `failed` or `skipped`.
        public var controls: [String: String] = [:]
    }

    /// Validates each local profile directory; returns one verdict per profile.
    public func validate(_ container: String, profiles: [String], lxd: LXDClient) async throws -> [String: Verdict] {
        try await run(container, profiles: profiles, lxd: lxd).verdicts
    }

    /// Validates each local profile directory, keeping every control's outcome for the report.
    public func run(_ container: String, profiles: [String], lxd: LXDClient) async throws -> Outcome {
        var outcome = Outcome()
        for local in profiles {
            let name = (local as NSString).lastPathComponent
            let remote = "\(remoteDirectory)/\(name)"
            let report = "/tmp/iotgw-inspec-\(name).json"
            _ = try await lxd.exec(container, ["rm", "-rf", remote, report])
            try await lxd.pushTree(container, localDirectory: local, to: remote)
            let cmd = try InSpecCommand(executable: executable, profilePath: remote, reportPath: report, policy: policy)
            let run: ExecResult
            do {
                run = try await lxd.exec(container, cmd.arguments, timeout: .seconds(900))
            } catch let e as LXDError where e.code == .commandNotFound {
                outcome.verdicts[name] = .notRun(reason: "InSpec is not installed in \(container)", policy: policy)
                continue
            }
            var parsed: InSpecReport?
            do {
                let pulled = try await lxd.pull(container, path: report)
                parsed = try? InSpecReport.decode(from: Data(buffer: pulled.content))
            } catch where error.isLXDOutage {
                // No report because LXD went away is no verdict: never judge (and roll back) on it.
                throw error
            } catch {}
            outcome.verdicts[name] = evaluate(report: parsed, exitCode: InSpecExitCode(rawValue: run.exitCode), policy: policy)
            for c in parsed?.controlVerdicts() ?? [] { outcome.controls["\(name)/\(c.id)"] = c.outcome.rawValue }
        }
        return outcome
    }
}
