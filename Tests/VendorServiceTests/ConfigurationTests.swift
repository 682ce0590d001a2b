import Foundation
import GatewayProtocol
import Testing
@testable import VendorService

@Suite("Configuration")
struct ConfigurationTests {
    static let example = """
        vendor: acme                      # vendor id: [a-z][a-z0-9-]{0,30}
        listen: {host: 127.0.0.1, port: 8470}
        database: /var/lib/iot-daemon/acme.sqlite
        signingKey: /etc/iot-daemon/acme.key
        planTTLSeconds: 86400
        image: {alias: iotgw-debian12, fingerprint: \(String(repeating: "0f", count: 32))}
        container: {cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300, network: nat}
        models:
          - {name: thermo-v1, vendorID: "0403", productID: "6001", devicePath: /dev/ttyUSB0, kind: unix-char, apps: [thermo-agent]}
        apps:
          - {name: thermo-agent, version: 1.0.0, runList: ["recipe[thermo_agent]"], inspecProfile: thermo-agent}
        """

    /// The example with one line replaced (matched by its prefix).
    static func example(replacing prefix: String, with line: String) -> String {
        example.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces).hasPrefix(prefix) ? line : String($0) }
            .joined(separator: "\n")
    }

    static func refusal(_ yaml: String) -> ConfigurationError? {
        do {
            _ = try VendorConfiguration.parse(yaml: yaml)
            return nil
        } catch let error as ConfigurationError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func parsesTheDocumentedExample() throws {
        let c = try VendorConfiguration.parse(yaml: Self.example)
        #expect(c.vendor == "acme")
        #expect(c.listen == .init(host: "127.0.0.1", port: 8470))
        #expect(c.planTTLSeconds == 86_400)
        #expect(c.container.limits == ResourceLimits(cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300))
        #expect(c.container.network == .nat)
        #expect(c.models == [.init(name: "thermo-v1", vendorID: "0403", productID: "6001", devicePath: "/dev/ttyUSB0", kind: .unixChar,
                                   apps: ["thermo-agent"])])
        #expect(c.apps == [AppSpec(name: "thermo-agent", version: "1.0.0", runList: ["recipe[thermo_agent]"], inspecProfile: "thermo-agent")])
    }

    @Test func planTTLDefaultsToOneDay() throws {
        let yaml = Self.example.split(separator: "\n").filter { !$0.hasPrefix("planTTLSeconds") }.joined(separator: "\n")
        #expect(try VendorConfiguration.parse(yaml: yaml).planTTLSeconds == 86_400)
    }

    @Test(arguments: ["Acme", "1acme", "ac_me", "", String(repeating: "a", count: 32)])
    func refusesBadVendorIDs(_ vendor: String) {
        let error = Self.refusal(Self.example(replacing: "vendor:", with: "vendor: \"\(vendor)\""))
        #expect(error?.code == .invalidField)
        #expect(error?.field == "vendor")
    }

    @Test func acceptsLongestVendorID() throws {
        let vendor = "a" + String(repeating: "-9", count: 15)
        #expect(try VendorConfiguration.parse(yaml: Self.example(replacing: "vendor:", with: "vendor: \(vendor)")).vendor == vendor)
    }

    @Test(arguments: ["abc", String(repeating: "g", count: 64), String(repeating: "a", count: 63)])
    func refusesBadFingerprints(_ fingerprint: String) {
        let error = Self.refusal(Self.example(replacing: "image:", with: "image: {alias: iotgw-debian12, fingerprint: \(fingerprint)}"))
        #expect(error?.field == "image.fingerprint")
    }

    @Test func refusesModelWithUnknownApp() {
        let error = Self.refusal(Self.example(
            replacing: "- {name: thermo-v1",
            with: "  - {name: thermo-v1, vendorID: \"0403\", productID: \"6001\", devicePath: /dev/ttyUSB0, kind: unix-char, apps: [nope]}"
        ))
        #expect(error?.code == .invalidField)
        #expect(error?.field == "models[0].apps")
        #expect(error?.message.contains("nope") == true)
    }

    @Test func refusesBadUSBIDs() {
        let error = Self.refusal(Self.example(
            replacing: "- {name: thermo-v1",
            with: "  - {name: thermo-v1, vendorID: \"04x3\", productID: \"6001\", devicePath: /dev/ttyUSB0, kind: unix-char}"
        ))
        #expect(error?.field == "models[0].vendorID")
    }

    @Test func refusesUnixCharWithoutDevPath() {
        let error = Self.refusal(Self.example(
            replacing: "- {name: thermo-v1",
            with: "  - {name: thermo-v1, vendorID: \"0403\", productID: \"6001\", devicePath: /tmp/x, kind: unix-char}"
        ))
        #expect(error?.field == "models[0].devicePath")
    }

    @Test func refusesLimitsBelowWhatGatewaysAccept() {
        let error = Self.refusal(Self.example(
            replacing: "container:", with: "container: {cpus: 1, memoryMiB: 8, diskMiB: 2048, processes: 300, network: nat}"
        ))
        #expect(error?.field == "container.memoryMiB")
    }

    @Test func namesAMissingField() {
        let yaml = Self.example.split(separator: "\n").filter { !$0.hasPrefix("signingKey") }.joined(separator: "\n")
        let error = Self.refusal(yaml)
        #expect(error?.code == .malformed)
        #expect(error?.field == "signingKey")
    }

    @Test func namesAWronglyTypedField() {
        let error = Self.refusal(Self.example(replacing: "listen:", with: "listen: {host: 127.0.0.1, port: eighty}"))
        #expect(error?.code == .malformed)
        #expect(error?.field == "listen.port")
    }

    @Test func refusesUnknownNetwork() {
        let error = Self.refusal(Self.example(
            replacing: "container:", with: "container: {cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300, network: host}"
        ))
        #expect(error?.field == "container.network")
    }

    @Test func refusesDuplicateApps() {
        let yaml = Self.example + "\n  - {name: thermo-agent, version: 2.0.0, runList: [\"recipe[x]\"]}"
        #expect(Self.refusal(yaml)?.field == "apps[1].name")
    }

    @Test func publicHostsAreOptional() throws {
        #expect(try VendorConfiguration.parse(yaml: Self.example).publicHosts == nil)
        let yaml = Self.example + "\npublicHosts: [iot.acme.example, 10.0.3.1]"
        #expect(try VendorConfiguration.parse(yaml: yaml).publicHosts == ["iot.acme.example", "10.0.3.1"])
    }

    @Test(arguments: ["[Iot.acme.example]", "[iot.acme.example:8470]", "[\"\"]", "[]", "[iot..acme]", "[-iot.acme]", "[\"iot acme\"]",
                      "[\"https://iot.acme.example\"]"])
    func refusesBadPublicHosts(_ hosts: String) {
        let error = Self.refusal(Self.example + "\npublicHosts: \(hosts)")
        #expect(error?.code == .invalidField)
        #expect(error?.field?.hasPrefix("publicHosts") == true)
    }

    /// Fields gateways would refuse in a plan are refused in the configuration already.
    @Test(arguments: [
        ("- {name: thermo-agent", "  - {name: thermo-agent, version: \"1 0\", runList: [\"recipe[thermo_agent]\"]}", "apps[0].version"),
        ("- {name: thermo-agent", "  - {name: thermo-agent, version: 1.0.0, runList: [thermo_agent]}", "apps[0].runList"),
        ("- {name: thermo-agent", "  - {name: thermo-agent, version: 1.0.0, runList: [\"recipe[x] \"]}", "apps[0].runList"),
        ("- {name: thermo-agent", "  - {name: -thermo, version: 1.0.0, runList: [\"recipe[x]\"]}", "apps[0].name"),
        ("- {name: thermo-agent", "  - {name: thermo-agent, version: 1.0.0, runList: [\"recipe[x]\"], inspecProfile: ..}", "apps[0].inspecProfile"),
        ("- {name: thermo-v1", "  - {name: thermo-v1, vendorID: \"0403\", productID: \"6001\", devicePath: /dev/null, kind: unix-char}",
         "models[0].devicePath"),
        ("- {name: thermo-v1", "  - {name: thermo-v1, vendorID: \"0403\", productID: \"6001\", devicePath: /dev/../etc/shadow, kind: unix-char}",
         "models[0].devicePath"),
        ("- {name: thermo-v1", "  - {name: thermo-v1, vendorID: \"0403\", productID: \"6001\", devicePath: /dev/\(String(repeating: "t", count: 40)), kind: unix-char}",
         "models[0].devicePath"),
        ("image:", "image: {alias: .hidden, fingerprint: \(String(repeating: "0f", count: 32))}", "image.alias"),
        ("container:", "container: {cpus: 4096, memoryMiB: 256, diskMiB: 2048, processes: 300, network: nat}", "container.cpus"),
    ])
    func refusesWhatGatewaysWouldRefuse(_ prefix: String, _ line: String, _ field: String) {
        let error = Self.refusal(Self.example(replacing: prefix, with: line))
        #expect(error?.code == .invalidField)
        #expect(error?.field == field)
    }

    @Test func ansibleAppNamesMustMakeVariableNames() async throws {
        try await withTemporaryFolder { folder in
            try "- hosts: localhost\n".write(to: folder.appendingPathComponent("site.yml"), atomically: true, encoding: .utf8)
            let ansible = "\nansible: {playbookDirectory: \(folder.path)}"
            #expect(try VendorConfiguration.parse(yaml: Self.example + ansible).ansible?.playbookDirectory == folder.path)
            let digit = Self.example.replacingOccurrences(of: "thermo-agent", with: "9thermo") + ansible
            #expect(Self.refusal(digit)?.field == "apps[0].name")
        }
    }

    @Test func loadResolvesRelativePathsAgainstTheFile() async throws {
        try await withTemporaryFolder { folder in
            let yaml = Self.example(replacing: "database:", with: "database: data/acme.sqlite")
                .replacingOccurrences(of: "signingKey: /etc/iot-daemon/acme.key", with: "signingKey: acme.key")
            let file = folder.appendingPathComponent("vendor.yaml")
            try yaml.write(to: file, atomically: true, encoding: .utf8)
            let c = try VendorConfiguration.load(from: file.path)
            #expect(c.database == folder.appendingPathComponent("data/acme.sqlite").standardizedFileURL.path)
            #expect(c.signingKey == folder.appendingPathComponent("acme.key").standardizedFileURL.path)
        }
    }

    @Test func loadNamesTheFileInErrors() async throws {
        try await withTemporaryFolder { folder in
            let file = folder.appendingPathComponent("vendor.yaml")
            try Self.example(replacing: "vendor:", with: "vendor: ACME").write(to: file, atomically: true, encoding: .utf8)
            let error = #expect(throws: ConfigurationError.self) { try VendorConfiguration.load(from: file.path) }
            #expect(error?.description == "\(file.path): vendor: \"ACME\" must match [a-z][a-z0-9-]{0,30}")
            #expect(throws: ConfigurationError.self) { try VendorConfiguration.load(from: folder.appendingPathComponent("none.yaml").path) }
        }
    }
}
