import Foundation
import Testing
@testable import Chef

/// `BootstrapFiles` writes what knife bootstrap writes.
@Suite struct BootstrapFilesTests {
    /// `Fixtures/client.rb.example`: the knife template filled in for goiardi on the LXD bridge.
    @Test func clientRBMatchesTheExample() throws {
        let files = BootstrapFiles(chefServerURL: "http://10.0.3.1:4545", nodeName: "web01", clientKeyPEM: nil)
        #expect(files.clientRB == (try Fixture.string("client.rb.example")))
    }

    /// The exact string of knife's own spec (`knife/spec/unit/knife/core/bootstrap_context_spec.rb`).
    @Test func clientRBMatchesKnifesSpec() {
        let files = BootstrapFiles(chefServerURL: "http://chef.example.com:4444", nodeName: nil, clientKeyPEM: nil,
                                   validationClientName: "chef-validator-testing", chefLicense: nil,
                                   logLevel: .info, logLocation: .file("/tmp/log"))
        #expect(files.clientRB == "chef_server_url  \"http://chef.example.com:4444\"\nvalidation_client_name \"chef-validator-testing\"\nlog_level   :info\nlog_location   \"/tmp/log\"\n# Using default node name (fqdn)\n")
    }

    @Test func clientRBOptionalLinesInKnifesOrder() {
        let files = BootstrapFiles(
            chefServerURL: "https://chef.example.com/organizations/acme", nodeName: "web01", clientKeyPEM: nil,
            validationClientName: "acme-validator", logLevel: nil, logLocation: .syslog, verifyAPICert: false,
            sslVerifyMode: .verifyNone, trustedCerts: [.init(fileName: "ca.crt", pem: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----")],
            encryptedDataBagSecret: "s3cret", fips: true, fileCachePath: "/var/cache/chef", fileBackupPath: "/var/backups/chef")
        #expect(files.clientRB == """
            chef_server_url  "https://chef.example.com/organizations/acme"
            validation_client_name "acme-validator"
            chef_license "accept"
            log_location   :syslog
            node_name "web01"
            verify_api_cert false
            ssl_verify_mode :verify_none
            encrypted_data_bag_secret "/etc/chef/encrypted_data_bag_secret"
            trusted_certs_dir "/etc/chef/trusted_certs"
            fips true
            file_cache_path "/var/cache/chef"
            file_backup_path "/var/backups/chef"

            """)
        #expect(BootstrapFiles(chefServerURL: "http://x", nodeName: "n", clientKeyPEM: nil, logLocation: .stderr)
            .clientRB.contains("\nlog_location   STDERR\n"))
    }

    @Test func clientRBValuesCannotInjectRuby() {
        let files = BootstrapFiles(chefServerURL: "http://x\"; system(\"id\") #{1}", nodeName: "a\nb", clientKeyPEM: nil)
        #expect(files.clientRB.hasPrefix(##"chef_server_url  "http://x\"; system(\"id\") \#{1}""##))
        #expect(files.clientRB.contains(#"node_name "a\nb""#))
    }

    @Test func firstBootJSONMatchesTheExamples() throws {
        let plain = BootstrapFiles(chefServerURL: "http://10.0.3.1:4545", nodeName: "web01", clientKeyPEM: nil,
                                   runList: ["recipe[base]", "role[web]"])
        #expect(plain.firstBootJSON == (try Fixture.string("first-boot.json.example")).trimmingCharacters(in: .newlines))

        let withAttrs = BootstrapFiles(chefServerURL: "http://10.0.3.1:4545", nodeName: "web01", clientKeyPEM: nil,
                                       runList: ["recipe[base]"], attributes: ["myapp": ["port": 8080]], tags: ["gateway-managed"])
        #expect(withAttrs.firstBootJSON == (try Fixture.string("first-boot-with-attrs-and-tags.json.example")).trimmingCharacters(in: .newlines))
    }

    @Test func firstBootJSONWithPolicyHasNoRunList() throws {
        let files = BootstrapFiles(chefServerURL: "http://x", nodeName: "n", clientKeyPEM: nil, runList: ["recipe[ignored]"],
                                   attributes: ["run_list": ["recipe[also-ignored]"], "a/b": "c/d"],
                                   policy: .init(name: "iot", group: "prod"))
        #expect(files.firstBootJSON == #"{"a/b":"c/d","policy_name":"iot","policy_group":"prod"}"#)
        let parsed = try JSONDecoder().decode([String: ChefJSONValue].self, from: Data(files.firstBootJSON.utf8))
        #expect(parsed["run_list"] == nil)
    }

    @Test func filesCarryModesAndOrder() throws {
        let pem = try Fixture.string("test-signing-key.pem").trimmingCharacters(in: .newlines)
        let files = BootstrapFiles(chefServerURL: "http://10.0.3.1:4545", nodeName: "web01", clientKeyPEM: pem,
                                   runList: ["recipe[base]"], trustedCerts: [.init(fileName: "goiardi.pem", pem: "CERT")])
        try files.validate()
        #expect(files.directories == ["/etc/chef", "/etc/chef/trusted_certs"])
        #expect(files.files.map(\.path) == ["/etc/chef/client.pem", "/etc/chef/trusted_certs/goiardi.pem",
                                           "/etc/chef/client.rb", "/etc/chef/first-boot.json"])
        #expect(files.files.map(\.mode) == [0o600, 0o644, 0o644, 0o644])
        #expect(files.files[0].contents == pem + "\n")
        #expect(BootstrapFiles.clientKeyMode == 0o600)
        #expect(files.clientRB.contains("trusted_certs_dir \"/etc/chef/trusted_certs\"\n"))
    }

    @Test func validateRejectsBadInput() {
        func rejected(_ f: BootstrapFiles) -> Bool {
            do { try f.validate(); return false } catch let e as ChefError { return e.code == .invalidArgument || e.code == .invalidKey } catch { return false }
        }
        #expect(rejected(BootstrapFiles(chefServerURL: "ftp://x", nodeName: "n", clientKeyPEM: nil)))
        #expect(rejected(BootstrapFiles(chefServerURL: "http://x", nodeName: "bad name", clientKeyPEM: nil)))
        #expect(rejected(BootstrapFiles(chefServerURL: "http://x", nodeName: "n", clientKeyPEM: "nope")))
        #expect(rejected(BootstrapFiles(chefServerURL: "http://x", nodeName: "n", clientKeyPEM: nil,
                                        trustedCerts: [.init(fileName: "../etc/passwd.pem", pem: "")])))
    }

    /// knife's `start_chef` (spec: "chef-client -j /etc/chef/first-boot.json --no-color").
    @Test func chefClientCommandLikeKnife() {
        #expect(ChefClientRun.command().joined(separator: " ") == "chef-client -j /etc/chef/first-boot.json --no-color")
        #expect(ChefClientRun.command(environment: "prod", logLevel: .debug)
            == ["chef-client", "-j", "/etc/chef/first-boot.json", "-l", "debug", "-E", "prod", "--no-color"])
        let files = BootstrapFiles(chefServerURL: "http://x", nodeName: "n", clientKeyPEM: nil, environment: "staging")
        #expect(files.chefClientCommand == ["chef-client", "-j", "/etc/chef/first-boot.json", "-E", "staging", "--no-color"])
    }
}

@Suite struct ChefClientRunTests {
    @Test(arguments: [
        (Int32(0), ChefClientRun.Outcome.success), (1, .failed), (2, .interrupted), (3, .terminated),
        (35, .rebootScheduled), (37, .rebootNeeded), (41, .rebootFailed), (42, .auditFailed),
        (43, .configurationFailed), (172, .licenseNotAccepted), (173, .licenseNotEntitled), (174, .licenseNotSet),
        (213, .clientUpgraded), (255, .deprecatedFailure), (127, .notInstalled(127)), (99, .other(99)),
    ])
    func exitCodesMapBothWays(_ code: Int32, _ outcome: ChefClientRun.Outcome) {
        #expect(ChefClientRun.Outcome(exitCode: code) == outcome)
        #expect(outcome.exitCode == code)
        #expect(!outcome.description.isEmpty)
    }

    @Test func classification() {
        #expect(ChefClientRun.Outcome.success.converged)
        #expect(ChefClientRun.Outcome.rebootScheduled.converged && ChefClientRun.Outcome.rebootScheduled.needsReboot)
        #expect(!ChefClientRun.Outcome.failed.converged && !ChefClientRun.Outcome.failed.worthRetrying)
        #expect(ChefClientRun.Outcome.clientUpgraded.worthRetrying)
        #expect(ChefClientRun.Outcome(exitCode: -1) == .deprecatedFailure)
    }
}
