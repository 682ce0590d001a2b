import Testing
@testable import InSpec

@Suite("inspec exec argv")
struct InSpecCommandTests {
    @Test("the documented argv, without --controls when there is no allow-list")
    func basic() throws {
        let c = try InSpecCommand(profilePath: "/opt/iotgw/inspec/sensor-agent", reportPath: "/tmp/iotgw-inspec.json")
        #expect(c.arguments == [
            "inspec", "exec", "/opt/iotgw/inspec/sensor-agent",
            "--reporter", "json:/tmp/iotgw-inspec.json",
            "--chef-license", "accept-silent", "--no-color", "--no-create-lockfile",
        ])
        let p = try InSpecCommand(profilePath: "p", reportPath: "/tmp/r.json", policy: ValidationPolicy())
        #expect(!p.arguments.contains("--controls"))
    }

    @Test("--controls comes last and carries the allow-list minus denied IDs")
    func controls() throws {
        let policy = ValidationPolicy(allowList: ["sensor-agent-01", "sensor-agent-02", "sensor-agent-01", "x"],
                                      denyList: ["x"])
        let c = try InSpecCommand(executable: "/opt/inspec/bin/inspec", profilePath: "/p", reportPath: "/tmp/r.json",
                                  policy: policy)
        #expect(c.arguments.first == "/opt/inspec/bin/inspec")
        #expect(Array(c.arguments.suffix(3)) == ["--controls", "sensor-agent-01", "sensor-agent-02"])
        #expect(c.arguments.count == 12)
    }

    @Test("arguments InSpec would misparse are rejected")
    func invalid() {
        expectInSpecError(.invalidArgument) { _ = try InSpecCommand(profilePath: "", reportPath: "/r.json") }
        expectInSpecError(.invalidArgument) { _ = try InSpecCommand(profilePath: "--help", reportPath: "/r.json") }
        expectInSpecError(.invalidArgument) { _ = try InSpecCommand(profilePath: "/p", reportPath: "") }
        expectInSpecError(.invalidArgument) { _ = try InSpecCommand(profilePath: "/p", reportPath: "-") }
        expectInSpecError(.invalidArgument) { _ = try InSpecCommand(profilePath: "/p", reportPath: "/tmp/a b.json") }
        expectInSpecError(.invalidArgument) {
            _ = try InSpecCommand(profilePath: "/p", reportPath: "/r.json", controls: ["--no-color"])
        }
        expectInSpecError(.invalidArgument) { _ = try InSpecCommand(profilePath: "/p", reportPath: "/r.json", controls: [""]) }
        expectInSpecError(.invalidArgument) { _ = try InSpecCommand(executable: "", profilePath: "/p", reportPath: "/r") }
    }
}
