import Foundation
import Testing

/// Static checks of the profiles in `inspec/` (InSpec itself is not on the build machines:
/// it is not packaged in Debian 12). They keep the control IDs that policies refer to stable
/// and documented.
@Suite("inspec/ profiles")
struct ProfileLayoutTests {
    static let root = URL(filePath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appending(path: "inspec")

    /// The profiles and their documented control IDs. Adding a control means adding it here.
    static let expected: [String: [String]] = [
        "sensor-agent": ["sensor-agent-01", "sensor-agent-02", "sensor-agent-03", "sensor-agent-04"],
        "plug-controller": ["plug-controller-01", "plug-controller-02", "plug-controller-03",
                            "plug-controller-04", "plug-controller-05"],
        "hardening": ["hardening-01", "hardening-02", "hardening-03", "hardening-04", "hardening-05", "hardening-06",
                      "hardening-07", "hardening-08"],
    ]

    static func text(_ path: String) throws -> String {
        try String(contentsOf: root.appending(path: path), encoding: .utf8)
    }

    static func controlIDs(_ profile: String) throws -> [String] {
        let dir = root.appending(path: "\(profile)/controls")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path())
            .filter { $0.hasSuffix(".rb") }.sorted()
        #expect(!files.isEmpty, "\(profile)/controls has no .rb file")
        var ids: [String] = []
        for f in files {
            let source = try String(contentsOf: dir.appending(path: f), encoding: .utf8)
            ids += source.matches(of: #/(?m)^control '([^']+)' do$/#).map { String($0.output.1) }
        }
        return ids
    }

    @Test("each profile directory has the expected profiles, no more")
    func profiles() throws {
        let dirs = try FileManager.default.contentsOfDirectory(atPath: Self.root.path())
            .filter { var d: ObjCBool = false
                return FileManager.default.fileExists(atPath: Self.root.appending(path: $0).path(), isDirectory: &d) && d.boolValue }
        #expect(Set(dirs) == Set(Self.expected.keys))
    }

    @Test("inspec.yml names the profile after its directory and has version and supports",
          arguments: expected.keys.sorted())
    func metadata(_ profile: String) throws {
        let yml = try Self.text("\(profile)/inspec.yml")
        let name = yml.firstMatch(of: #/(?m)^name: (\S+)$/#).map { String($0.output.1) }
        #expect(name == profile)
        #expect(yml.contains(#/(?m)^version: \d+\.\d+\.\d+$/#))
        #expect(yml.contains(#/(?m)^supports:$/#))
        #expect(yml.contains(#/(?m)^title: \S/#))
    }

    @Test("control IDs are stable, well-formed, unique and documented in the README",
          arguments: expected.keys.sorted())
    func controls(_ profile: String) throws {
        let ids = try Self.controlIDs(profile)
        #expect(ids == Self.expected[profile])
        #expect(Set(ids).count == ids.count)
        for id in ids {
            #expect(id.wholeMatch(of: #/[a-z][a-z0-9-]*-\d\d/#) != nil && id.hasPrefix(profile + "-"), "\(id)")
        }
        let readme = try Self.text("\(profile)/README.md")
        let documented = readme.matches(of: #/(?m)^\| `([^`]+)` \|/#).map { String($0.output.1) }
        #expect(documented == ids)
    }

    @Test("every control has an impact, a title and at least one describe", arguments: expected.keys.sorted())
    func controlBodies(_ profile: String) throws {
        let dir = Self.root.appending(path: "\(profile)/controls")
        for f in try FileManager.default.contentsOfDirectory(atPath: dir.path()) where f.hasSuffix(".rb") {
            let source = try String(contentsOf: dir.appending(path: f), encoding: .utf8)
            // Split at each control; the part after the first split is that control's body.
            let bodies = source.split(separator: #/(?m)^control '/#).dropFirst()
            for body in bodies {
                let id = body.prefix { $0 != "'" }
                #expect(body.contains(#/(?m)^  impact (0(\.\d+)?|1(\.0)?)$/#), "\(id): impact")
                #expect(body.contains(#/(?m)^  title '/#), "\(id): title")
                #expect(body.contains(#/(?m)^  describe /#), "\(id): describe")
                #expect(body.contains(#/(?m)^end$/#), "\(id): end")
            }
        }
    }
}
