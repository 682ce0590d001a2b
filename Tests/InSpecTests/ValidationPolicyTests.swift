import Foundation
import Testing
@testable import InSpec

@Suite("validation policy and verdicts")
struct ValidationPolicyTests {
    let enforced = ValidationPolicy(mode: .enforced)
    let reportOnly = ValidationPolicy(mode: .reportOnly)

    @Test("enforced: a failed control fails the gate and is listed with title, impact and message")
    func enforcedFails() throws {
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: enforced)
        #expect(v.status == .failed)
        #expect(!v.passed)
        #expect(v.enforced)
        #expect(v.blocksGate)
        #expect(!v.shouldAbort)
        #expect(v.exitCode == 100)
        #expect(v.summary == VerdictSummary(passed: 3, failed: 1, skipped: 0, ignored: 0))
        #expect(v.failingControls.map(\.id) == [Fixture.generated21])
        #expect(v.failingControls.first?.impact == 0.5)
        #expect(v.failingControls.first?.messages == ["gem package rubocop should be installed: rubocop is not installed"])
        #expect(v.missingControlIDs.isEmpty)
        #expect(v.explanation.hasPrefix("failed (enforced, blocks the gate): 3 passed, 1 failed, 0 skipped"))
        #expect(v.explanation.contains("rubocop is not installed"))
    }

    @Test("enforced with abortOnFailure asks the caller to stop the run")
    func abort() throws {
        let policy = ValidationPolicy(mode: .enforced, abortOnFailure: true)
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: policy)
        #expect(v.blocksGate && v.shouldAbort)
        let ok = evaluate(report: try Fixture.mergedOutput(), exitCode: .skippedTests, policy: policy)
        #expect(!ok.shouldAbort)
        let ro = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests,
                          policy: ValidationPolicy(mode: .reportOnly, abortOnFailure: true))
        #expect(!ro.shouldAbort)
    }

    @Test("report-only never fails the gate, not for failures and not for errors")
    func reportOnlyNeverBlocks() throws {
        let failed = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: reportOnly)
        #expect(failed.status == .failed)
        #expect(!failed.passed)
        #expect(!failed.enforced)
        #expect(!failed.blocksGate)
        #expect(failed.failingControls.count == 1)
        #expect(failed.explanation.hasPrefix("failed (report only, does not block)"))

        for code in [1, 2, 172, 174, 130] {
            let v = evaluate(report: nil, exitCode: InSpecExitCode(rawValue: code), policy: reportOnly)
            #expect(v.status == .error)
            #expect(!v.passed)
            #expect(!v.blocksGate)
        }
    }

    @Test("skipped controls do not fail: json_merged_output passes with one skipped")
    func skippedPasses() throws {
        let v = evaluate(report: try Fixture.mergedOutput(), exitCode: .skippedTests, policy: enforced)
        #expect(v.status == .passed)
        #expect(v.passed)
        #expect(!v.blocksGate)
        #expect(v.summary == VerdictSummary(passed: 2, failed: 0, skipped: 1))
        #expect(v.failingControls.isEmpty)
        #expect(v.explanation == "passed (enforced): 2 passed, 0 failed, 1 skipped")
    }

    @Test("json-min is evaluated the same way")
    func minReport() throws {
        let v = evaluate(minReport: try Fixture.minOutput(), exitCode: .failedTests, policy: enforced)
        #expect(v.status == .failed)
        #expect(v.summary == VerdictSummary(passed: 3, failed: 1, skipped: 0))
        #expect(v.failingControls.map(\.id) == [Fixture.generated21])
        #expect(evaluate(minReport: nil, exitCode: .normal, policy: enforced).status == .error)
    }

    @Test("deny-list: a denied failing control is ignored and the gate passes")
    func denyList() throws {
        let policy = ValidationPolicy(denyList: [Fixture.generated21])
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: policy)
        #expect(v.status == .passed)
        #expect(v.summary == VerdictSummary(passed: 3, failed: 0, skipped: 0, ignored: 1))
        #expect(v.explanation.contains("1 ignored by policy"))
        #expect(v.explanation.contains("inspec exited 100 but the report shows no failed control") == false)
    }

    @Test("allow-list: only listed controls count")
    func allowList() throws {
        let onlyTmp = ValidationPolicy(allowList: [Fixture.tmp])
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: onlyTmp)
        #expect(v.status == .passed)
        #expect(v.summary == VerdictSummary(passed: 1, failed: 0, skipped: 0, ignored: 3))

        let withFailing = ValidationPolicy(allowList: [Fixture.tmp, Fixture.generated21])
        let f = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: withFailing)
        #expect(f.status == .failed)
        #expect(f.failingControls.map(\.id) == [Fixture.generated21])
        #expect(f.summary == VerdictSummary(passed: 1, failed: 1, skipped: 0, ignored: 2))
    }

    @Test("precedence: an ID on both lists is ignored, and not passed to --controls")
    func precedence() throws {
        let both = ValidationPolicy(allowList: [Fixture.tmp, Fixture.generated21], denyList: [Fixture.generated21])
        #expect(both.counts(controlID: Fixture.tmp))
        #expect(!both.counts(controlID: Fixture.generated21))
        #expect(!both.counts(controlID: Fixture.generated7))
        #expect(both.effectiveAllowList == [Fixture.tmp])
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: both)
        #expect(v.status == .passed)
        #expect(v.missingControlIDs.isEmpty)
    }

    @Test("an allow-listed control missing from the report fails, unless the policy tolerates it")
    func missingAllowListed() throws {
        let strict = ValidationPolicy(allowList: [Fixture.tmp, "tmp-2.0"])
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .normal, policy: strict)
        #expect(v.status == .failed)
        #expect(v.blocksGate)
        #expect(v.failingControls.isEmpty)
        #expect(v.missingControlIDs == ["tmp-2.0"])
        #expect(v.explanation.contains("allow-listed controls not in the report: tmp-2.0"))

        var tolerant = strict
        tolerant.failOnMissingAllowListedControls = false
        let t = evaluate(report: try Fixture.jsonOutput(), exitCode: .normal, policy: tolerant)
        #expect(t.status == .passed)
        #expect(t.missingControlIDs == ["tmp-2.0"])
    }

    @Test("the report decides: exit 0 with a failed control in the report is still a failure")
    func reportIsAuthoritative() throws {
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .normal, policy: enforced)
        #expect(v.status == .failed)
        let note = evaluate(report: try Fixture.mergedOutput(), exitCode: .failedTests, policy: enforced)
        #expect(note.status == .passed)
        #expect(note.explanation.contains("inspec exited 100 but the report shows no failed control"))
    }

    @Test("license and other non-test exit codes are errors with a clear message", arguments: [
        (172, "InSpec license not accepted: pass --chef-license accept-silent (exit 172)"),
        (173, "InSpec license does not entitle this use (exit 173)"),
        (174, "InSpec license not set"),
        (1, "usage or general error"),
        (2, "plugin error"),
        (3, "deprecation"),
        (4, "gem dependency"),
        (5, "signature did not verify"),
        (6, "signature required"),
        (130, "interrupted"),
        (201, "could not find a gem dependency"),
        (127, "command not found"),
    ])
    func errors(_ code: Int, _ text: String) throws {
        // Even with a report that passes (a stale file), a non-test exit status is an error.
        for report in [nil, try Fixture.mergedOutput()] {
            let v = evaluate(report: report, exitCode: InSpecExitCode(rawValue: code), policy: enforced)
            #expect(v.status == .error)
            #expect(!v.passed)
            #expect(v.blocksGate)
            #expect(v.exitCode == code)
            #expect(v.explanation.contains(text), "\(v.explanation)")
        }
        let bare = evaluate(report: nil, exitCode: InSpecExitCode(rawValue: code), policy: enforced)
        #expect(bare.explanation.hasPrefix("error (enforced, blocks the gate): "))
        #expect(!bare.explanation.contains("0 passed"))
    }

    @Test("exit 0 without a report is an error")
    func noReport() {
        let v = evaluate(report: nil, exitCode: .normal, policy: enforced)
        #expect(v.status == .error)
        #expect(v.explanation.contains("no report"))
    }

    @Test("a profile that failed to load is an error; a skipped profile is noted")
    func profileStatus() throws {
        let failedLoad = try report("""
        {"profiles":[{"name":"app","status":"failed","status_message":"cannot load controls/a.rb: syntax error","controls":[]}]}
        """)
        let v = evaluate(report: failedLoad, exitCode: .normal, policy: enforced)
        #expect(v.status == .error)
        #expect(v.explanation.contains("profile app failed to load: cannot load controls/a.rb: syntax error"))

        let skipped = try report("""
        {"profiles":[{"name":"app","status":"skipped","skip_message":"Skipping profile: 'app' on unsupported platform: 'alpine/3.19'.","controls":[]}]}
        """)
        let s = evaluate(report: skipped, exitCode: .skippedTests, policy: enforced)
        #expect(s.status == .passed)
        #expect(s.explanation.contains("profile app was skipped: Skipping profile"))
        #expect(s.explanation.contains("no control counted"))
    }

    @Test("production validates only after a converge that changed something")
    func environments() {
        let p = ValidationPolicy()
        #expect(!p.shouldValidate(environment: "production", convergeChangedResources: 0))
        #expect(p.shouldValidate(environment: "production", convergeChangedResources: 3))
        #expect(p.shouldValidate(environment: "staging", convergeChangedResources: 0))
        #expect(p.shouldValidate(environment: "_default", convergeChangedResources: 0))
        #expect(p.shouldValidate(environment: "Production", convergeChangedResources: 0))  // exact names

        let always = ValidationPolicy(changeOnlyEnvironments: [])
        #expect(always.shouldValidate(environment: "production", convergeChangedResources: 0))

        let v = Verdict.notRun(reason: "production converge changed nothing", policy: p)
        #expect(v.status == .notRun)
        #expect(!v.passed && !v.blocksGate && !v.shouldAbort)
        #expect(v.explanation == "validation not run: production converge changed nothing")
    }

    @Test("policy from configuration JSON: snake_case keys, defaults for missing ones")
    func codable() throws {
        let decoded = try JSONDecoder().decode(ValidationPolicy.self, from: Data("""
        {"mode":"report_only","deny_list":["flaky"]}
        """.utf8))
        #expect(decoded == ValidationPolicy(mode: .reportOnly, denyList: ["flaky"]))
        #expect(try JSONDecoder().decode(ValidationPolicy.self, from: Data("{}".utf8)) == ValidationPolicy())

        let full = ValidationPolicy(mode: .enforced, abortOnFailure: true, allowList: ["a"], denyList: ["b"],
                                    changeOnlyEnvironments: ["prod", "production"], failOnMissingAllowListedControls: false)
        let data = try JSONEncoder().encode(full)
        #expect(try JSONDecoder().decode(ValidationPolicy.self, from: data) == full)
        let text = String(decoding: data, as: UTF8.self)
        for key in ["abort_on_failure", "allow_list", "deny_list", "change_only_environments",
                    "fail_on_missing_allow_listed_controls"] {
            #expect(text.contains(key))
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(ValidationPolicy.self, from: Data(#"{"mode":"lenient"}"#.utf8))
        }
    }

    @Test("the verdict encodes with snake_case keys")
    func verdictEncoding() throws {
        let v = evaluate(report: try Fixture.jsonOutput(), exitCode: .failedTests, policy: enforced)
        let data = try JSONEncoder().encode(v)
        #expect(try JSONDecoder().decode(Verdict.self, from: data) == v)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"failing_controls\""))
        #expect(text.contains("\"exit_code\":100"))
    }
}
