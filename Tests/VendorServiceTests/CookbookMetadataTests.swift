import Chef
import Foundation
import Testing
@testable import VendorService

/// `metadata.rb` parsing (the repository's sample cookbooks and malformed input) and uploading the
/// sample cookbooks to the real goiardi.
// Serialized: goiardi can drop one of two versions of a cookbook saved at once (see LocalCookbook.upload).
@Suite(.serialized) struct CookbookMetadataTests {
    static let cookbooks = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("cookbooks").path

    // MARK: The sample cookbooks

    @Test func sensorAgentMetadata() throws {
        let m = try CookbookMetadataParser.load(path: Self.cookbooks + "/sensor_agent/metadata.rb")
        #expect(m == ChefCookbookMetadata(
            name: "sensor_agent", version: "1.0.0",
            description: "Installs the sensor-agent that reads the vendor serial sensor passed into the container",
            maintainer: "Acme Sensors", license: "Apache-2.0", dependencies: [:], platforms: ["debian": ">= 0.0.0"]))
    }

    @Test func plugControllerMetadata() throws {
        let m = try CookbookMetadataParser.load(path: Self.cookbooks + "/plug_controller/metadata.rb")
        #expect(m == ChefCookbookMetadata(
            name: "plug_controller", version: "1.0.0",
            description: "Installs plug-controller, which switches the vendor smart plugs",
            maintainer: "Globex Plugs", license: "Apache-2.0", dependencies: [:], platforms: ["debian": ">= 0.0.0"]))
    }

    /// The two sample apps and the owner's hardening cookbook; the Ansible folder is no cookbook.
    @Test func discoverFindsTheCookbooksAndSkipsAnsible() throws {
        let found = try LocalCookbook.discover(in: Self.cookbooks)
        #expect(found.map(\.metadata.name) == ["iotgw_hardening", "plug_controller", "sensor_agent"])
        #expect(found.map { URL(fileURLWithPath: $0.directory).lastPathComponent } == ["iotgw_hardening", "plug_controller", "sensor_agent"])
        let files = try #require(found.first { $0.metadata.name == "sensor_agent" }).files().map(\.path)
        #expect(files.contains("metadata.rb") && files.contains("recipes/default.rb") && files.contains("files/default/standin-converge.sh"))
    }

    // MARK: The accepted syntax

    @Test func everythingTheParserReads() throws {
        let text = "\u{FEFF}# a comment\r\n"
            + "name    \"thermo_agent\"  # trailing comment\r\n"
            + "\r\n"
            + "   version '2.10.3'\r\n"
            + "maintainer 'O\\'Brien \\\\ Sons'\r\n"
            + "maintainer_email \"ops@acme.example\"\r\n"
            + "license 'MIT'\r\n"
            + "description \"Reads \\\"the\\\" sensor\\tfast, #1 \\#{not interpolated}\"\r\n"
            + "long_description 'Keeps \\n as written'\r\n"
            + "depends 'base'\r\n"
            + "depends \"mqtt\", '~> 1.2'\r\n"
            + "depends 'logrotate' , '>= 2.0.0'\r\n"
            + "supports 'debian', '>= 12.0'\r\n"
            + "supports 'ubuntu'\r\n"
            + "chef_version '>= 16', '< 19'\r\n"
            + "ohai_version '>= 16.0'\r\n"
            + "source_url 'https://example.com/thermo_agent'\r\n"
            + "issues_url 'https://example.com/thermo_agent/issues'\r\n"
            + "gem 'mqtt'"
        let m = try CookbookMetadataParser.parse(text)
        #expect(m.name == "thermo_agent")
        #expect(m.version == "2.10.3")
        #expect(m.maintainer == "O'Brien \\ Sons")
        #expect(m.maintainerEmail == "ops@acme.example")
        #expect(m.license == "MIT")
        #expect(m.description == "Reads \"the\" sensor\tfast, #1 #{not interpolated}")
        #expect(m.longDescription == "Keeps \\n as written")
        #expect(m.dependencies == ["base": ">= 0.0.0", "mqtt": "~> 1.2", "logrotate": ">= 2.0.0"])
        #expect(m.platforms == ["debian": ">= 12.0", "ubuntu": ">= 0.0.0"])
    }

    @Test func licenseDefaultsLikeChef() throws {
        let m = try CookbookMetadataParser.parse("name 'a'\nversion '1.0'\n")
        #expect(m.license == "All Rights Reserved" && m.version == "1.0" && m.dependencies.isEmpty)
    }

    // MARK: Malformed input: file and line named

    static let malformed: [(text: String, line: Int, message: String)] = [
        ("name 'a'\nversion '1.0.0'\nlong_description IO.read(File.join(File.dirname(__FILE__), 'README.md'))\n", 3,
         "long_description must be followed by a quoted string"),
        ("name 'a'\nversion \"1.0.#{patch}\"\n", 2, "string interpolation"),
        ("name 'a'\nversion \"1.#@v\"\n", 2, "string interpolation"),
        ("name 'a'\nversion '1.0.0\n", 2, "unterminated string"),
        ("name 'a'\nversion VERSION\n", 2, "version must be followed by a quoted string"),
        ("name 'a'\nversion '1.0.0' if ENV['X']\n", 2, "unexpected \"if ENV['X']\""),
        ("name 'a'\nversion '1.0.0'\nrecipe 'a::b', 'does b'\n", 3, "'recipe' is not a metadata.rb setting"),
        ("name 'a'\nversion '1.0.0'\n%w(debian ubuntu).each do |os|\n", 3, "cannot read"),
        ("name 'a'\nversion '1.0.0'\nsupports %w(debian)\n", 3, "supports must be followed by a quoted string"),
        ("name('a')\nversion '1.0.0'\n", 1, "cannot read"),
        ("name = 'a'\n", 1, "name must be followed by a quoted string, found \"= 'a'\""),
        ("name 'a'\nversion '1.0.0'\ndepends 'b',\n  '>= 1.0'\n", 3, "expected a quoted string after ','"),
        ("name 'a'\nversion '1.0.0'\ndepends 'b', '>= 1.0', '< 2.0'\n", 3, "at most one version constraint"),
        ("name 'a'\nversion '1.0.0'\ndepends 'b', 'latest'\n", 3, "not a version constraint"),
        ("name 'a'\nversion '1.0.0'\ndepends 'b'\ndepends 'b', '>= 1.0'\n", 4, "twice (first on line 3)"),
        ("name 'a'\nversion '1.0.0'\ndepends 'b c'\n", 3, "not a cookbook name"),
        ("name 'a'\nversion 'v1'\n", 2, "must be x.y.z"),
        ("name 'a'\nversion '1.0.0-rc1'\n", 2, "must be x.y.z"),
        ("name 'a b'\nversion '1.0.0'\n", 1, "letters, digits"),
        ("name 'a'\nname 'b'\nversion '1.0.0'\n", 2, "name is set twice (first on line 1)"),
        ("name 'a', 'b'\nversion '1.0.0'\n", 1, "takes one string"),
        ("name 'a'\nversion '1.0.0'\ndescription \"tab\\x41\"\n", 3, "unsupported escape"),
        ("name 'a'\nversion '1.0.0'\nchef_version 'sixteen'\n", 3, "not a version requirement"),
        ("name 'a'\nversion '1.0.0'\n=begin\n", 3, "cannot read"),
        ("version '1.0.0'\n", 0, "no name line"),
        ("# only a name\nname 'a'\n", 0, "no version line"),
        ("", 0, "no name line"),
    ]

    @Test(arguments: malformed.indices)
    func malformedInputIsRefusedWithFileAndLine(_ index: Int) throws {
        let (text, line, message) = Self.malformed[index]
        let error = try #require(throws: CookbookSourceError.self) { try CookbookMetadataParser.parse(text, file: "cb/metadata.rb") }
        #expect(error.file == "cb/metadata.rb")
        #expect(error.line == line, "\(error)")
        #expect(error.message.contains(message), "\(error)")
        #expect(error.description.hasPrefix(line > 0 ? "cb/metadata.rb:\(line): " : "cb/metadata.rb: "))
    }

    @Test func discoverRefusesBadMetadataChefignoreAndDuplicates() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cookbooks-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        func write(_ path: String, _ text: String) throws {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        try write("a/metadata.rb", "name 'a'\nversion '1.0.0'\n")
        try write("not_a_cookbook/site.yml", "- hosts: all\n")
        try write("a_file", "x")
        #expect(try LocalCookbook.discover(in: root.path).map(\.metadata.name) == ["a"])

        try write("b/metadata.rb", "name 'b'\nversion '1.0.0'\nlong_description IO.read('README.md')\n")
        var error = try #require(throws: CookbookSourceError.self) { try LocalCookbook.discover(in: root.path) }
        #expect(error.file == root.appendingPathComponent("b/metadata.rb").path && error.line == 3)

        try write("b/metadata.rb", "name 'a'\nversion '2.0.0'\n")
        error = try #require(throws: CookbookSourceError.self) { try LocalCookbook.discover(in: root.path) }
        #expect(error.message.contains("also defined by"))

        try FileManager.default.removeItem(at: root.appendingPathComponent("b"))
        try write("a/chefignore", "*.swp\n")
        error = try #require(throws: CookbookSourceError.self) { try LocalCookbook.discover(in: root.path) }
        #expect(error.file.hasSuffix("a/chefignore") && error.message.contains("not supported"))

        error = try #require(throws: CookbookSourceError.self) { try LocalCookbook.discover(in: root.path + "/missing") }
        #expect(error.message == "no such folder")
    }

    // MARK: Upload to the real goiardi

    /// The sample cookbook at a unique test version (metadata.rb rewritten to match), so the upload never
    /// touches the real 1.0.0 and can be deleted afterwards.
    static func atTestVersion(_ cookbook: LocalCookbook, _ version: String) throws -> (LocalCookbook, [ChefCookbookFile]) {
        var copy = cookbook
        let original = cookbook.metadata.version
        copy.metadata.version = version
        let files = try cookbook.files().map { file in
            guard file.path == "metadata.rb" else { return file }
            let text = String(decoding: file.contents, as: UTF8.self)
            #expect(text.contains("version '\(original)'"))
            return ChefCookbookFile(path: file.path, string: text.replacingOccurrences(of: "version '\(original)'", with: "version '\(version)'"))
        }
        // The rewritten metadata.rb still parses to the test version.
        let rewritten = try #require(files.first { $0.path == "metadata.rb" })
        #expect(try CookbookMetadataParser.parse(String(decoding: rewritten.contents, as: UTF8.self)).version == version)
        return (copy, files)
    }

    static func uniqueVersion() -> String { "0.\(UInt32.random(in: 1...999_999)).\(UInt32.random(in: 1...999_999))" }

    /// Runs `body`, then deletes `version` of each named cookbook, whether `body` succeeded or not.
    static func deleting(_ names: [String], version: String, admin: ChefClient, _ body: () async throws -> Void) async throws {
        func clean() async {
            for name in names {
                // goiardi under load from the parallel suites sometimes fails a delete: try a few times.
                for attempt in 1...5 {
                    do {
                        try await admin.deleteCookbook(name, version: version)
                        break
                    } catch {
                        if attempt == 5 { Issue.record("deleting \(name) \(version) failed: \(error)") }
                        try? await Task.sleep(for: .milliseconds(200))
                    }
                }
                await #expect(throws: ChefError.self, "\(name) \(version) is still on goiardi") {
                    try await admin.cookbookVersion(name, version: version)
                }
            }
        }
        do { try await body() } catch {
            await clean()
            throw error
        }
        await clean()
    }

    @Test func uploadsBothSampleCookbooksToGoiardiAndReadsThemBack() async throws {
        let admin = try await Goiardi.admin()  // fails with "run scripts/start-goiardi" if goiardi does not answer
        let chef = try Goiardi.settings.adminClient(logger: Harness.logger)
        let version = Self.uniqueVersion()
        let cookbooks = try LocalCookbook.discover(in: Self.cookbooks).filter { $0.metadata.name != "iotgw_hardening" }
        #expect(cookbooks.map(\.metadata.name) == ["plug_controller", "sensor_agent"])

        try await Self.deleting(cookbooks.map(\.metadata.name), version: version, admin: admin) {
            for sample in cookbooks {
                let (cookbook, files) = try Self.atTestVersion(sample, version)
                let name = cookbook.metadata.name

                let first = try await cookbook.upload(to: chef, files: files)
                #expect(first.name == name && first.version == version && first.outcome == .uploaded && !first.frozen)
                #expect(first.files == files.count)
                #expect((first.uploaded + first.alreadyPresent).sorted() == files.map(\.path).sorted())
                #expect(first.uploaded.contains("metadata.rb"), "the rewritten metadata.rb is new content")

                let stored = try await admin.cookbookVersion(name, version: version)
                #expect(stored.cookbookName == name && stored.version == version && !stored.frozen)
                #expect(stored.files.map { [$0.path, $0.checksum] } == files.sorted { $0.path < $1.path }.map { [$0.path, $0.checksum] })
                #expect(stored.metadata["name"] == .string(name))
                #expect(stored.metadata["version"] == .string(version))
                #expect(stored.metadata["maintainer"] == .string(cookbook.metadata.maintainer))
                #expect(stored.metadata["license"] == "Apache-2.0")
                #expect(stored.metadata["description"] == .string(cookbook.metadata.description))
                #expect(stored.metadata["platforms"]?["debian"] == ">= 0.0.0")
                #expect(stored.metadata["recipes"]?[name] == "")
                let recipe = try #require(stored.segments["recipes"]?.first { $0.name == "default.rb" })
                #expect(try await admin.cookbookFileContents(recipe) == files.first { $0.path == "recipes/default.rb" }?.contents)

                // Idempotent: the second upload sends nothing.
                let second = try await cookbook.upload(to: chef, files: files)
                #expect(second.uploaded.isEmpty)
                #expect(second.alreadyPresent.sorted() == files.map(\.path).sorted())
            }
        }
    }

    @Test func frozenVersionIsLeftAloneWhenUnchangedAndRefusedWhenChanged() async throws {
        let admin = try await Goiardi.admin()
        let chef = try Goiardi.settings.adminClient(logger: Harness.logger)
        let version = Self.uniqueVersion()
        let sample = try #require(try LocalCookbook.discover(in: Self.cookbooks).first { $0.metadata.name == "plug_controller" })
        let (cookbook, files) = try Self.atTestVersion(sample, version)

        try await Self.deleting([cookbook.metadata.name], version: version, admin: admin) {
            let first = try await cookbook.upload(to: chef, files: files, freeze: true)
            #expect(first.outcome == .uploaded && first.frozen)
            #expect(try await admin.cookbookVersion(cookbook.metadata.name, version: version).frozen)

            // Unchanged, with or without --freeze: nothing sent, no error.
            for freeze in [false, true] {
                let again = try await cookbook.upload(to: chef, files: files, freeze: freeze)
                #expect(again.outcome == .frozenUnchanged && again.frozen && again.uploaded.isEmpty)
                #expect(again.alreadyPresent == files.map(\.path).sorted())
            }

            // Changed: refused before anything is sent, naming the files.
            let changed = files.map { f in
                f.path == "recipes/default.rb" ? ChefCookbookFile(path: f.path, string: "log 'changed \(version)'\n") : f
            } + [ChefCookbookFile(path: "recipes/extra.rb", string: "log 'extra'\n")]
            let error = try await #require(throws: ChefError.self) { try await cookbook.upload(to: chef, files: changed) }
            #expect(error.code == .conflict)
            #expect(error.message.contains("frozen") && error.message.contains("changed: recipes/default.rb")
                && error.message.contains("not on the server: recipes/extra.rb"), "\(error)")
            let stored = try await admin.cookbookVersion(cookbook.metadata.name, version: version)
            #expect(stored.files.map(\.checksum).sorted() == files.map(\.checksum).sorted())
        }
    }

    /// Versions of one cookbook uploaded at the same time (two vendors' releases, or parallel test
    /// suites) all stay on the server: each upload reads its version back.
    @Test func versionsOfOneCookbookUploadedAtOnceAreAllKept() async throws {
        let admin = try await Goiardi.admin()
        let chef = try Goiardi.settings.adminClient(logger: Harness.logger)
        let sample = try #require(try LocalCookbook.discover(in: Self.cookbooks).first { $0.metadata.name == "plug_controller" })
        let versions = (0..<8).map { _ in Self.uniqueVersion() }
        var failures: [String] = []
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for version in versions {
                    let (cookbook, files) = try Self.atTestVersion(sample, version)
                    group.addTask { _ = try await cookbook.upload(to: chef, files: files) }
                }
                try await group.waitForAll()
            }
            for version in versions {
                do { _ = try await admin.cookbookVersion(sample.metadata.name, version: version) } catch { failures.append("\(version): \(error)") }
            }
        } catch {
            failures.append("upload: \(error)")
        }
        for version in versions { try? await admin.deleteCookbook(sample.metadata.name, version: version) }
        #expect(failures.isEmpty, "versions lost: \(failures)")
    }

    @Test func adminClientRefusesAMissingKey() throws {
        var settings = Goiardi.settings
        settings.adminKey = "/nonexistent/admin.pem"
        let error = try #require(throws: ConfigurationError.self) { try settings.adminClient(logger: Harness.logger) }
        #expect(error.field == "chef.adminKey" && error.code == .unreadable)
    }
}
