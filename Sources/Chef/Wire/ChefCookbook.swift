import Crypto
import Foundation

/// One file of a cookbook to upload.
public struct ChefCookbookFile: Sendable, Equatable {
    /// Relative to the cookbook root, `/`-separated: `recipes/default.rb`, `templates/default/x.erb`,
    /// `metadata.rb`.
    public var path: String
    public var contents: [UInt8]

    public init(path: String, contents: [UInt8]) {
        self.path = path
        self.contents = contents
    }

    public init(path: String, string: String) {
        self.init(path: path, contents: Array(string.utf8))
    }

    /// Lowercase hex MD5 of the contents: the checksum Chef's sandboxes and manifests use.
    public var checksum: String {
        Insecure.MD5.hash(data: contents).map { byte in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
    }

    /// Base64 MD5, the `Content-MD5` header of the upload.
    var contentMD5: String { Data(Insecure.MD5.hash(data: contents)).base64EncodedString() }

    /// Reads every regular file under `directory` (skipping dot files and directories) as a cookbook.
    /// Synchronous file I/O: call it off the cooperative pool for large trees.
    public static func files(inDirectory directory: String) throws -> [ChefCookbookFile] {
        let root = URL(fileURLWithPath: directory, isDirectory: true).standardizedFileURL
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey],
                                                          options: [.skipsHiddenFiles]) else {
            throw ChefError(code: .invalidArgument, message: "cannot read cookbook directory \(directory)")
        }
        var out: [ChefCookbookFile] = []
        let prefix = root.path.hasSuffix("/") ? root.path : root.path + "/"
        for case let url as URL in walker {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true else { continue }
            let full = url.standardizedFileURL.path
            guard full.hasPrefix(prefix) else { continue }
            do {
                out.append(ChefCookbookFile(path: String(full.dropFirst(prefix.count)), contents: Array(try Data(contentsOf: url))))
            } catch {
                throw ChefError(code: .invalidArgument, message: "cannot read \(full): \(error)")
            }
        }
        return out.sorted { $0.path < $1.path }
    }
}

/// What goes into a cookbook version's `metadata` (Chef::Cookbook::Metadata#to_h, the fields
/// both Chef Infra Server and goiardi validate).
public struct ChefCookbookMetadata: Sendable, Equatable {
    public var name: String
    /// `x.y.z` (or `x.y`).
    public var version: String
    public var description: String
    public var longDescription: String
    public var maintainer: String
    public var maintainerEmail: String
    public var license: String
    /// Cookbook name → constraint like `>= 1.0.0`.
    public var dependencies: [String: String]
    /// Platform → constraint.
    public var platforms: [String: String]

    public init(name: String, version: String, description: String = "", longDescription: String = "",
                maintainer: String = "", maintainerEmail: String = "", license: String = "All Rights Reserved",
                dependencies: [String: String] = [:], platforms: [String: String] = [:]) {
        self.name = name
        self.version = version
        self.description = description
        self.longDescription = longDescription
        self.maintainer = maintainer
        self.maintainerEmail = maintainerEmail
        self.license = license
        self.dependencies = dependencies
        self.platforms = platforms
    }
}

/// One file record of a cookbook version manifest (API v0/v1 "segments" format).
public struct ChefCookbookFileRecord: Codable, Sendable, Equatable {
    public var name: String
    public var path: String
    public var checksum: String
    public var specificity: String
    /// Where to download it (present in GET answers).
    public var url: String?
}

/// A cookbook version as `GET /cookbooks/NAME/VERSION` returns it.
public struct ChefCookbookVersion: Decodable, Sendable, Equatable {
    public var name: String
    public var cookbookName: String
    public var version: String
    public var frozen: Bool
    public var metadata: ChefJSONValue
    /// Segment (`recipes`, `templates`, `root_files`...) → files.
    public var segments: [String: [ChefCookbookFileRecord]]

    /// All files, by path.
    public var files: [ChefCookbookFileRecord] { segments.values.flatMap { $0 }.sorted { $0.path < $1.path } }

    static let segmentNames = ["resources", "providers", "recipes", "definitions", "libraries", "attributes", "files", "templates", "root_files"]

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        name = try c.decode(String.self, forKey: AnyKey(stringValue: "name"))
        cookbookName = try c.decodeIfPresent(String.self, forKey: AnyKey(stringValue: "cookbook_name")) ?? name
        version = try c.decodeIfPresent(String.self, forKey: AnyKey(stringValue: "version")) ?? ""
        frozen = try c.decodeIfPresent(Bool.self, forKey: AnyKey(stringValue: "frozen?")) ?? false
        metadata = try c.decodeIfPresent(ChefJSONValue.self, forKey: AnyKey(stringValue: "metadata")) ?? .object([:])
        var segments: [String: [ChefCookbookFileRecord]] = [:]
        for s in Self.segmentNames {
            if let files = try c.decodeIfPresent([ChefCookbookFileRecord].self, forKey: AnyKey(stringValue: s)), !files.isEmpty {
                segments[s] = files
            }
        }
        self.segments = segments
    }
}

/// `POST /sandboxes` answer.
public struct ChefSandbox: Decodable, Sendable, Equatable {
    public struct Checksum: Decodable, Sendable, Equatable {
        public var url: String?
        public var needsUpload: Bool
        enum CodingKeys: String, CodingKey {
            case url
            case needsUpload = "needs_upload"
        }
    }

    public var sandboxID: String
    public var uri: String?
    public var checksums: [String: Checksum]

    enum CodingKeys: String, CodingKey {
        case sandboxID = "sandbox_id"
        case uri, checksums
    }
}

/// The result of `ChefClient.uploadCookbook`.
public struct ChefCookbookUpload: Sendable, Equatable {
    public var name: String
    public var version: String
    /// Checksums whose content was sent.
    public var uploaded: [String]
    /// Checksums the server already had.
    public var alreadyPresent: [String]
}

/// Builds the manifest `PUT /cookbooks/NAME/VERSION` takes, as `Chef::Cookbook::ManifestV0`.
enum CookbookManifest {
    /// (segment, record) for one file path, following `CookbookManifest#parse_file_from_root_paths`.
    static func record(for file: ChefCookbookFile) -> (segment: String, record: ChefCookbookFileRecord) {
        let parts = file.path.split(separator: "/").map(String.init)
        let basename = parts.last ?? file.path
        guard parts.count > 1, ChefCookbookVersion.segmentNames.contains(parts[0]), parts[0] != "root_files" else {
            return ("root_files", ChefCookbookFileRecord(name: basename, path: file.path, checksum: file.checksum, specificity: "default"))
        }
        let segment = parts[0]
        var specificity = "default"
        if segment == "files" || segment == "templates" {
            specificity = parts.count == 2 ? "root_default" : parts[1]
        }
        return (segment, ChefCookbookFileRecord(name: basename, path: file.path, checksum: file.checksum, specificity: specificity))
    }

    static func validate(_ metadata: ChefCookbookMetadata, _ files: [ChefCookbookFile]) throws {
        let nameOK = !metadata.name.isEmpty && metadata.name.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "-"
        }
        guard nameOK else {
            throw ChefError(code: .invalidArgument, message: "invalid cookbook name '\(metadata.name)': use letters, digits, '_', '-'")
        }
        let numbers = metadata.version.split(separator: ".", omittingEmptySubsequences: false)
        guard (2...3).contains(numbers.count), numbers.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }) else {
            throw ChefError(code: .invalidArgument, message: "invalid cookbook version '\(metadata.version)': use x.y.z")
        }
        var seen = Set<String>()
        for f in files {
            let parts = f.path.split(separator: "/", omittingEmptySubsequences: false)
            guard !f.path.isEmpty, !f.path.hasPrefix("/"), !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                throw ChefError(code: .invalidArgument, message: "invalid cookbook file path '\(f.path)'")
            }
            guard seen.insert(f.path).inserted else {
                throw ChefError(code: .invalidArgument, message: "cookbook file '\(f.path)' listed twice")
            }
        }
    }

    static func json(_ metadata: ChefCookbookMetadata, _ files: [ChefCookbookFile], frozen: Bool) throws -> String {
        var segments: [String: [ChefCookbookFileRecord]] = Dictionary(uniqueKeysWithValues: ChefCookbookVersion.segmentNames.map { ($0, []) })
        var recipes: [String: ChefJSONValue] = [:]
        for file in files.sorted(by: { $0.path < $1.path }) {
            let (segment, record) = record(for: file)
            segments[segment, default: []].append(record)
            if segment == "recipes", record.name.hasSuffix(".rb"), file.path.split(separator: "/").count == 2 {
                let recipe = String(record.name.dropLast(3))
                recipes[recipe == "default" ? metadata.name : "\(metadata.name)::\(recipe)"] = ""
            }
        }
        let meta: ChefJSONValue = .object([
            "name": .string(metadata.name),
            "version": .string(metadata.version),
            "description": .string(metadata.description),
            "long_description": .string(metadata.longDescription),
            "maintainer": .string(metadata.maintainer),
            "maintainer_email": .string(metadata.maintainerEmail),
            "license": .string(metadata.license),
            "platforms": .object(metadata.platforms.mapValues { .string($0) }),
            "dependencies": .object(metadata.dependencies.mapValues { .string($0) }),
            "recommendations": .object([:]),
            "suggestions": .object([:]),
            "conflicting": .object([:]),
            "providing": .object([:]),
            "replacing": .object([:]),
            "attributes": .object([:]),
            "groupings": .object([:]),
            "recipes": .object(recipes),
        ])
        var members: [(String, String)] = [
            ("name", try JSONText.encode("\(metadata.name)-\(metadata.version)")),
            ("cookbook_name", try JSONText.encode(metadata.name)),
            ("version", try JSONText.encode(metadata.version)),
            ("json_class", try JSONText.encode("Chef::CookbookVersion")),
            ("chef_type", try JSONText.encode("cookbook_version")),
            ("frozen?", try JSONText.encode(frozen)),
            ("metadata", try JSONText.encode(meta)),
        ]
        for s in ChefCookbookVersion.segmentNames {
            members.append((s, try JSONText.encode(segments[s] ?? [])))
        }
        return JSONText.object(members)
    }
}
