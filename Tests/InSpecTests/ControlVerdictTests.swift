import Foundation
import Testing
@testable import InSpec

@Suite("per-control verdicts")
struct ControlVerdictTests {
    @Test("outcome rule", arguments: [
        ([ResultStatus](), ControlOutcome.skipped),
        ([.passed], .passed),
        ([.passed, .passed], .passed),
        ([.skipped], .skipped),
        ([.skipped, .skipped], .skipped),
        ([.passed, .skipped], .passed),
        ([.passed, .failed], .failed),
        ([.skipped, .failed], .failed),
        ([.passed, .error], .failed),
        ([.error], .failed),
        ([.passed, .other("weird")], .failed),
    ])
    func rule(_ statuses: [ResultStatus], _ expected: ControlOutcome) {
        #expect(ControlOutcome(statuses: statuses) == expected)
    }

    @Test("json_output: 3 passed, 1 failed with its message")
    func jsonOutput() throws {
        let verdicts = try Fixture.jsonOutput().controlVerdicts()
        #expect(verdicts.map(\.id) == Fixture.jsonOutputIDs)
        #expect(verdicts.map(\.outcome) == [.passed, .passed, .failed, .passed])
        #expect(Set(verdicts.map(\.profile)) == ["long_commands"])
        #expect(VerdictSummary(verdicts) == VerdictSummary(passed: 3, failed: 1, skipped: 0))

        let failed = verdicts[2]
        #expect(failed.id == Fixture.generated21)
        #expect(failed.impact == 0.5)
        #expect(failed.title == nil)
        #expect(failed.messages == ["gem package rubocop should be installed: rubocop is not installed"])
        #expect(failed.resultCount == 1)
        #expect(verdicts[1].title == "Create /tmp directory")
        #expect(verdicts[1].messages.isEmpty)
    }

    @Test("json_merged_output: 2 passed, pro1-con4 skipped with its only_if message")
    func mergedOutput() throws {
        let verdicts = try Fixture.mergedOutput().controlVerdicts()
        #expect(verdicts.map(\.id) == ["pro1-con1", "pro1-con2", "pro1-con4"])
        #expect(verdicts.map(\.outcome) == [.passed, .passed, .skipped])
        #expect(VerdictSummary(verdicts) == VerdictSummary(passed: 2, failed: 0, skipped: 1))
        #expect(verdicts[2].messages == ["Skipped control due to only_if condition."])
        #expect(verdicts[2].impact == 1.0)
        #expect(verdicts[1].title == "Profile 1 - Control 2-updated")
    }

    @Test("json-min: results grouped back into controls, same verdicts as the json run")
    func minOutput() throws {
        let min = try Fixture.minOutput().controlVerdicts()
        let full = try Fixture.jsonOutput().controlVerdicts()
        #expect(min.map(\.id) == full.map(\.id))
        #expect(min.map(\.outcome) == full.map(\.outcome))
        #expect(min.map(\.messages) == full.map(\.messages))
        #expect(min.allSatisfy { $0.title == nil && $0.impact == nil && $0.profile == "long_commands" })

        // Several results of one control collapse into one verdict.
        let multi = InSpecMinReport(controls: [
            .init(id: "a", profileID: "p", status: .passed, codeDesc: "one"),
            .init(id: "b", profileID: "p", status: .skipped, codeDesc: "two", skipMessage: "only_if"),
            .init(id: "a", profileID: "p", status: .failed, codeDesc: "three", message: "nope"),
            .init(id: "a", profileID: "q", status: .passed, codeDesc: "same id, other profile"),
        ])
        let v = multi.controlVerdicts()
        #expect(v.map(\.id) == ["a", "b", "a"])
        #expect(v.map(\.profile) == ["p", "p", "q"])
        #expect(v.map(\.outcome) == [.failed, .skipped, .passed])
        #expect(v[0].resultCount == 2)
        #expect(v[0].messages == ["three: nope"])
        #expect(v[1].messages == ["only_if"])
    }

    @Test("error results and controls without results get explanatory messages")
    func messages() {
        let err = ControlVerdict(control: .init(id: "e", results: [
            .init(status: .passed, codeDesc: "ok"),
            .init(status: .error, codeDesc: "File /x", message: "Permission denied", exception: "Errno::EACCES"),
            .init(status: .other(""), codeDesc: "odd"),
        ]), profile: "p")
        #expect(err.outcome == .failed)
        #expect(err.messages == ["File /x: error: Errno::EACCES: Permission denied", "odd: result has no status"])

        let none = ControlVerdict(control: .init(id: "n"), profile: nil)
        #expect(none.outcome == .skipped)
        #expect(none.messages == ["no tests ran"])
        #expect(none.resultCount == 0)
    }
}

@Suite("de-duplication across wrapper and dependency profiles")
struct DependencyDedupTests {
    typealias Control = InSpecReport.Control
    typealias Profile = InSpecReport.Profile

    static func pass(_ d: String = "ok") -> InSpecReport.ControlResult { .init(status: .passed, codeDesc: d) }
    static func fail(_ m: String) -> InSpecReport.ControlResult { .init(status: .failed, codeDesc: "check", message: m) }

    /// The merged fixture (the wrapper's view) plus the dependency entry a plain json reporter
    /// would add: the same controls under `parent_profile`, with the dependency's own titles and
    /// results, and one control the wrapper did not include.
    static func wrapperWithDependency() throws -> InSpecReport {
        var r = try Fixture.mergedOutput()
        r.profiles.append(Profile(name: "myprofile1z", version: "1.0.0", title: "Profile 1",
                                  parentProfile: "wrapper-override", controls: [
            Control(id: "pro1-con1", title: "Profile 1 - Control 1", impact: 0.8, results: [pass()]),
            Control(id: "pro1-con2", title: "Profile 1 - Control 2", impact: 0.9, results: [fail("original failed")]),
            Control(id: "pro1-con3", title: "Profile 1 - Control 3", impact: 0.5, results: [fail("not included")]),
            Control(id: "pro1-con4", title: "Profile 1 - Control 3 - useless", impact: 1, results: []),
        ]))
        return r
    }

    @Test("the wrapper's view wins; controls only in the dependency are not counted")
    func wrapperWins() throws {
        let r = try Self.wrapperWithDependency()
        #expect(r.topLevelProfiles.map(\.name) == ["wrapper-override"])
        let v = r.controlVerdicts()
        #expect(v.map(\.id) == ["pro1-con1", "pro1-con2", "pro1-con4"])
        #expect(v.map(\.outcome) == [.passed, .passed, .skipped])
        #expect(Set(v.map(\.profile)) == ["wrapper-override"])
        #expect(v[1].title == "Profile 1 - Control 2-updated")
        #expect(v[1].impact == 0.999)
    }

    @Test("when the wrapper entry has no results, the dependency's results are used (as json-merged does)")
    func resultsFromDependency() throws {
        let r = InSpecReport(profiles: [
            Profile(name: "wrapper", controls: [
                Control(id: "a", title: "wrapper title", impact: 1.0, results: []),
                Control(id: "b", results: [Self.pass()]),
                Control(id: "own", results: []),
            ]),
            Profile(name: "dep", parentProfile: "wrapper", controls: [
                Control(id: "a", title: "dep title", impact: 0.3, results: [Self.fail("from dependency")]),
                Control(id: "b", results: [Self.fail("wrapper has its own results")]),
            ]),
        ])
        let v = r.controlVerdicts()
        #expect(v.map(\.id) == ["a", "b", "own"])
        #expect(v.map(\.outcome) == [.failed, .passed, .skipped])
        #expect(v[0].title == "wrapper title")
        #expect(v[0].impact == 1.0)
        #expect(v[0].messages == ["check: from dependency"])
        #expect(v[2].messages == ["no tests ran"])
    }

    @Test("dependencies of dependencies attach to the top-level ancestor")
    func nested() {
        let r = InSpecReport(profiles: [
            Profile(name: "top", controls: [Control(id: "x", results: [])]),
            Profile(name: "mid", parentProfile: "top", controls: [Control(id: "y", results: [Self.pass()])]),
            Profile(name: "leaf", parentProfile: "mid", controls: [Control(id: "x", results: [Self.fail("deep")])]),
        ])
        let v = r.controlVerdicts()
        #expect(v.map(\.id) == ["x"])
        #expect(v[0].outcome == .failed)
        #expect(v[0].profile == "top")
    }

    @Test("two top-level profiles keep their own controls; duplicates within one profile collapse")
    func severalTopLevel() {
        let r = InSpecReport(profiles: [
            Profile(name: "a", controls: [Control(id: "c", results: [Self.pass()]),
                                          Control(id: "c", results: [Self.fail("dup")])]),
            Profile(name: "b", controls: [Control(id: "c", results: [Self.fail("b's c")])]),
        ])
        let v = r.controlVerdicts()
        #expect(v.map(\.profile) == ["a", "b"])
        #expect(v.map(\.outcome) == [.passed, .failed])
    }

    @Test("a dangling parent_profile is treated as top-level; a parent cycle is not counted")
    func oddLinks() {
        let dangling = InSpecReport(profiles: [
            Profile(name: "orphan", parentProfile: "gone", controls: [Control(id: "o", results: [Self.fail("x")])]),
        ])
        #expect(dangling.controlVerdicts().map(\.outcome) == [.failed])

        let cycle = InSpecReport(profiles: [
            Profile(name: "top", controls: [Control(id: "t", results: [])]),
            Profile(name: "p", parentProfile: "q", controls: [Control(id: "t", results: [Self.fail("cycle")])]),
            Profile(name: "q", parentProfile: "p", controls: []),
        ])
        let v = cycle.controlVerdicts()
        #expect(v.map(\.id) == ["t"])
        #expect(v[0].outcome == .skipped)
    }
}
