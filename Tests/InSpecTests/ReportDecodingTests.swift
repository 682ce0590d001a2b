import Foundation
import Testing
@testable import InSpec

@Suite("json reporter model against real InSpec output")
struct ReportDecodingTests {
    @Test("json_output (InSpec 1.49.2): platform, profile, 4 controls, the failed result's message")
    func jsonOutput() throws {
        let r = try Fixture.jsonOutput()
        #expect(r.version == "1.49.2")
        #expect(r.platform == InSpecReport.Platform(name: "mac_os_x", release: "17.2.0", targetID: ""))
        #expect(r.statistics?.duration == 0.039182)
        #expect(r.profiles.count == 1)

        let p = try #require(r.profiles.first)
        #expect(p.name == "long_commands")
        #expect(p.version == "0.1.0")
        #expect(p.sha256 == "4f816f8cf18f165f05f1cf20936aaad06a15287de3f578891197647ca05c7df4")
        #expect(p.title == "InSpec Profile")
        #expect(p.copyrightEmail == "you@example.com")
        #expect(p.parentProfile == nil)
        #expect(p.status == nil)  // InSpec 1.x does not write profile status
        #expect(p.supports.count == 2)
        #expect(p.groups.map(\.id) == ["controls/example.rb", "controls/run_command.rb"])
        #expect(p.groups.first?.title == "sample section")
        #expect(p.groups.first?.controls == [Fixture.generated7, Fixture.tmp, Fixture.generated21])

        #expect(p.controls.map(\.id) == Fixture.jsonOutputIDs)
        #expect(p.controls.map(\.results.count) == [1, 1, 1, 1])
        #expect(p.controls.map { $0.results.first?.status } == [.passed, .passed, .failed, .passed])

        let tmp = p.controls[1]
        #expect(tmp.title == "Create /tmp directory")
        #expect(tmp.desc == "An optional description...")
        #expect(tmp.descriptions == [InSpecReport.ControlDescription(label: "default", data: "An optional description...")])
        #expect(tmp.impact == 0.7)
        #expect(tmp.sourceLocation?.line == 12)
        #expect(tmp.sourceLocation?.ref == "../inspec-demo/_test/long_commands/controls/example.rb")
        #expect(tmp.isAnonymous == false)

        let generated = p.controls[2]
        #expect(generated.isAnonymous)
        #expect(generated.title == nil)  // JSON null
        #expect(generated.desc == nil)
        #expect(generated.impact == 0.5)
        let failed = try #require(generated.results.first)
        #expect(failed.codeDesc == "gem package rubocop should be installed")
        #expect(failed.message == "rubocop is not installed")
        #expect(failed.runTime == 0.000168)
        #expect(failed.startTime == "2018-01-05 11:43:04 -0500")
        #expect(failed.resourceID == "gem package rubocop")
        #expect(failed.resourceParams == "")
        #expect(failed.skipMessage == nil)
        #expect(failed.exception == nil)
    }

    @Test("json_merged_output (InSpec 2.2.26): depends, tags of mixed types, integer impact, skipped result")
    func mergedOutput() throws {
        let r = try Fixture.mergedOutput()
        #expect(r.version == "2.2.26")
        #expect(r.platform?.release == "17.5.0")
        #expect(r.profiles.count == 1)

        let p = try #require(r.profiles.first)
        #expect(p.name == "wrapper-override")
        #expect(p.version == "0.6.1")
        #expect(p.title == "Linux Wrapper Child Profile")
        #expect(p.isDependency == false)
        #expect(p.depends == [InSpecReport.Dependency(
            name: "myprofile1z",
            url: "https://s3-eu-west-1.amazonaws.com/apop-bucket/profiles/myprofile1-1.0.0.tar.gz")])
        #expect(p.controls.map(\.id) == ["pro1-con1", "pro1-con2", "pro1-con4"])
        #expect(p.controls.map(\.impact) == [0.8, 0.999, 1.0])

        let con1 = p.controls[0]
        #expect(con1.tags["cce"] == .string("CCE-27072-8"))
        #expect(con1.tags["hosts"] == .null)
        #expect(con1.tags.count == 3)
        #expect(con1.results.first?.startTime == "2018-07-30T08:56:41-04:00")

        #expect(p.controls[1].refs.count == 1)

        let con4 = p.controls[2]
        #expect(con4.title == "Profile 1 - Control 3 - useless")
        let skipped = try #require(con4.results.first)
        #expect(skipped.status == .skipped)
        #expect(skipped.skipMessage == "Skipped control due to only_if condition.")
        #expect(skipped.resource == "Operating System Detection")
        #expect(skipped.runTime == 2.9e-05)
    }

    @Test("json_min_output: one entry per result, with profile id and sha256")
    func minOutput() throws {
        let r = try Fixture.minOutput()
        #expect(r.version == "1.49.2")
        #expect(r.statistics?.duration == 0.039182)
        #expect(r.controls.map(\.id) == Fixture.jsonOutputIDs)
        #expect(r.controls.map(\.status) == [.passed, .passed, .failed, .passed])
        #expect(Set(r.controls.compactMap(\.profileID)) == ["long_commands"])
        #expect(r.controls.allSatisfy {
            $0.profileSHA256 == "4f816f8cf18f165f05f1cf20936aaad06a15287de3f578891197647ca05c7df4"
        })
        #expect(r.controls[2].message == "rubocop is not installed")
        #expect(r.controls[2].codeDesc == "gem package rubocop should be installed")
        #expect(r.controls.filter { $0.message != nil }.count == 1)
    }

    @Test("encoding writes the upstream keys and decodes back to the same value")
    func roundTrip() throws {
        for original in [try Fixture.jsonOutput(), try Fixture.mergedOutput()] {
            let encoded = try JSONEncoder().encode(original)
            #expect(try InSpecReport.decode(from: encoded) == original)
            let text = String(decoding: encoded, as: UTF8.self)
            for key in ["\"code_desc\"", "\"run_time\"", "\"start_time\"", "\"target_id\"", "\"source_location\""] {
                #expect(text.contains(key), "missing \(key)")
            }
        }
        let min = try Fixture.minOutput()
        #expect(try InSpecMinReport.decode(from: JSONEncoder().encode(min)) == min)
    }

    @Test("keys from newer InSpec are read; unknown keys are ignored")
    func newerKeys() throws {
        let r = try report("""
        {"platform":{"name":"debian","release":"12.5","target_id":"c1"},
         "profiles":[
           {"name":"app","version":"1.0.0","sha256":"ab","status":"loaded","supports":[],"attributes":[],"groups":[],
            "waiver_data":{}, "some_future_key": [1,2,3],
            "controls":[{"id":"c","title":"t","desc":null,"impact":1,"refs":[],"tags":{"nist":["AC-1"]},"code":"",
                         "source_location":{"line":1,"ref":"controls/a.rb"},"status":"failed",
                         "results":[{"status":"error","code_desc":"File /x","run_time":0.1,"start_time":"2024-01-01T00:00:00+00:00",
                                     "exception":"Errno::EACCES","message":"Permission denied","backtrace":["a.rb:1"],
                                     "resource_class":"file","resource_id":"/x","future":true}]}]},
           {"name":"dep","parent_profile":"app","status":"skipped","status_message":"unsupported platform","controls":[]}],
         "statistics":{"duration":1.5,"controls":{"passed":{"total":0},"failed":{"total":1}}},
         "version":"7.1.16","passthrough":{"build":42,"ok":true,"tag":"x"}}
        """)
        #expect(r.platform?.targetID == "c1")
        #expect(r.profiles[0].status == InSpecReport.Profile.LoadStatus.loaded)
        #expect(r.profiles[1].parentProfile == "app")
        #expect(r.profiles[1].statusMessage == "unsupported platform")
        #expect(r.skippedProfiles.map(\.name) == ["dep"])
        #expect(r.statistics?.controls?.failed?.total == 1)
        #expect(r.passthrough == .object(["build": .number(42), "ok": .bool(true), "tag": .string("x")]))
        let c = r.profiles[0].controls[0]
        #expect(c.status == "failed")
        #expect(c.tags["nist"] == .array([.string("AC-1")]))
        let res = try #require(c.results.first)
        #expect(res.status == .error)
        #expect(res.exception == "Errno::EACCES")
        #expect(res.backtrace == ["a.rb:1"])
        #expect(res.resourceClass == "file")
    }

    @Test("missing optional keys and odd types in descriptive fields are tolerated")
    func lenient() throws {
        let r = try report("""
        {"profiles":[{"controls":[{"id":"bare","title":42,"impact":"high","tags":[],
                                   "results":[{"status":"passed"}]}]}]}
        """)
        #expect(r.platform == nil)
        #expect(r.version == nil)
        #expect(r.statistics == nil)
        let p = try #require(r.profiles.first)
        #expect(p.name == nil)
        #expect(p.supports.isEmpty && p.depends.isEmpty && p.groups.isEmpty)
        let c = try #require(p.controls.first)
        #expect(c.title == "42")
        #expect(c.impact == nil)
        #expect(c.tags.isEmpty)
        #expect(c.results.first?.codeDesc == "")
        #expect(r.controlVerdicts().map(\.outcome) == [.passed])

        // A profile with no controls key, a control with results: null.
        let empty = try report(#"{"profiles":[{"name":"a"},{"name":"b","controls":[{"id":"x","results":null}]}]}"#)
        #expect(empty.profiles[0].controls.isEmpty)
        #expect(empty.profiles[1].controls[0].results.isEmpty)
    }

    @Test("a result without status decodes as unknown status")
    func missingStatus() throws {
        let r = try report(#"{"profiles":[{"name":"a","controls":[{"id":"x","results":[{"code_desc":"d"}]}]}]}"#)
        #expect(r.profiles[0].controls[0].results[0].status == .other(""))
    }
}

@Suite("malformed reports fail with a matchable error")
struct MalformedReportTests {
    @Test("not JSON", arguments: ["", "   ", "Traceback (most recent call last)", "{\"profiles\": [", "\u{FEFF}garbage"])
    func notJSON(_ text: String) {
        let e = expectInSpecError(.notJSON) { _ = try InSpecReport.decode(from: Data(text.utf8)) }
        #expect(e?.message.contains("not JSON") == true)
        expectInSpecError(.notJSON) { _ = try InSpecMinReport.decode(from: Data(text.utf8)) }
    }

    @Test("JSON without a profiles array", arguments: [
        "{}", "[]", "null", "42", "\"x\"", #"{"profiles":null}"#, #"{"profiles":{"a":1}}"#, #"{"version":"5.0"}"#,
    ])
    func missingProfiles(_ text: String) {
        expectInSpecError(.missingProfiles) { _ = try InSpecReport.decode(from: Data(text.utf8)) }
    }

    @Test("json-min output given to the json decoder says so, and the other way round")
    func wrongReporter() throws {
        let min = try Fixture.data("json_min_output")
        let e = expectInSpecError(.missingProfiles) { _ = try InSpecReport.decode(from: min) }
        #expect(e?.message.contains("json-min") == true)

        let full = try Fixture.data("json_output")
        let e2 = expectInSpecError(.missingControls) { _ = try InSpecMinReport.decode(from: full) }
        #expect(e2?.message.contains("InSpecReport") == true)
    }

    @Test("a control without id or a result that is not an object is an invalid report, with its path")
    func invalidShape() {
        let e = expectInSpecError(.invalidReport) {
            _ = try report(#"{"profiles":[{"name":"a","controls":[{"title":"no id","results":[]}]}]}"#)
        }
        #expect(e?.message.contains("`id`") == true)
        #expect(e?.message.contains("profiles[0].controls[0]") == true)

        expectInSpecError(.invalidReport) {
            _ = try report(#"{"profiles":[{"name":"a","controls":[{"id":"x","results":["passed"]}]}]}"#)
        }
        expectInSpecError(.invalidReport) { _ = try report(#"{"profiles":["not a profile"]}"#) }
        expectInSpecError(.invalidReport) {
            _ = try InSpecMinReport.decode(from: Data(#"{"controls":[{"status":"passed"}]}"#.utf8))
        }
    }
}
