import Foundation
import GatewayProtocol
import Testing
@testable import VendorService

@Suite("Configuration: chef section")
struct ChefConfigurationTests {
    static let chef = """
        chef:
          serverURL: http://127.0.0.1:4545
          containerServerURL: http://10.0.3.1:4545
          organization: null
          adminName: admin
          adminKey: keys/admin.pem
          environment: null
        """

    static func yaml(_ chef: String = chef) -> String { ConfigurationTests.example + "\n" + chef }

    static func chef(replacing key: String, with value: String) -> String {
        chef.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces).hasPrefix(key + ":") ? "  \(key): \(value)" : String($0) }
            .joined(separator: "\n")
    }

    @Test func isOptional() throws {
        #expect(try VendorConfiguration.parse(yaml: ConfigurationTests.example).chef == nil)
    }

    @Test func parsesTheDocumentedSection() throws {
        let chef = try #require(try VendorConfiguration.parse(yaml: Self.yaml()).chef)
        #expect(chef == .init(serverURL: "http://127.0.0.1:4545", containerServerURL: "http://10.0.3.1:4545", organization: nil,
                              adminName: "admin", adminKey: "keys/admin.pem", environment: nil))
        #expect(chef.containerChefServerURL == "http://10.0.3.1:4545")
    }

    @Test func containersUseTheServerURLWithTheOrganizationPath() throws {
        for organization in ["acme", "/organizations/acme"] {
            let yaml = Self.yaml(Self.chef(replacing: "organization", with: organization))
                .split(separator: "\n").filter { !$0.contains("containerServerURL") }.joined(separator: "\n")
            let chef = try #require(try VendorConfiguration.parse(yaml: yaml).chef)
            #expect(chef.organization == "acme")
            #expect(chef.containerChefServerURL == "http://127.0.0.1:4545/organizations/acme")
        }
    }

    @Test func loadResolvesTheAdminKeyAgainstTheFile() async throws {
        try await withTemporaryFolder { folder in
            let file = folder.appendingPathComponent("vendor.yaml")
            try Self.yaml().write(to: file, atomically: true, encoding: .utf8)
            let chef = try #require(try VendorConfiguration.load(from: file.path).chef)
            #expect(chef.adminKey == folder.appendingPathComponent("keys/admin.pem").standardizedFileURL.path)
        }
    }

    @Test(arguments: [
        ("serverURL", "chef.example:4545"), ("serverURL", "ftp://chef.example"), ("serverURL", "http://"),
        ("serverURL", "http://chef.example/organizations/acme"), ("serverURL", "http://chef.example?x=1"),
        ("containerServerURL", "not a url"), ("organization", "Acme Corp"), ("adminName", "\"\""),
        ("adminName", "ad min"), ("adminKey", "\"\""), ("environment", "prod/eu"),
    ])
    func refusesBadFields(_ key: String, _ value: String) {
        let error = ConfigurationTests.refusal(Self.yaml(Self.chef(replacing: key, with: value)))
        #expect(error?.code == .invalidField)
        #expect(error?.field == "chef.\(key)")
    }

    @Test func namesAMissingField() {
        let yaml = Self.yaml().split(separator: "\n").filter { !$0.contains("adminName") }.joined(separator: "\n")
        let error = ConfigurationTests.refusal(yaml)
        #expect(error?.code == .malformed)
        #expect(error?.field == "chef.adminName")
    }

    @Test func anUnreadableOrInvalidAdminKeyIsRefusedWhenTheProvisionerIsBuilt() async throws {
        try await Harness.with(configure: {
            $0.chef = .init(serverURL: "http://127.0.0.1:4545", adminName: "admin", adminKey: "/nonexistent/admin.pem")
        }) { h in
            let missing = #expect(throws: ConfigurationError.self) {
                try ChefProvisioner.configured(by: h.configuration, store: h.store, logger: Harness.logger)
            }
            #expect(missing?.field == "chef.adminKey")
            #expect(missing?.message.contains("/nonexistent/admin.pem") == true)
        }
        try await withTemporaryFolder { folder in
            let key = folder.appendingPathComponent("admin.pem")
            try "not a key".write(to: key, atomically: true, encoding: .utf8)
            var configuration = makeConfiguration(folder: folder)
            configuration.chef = .init(serverURL: "http://127.0.0.1:4545", adminName: "admin", adminKey: key.path)
            let store = try SQLiteVendorStore(path: configuration.database, create: true)
            let invalid = #expect(throws: ConfigurationError.self) {
                try ChefProvisioner.configured(by: configuration, store: store, logger: Harness.logger)
            }
            #expect(invalid?.field == "chef.adminKey")
        }
    }
}
