import Chef
import Foundation
import Logging

/// Why a cookbook on disk could not be read: the file, the 1-based line (0: the file as a whole) and
/// what is wrong with it. Its description is `file:line: message`, like a compiler's.
public struct CookbookSourceError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int = 0, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

/// Reads a cookbook's `metadata.rb` without Ruby.
///
/// `metadata.rb` is Ruby; this parser understands only the plain form knife's generator writes, one
/// statement per line: `key 'value'` or `key "value"`, several values separated by commas, comments
/// after `#`. Anything else (method calls, `IO.read`, interpolation, `%w()`, blocks, statements spread
/// over lines, unknown settings) is refused with the file and line rather than guessed at.
///
/// Settings read into ``ChefCookbookMetadata``: `name`, `version` (both required), `description`,
/// `long_description`, `maintainer`, `maintainer_email`, `license`, `depends 'cookbook'[, 'constraint']`,
/// `supports 'platform'[, 'constraint']`. Checked but not sent (``ChefCookbookMetadata`` has no field for
/// them): `chef_version`, `ohai_version`, `source_url`, `issues_url`, `gem`.
public enum CookbookMetadataParser {
    /// Parses the text of a `metadata.rb`; `file` names it in errors.
    /// - Throws: ``CookbookSourceError`` naming the first line it cannot understand.
    public static func parse(_ text: String, file: String = "metadata.rb") throws -> ChefCookbookMetadata {
        var metadata = ChefCookbookMetadata(name: "", version: "")
        var firstLine: [String: Int] = [:]
        var dependencyLine: [String: Int] = [:]
        var platformLine: [String: Int] = [:]

        var body = Substring(text)
        if body.first == "\u{FEFF}" { body = body.dropFirst() }
        let lines = body.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, raw) in lines.enumerated() {
            let number = index + 1
            func fail(_ message: String) -> CookbookSourceError { CookbookSourceError(file: file, line: number, message) }

            let line = raw.drop(while: { $0 == " " || $0 == "\t" })
            if line.isEmpty || line.first == "#" || line.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) { continue }
            let statement = try Statement(line, fail: fail)
            let key = statement.key, values = statement.values

            func single() throws -> String {
                guard values.count == 1 else { throw fail("\(key) takes one string, got \(values.count)") }
                return values[0]
            }
            func once() throws {
                if let first = firstLine[key] { throw fail("\(key) is set twice (first on line \(first))") }
                firstLine[key] = number
            }

            switch key {
            case "name":
                try once()
                let name = try single()
                guard isCookbookName(name) else { throw fail("name '\(name)' must be letters, digits, '_' and '-'") }
                metadata.name = name
            case "version":
                try once()
                let version = try single()
                guard isVersion(version) else { throw fail("version '\(version)' must be x.y.z (or x.y), digits only") }
                metadata.version = version
            case "description":
                try once()
                metadata.description = try single()
            case "long_description":
                try once()
                metadata.longDescription = try single()
            case "maintainer":
                try once()
                metadata.maintainer = try single()
            case "maintainer_email":
                try once()
                metadata.maintainerEmail = try single()
            case "license":
                try once()
                metadata.license = try single()
            case "depends":
                guard (1...2).contains(values.count) else {
                    throw fail("depends takes a cookbook name and at most one version constraint, got \(values.count) strings")
                }
                let cookbook = values[0]
                guard isCookbookName(cookbook) else { throw fail("depends '\(cookbook)': not a cookbook name (letters, digits, '_', '-')") }
                if let first = dependencyLine[cookbook] { throw fail("depends '\(cookbook)' twice (first on line \(first))") }
                let constraint = values.count == 2 ? values[1] : ">= 0.0.0"
                guard isCookbookConstraint(constraint) else {
                    throw fail("depends '\(cookbook)': '\(constraint)' is not a version constraint like '>= 1.0' or '~> 2.1.0'")
                }
                dependencyLine[cookbook] = number
                metadata.dependencies[cookbook] = constraint
            case "supports":
                guard (1...2).contains(values.count) else {
                    throw fail("supports takes a platform and at most one version constraint, got \(values.count) strings")
                }
                let platform = values[0]
                guard isToken(platform) else { throw fail("supports '\(platform)': not a platform name") }
                if let first = platformLine[platform] { throw fail("supports '\(platform)' twice (first on line \(first))") }
                let constraint = values.count == 2 ? values[1] : ">= 0.0.0"
                guard isCookbookConstraint(constraint) else {
                    throw fail("supports '\(platform)': '\(constraint)' is not a version constraint like '>= 10.0'")
                }
                platformLine[platform] = number
                metadata.platforms[platform] = constraint
            case "chef_version", "ohai_version":
                for constraint in values where !isGemConstraint(constraint) {
                    throw fail("\(key) '\(constraint)' is not a version requirement like '>= 16'")
                }
            case "source_url", "issues_url":
                try once()
                _ = try single()
            case "gem":
                break
            default:
                throw fail("'\(key)' is not a metadata.rb setting this parser understands (it reads: \(knownKeys.joined(separator: ", ")))")
            }
        }
        guard !metadata.name.isEmpty else { throw CookbookSourceError(file: file, "no name line (name 'my_cookbook')") }
        guard !metadata.version.isEmpty else { throw CookbookSourceError(file: file, "no version line (version '1.0.0')") }
        return metadata
    }

    /// Reads and parses the `metadata.rb` at `path`.
    public static func load(path: String) throws -> ChefCookbookMetadata {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CookbookSourceError(file: path, "cannot read it as UTF-8 text")
        }
        return try parse(text, file: path)
    }

    static let knownKeys = [
        "name", "version", "description", "long_description", "maintainer", "maintainer_email", "license", "depends", "supports",
        "chef_version", "ohai_version", "source_url", "issues_url", "gem",
    ]

    /// Letters, digits, `_` and `-`: what Chef servers accept as a cookbook name.
    static func isCookbookName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 255 && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
    }

    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 255 && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }
    }

    /// `x.y` or `x.y.z`, digits only (`Chef::Version`).
    static func isVersion(_ s: some StringProtocol) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return (2...3).contains(parts.count) && parts.allSatisfy { !$0.isEmpty && $0.count <= 9 && $0.allSatisfy { $0.isASCII && $0.isNumber } }
    }

    /// A `Chef::VersionConstraint`: an optional operator (`=`, `>`, `<`, `>=`, `<=`, `~>`) and an `x.y[.z]` version.
    static func isCookbookConstraint(_ s: String) -> Bool {
        var rest = Substring(s)
        for op in [">=", "<=", "~>", ">", "<", "="] where rest.hasPrefix(op) {
            rest = rest.dropFirst(op.count).drop(while: { $0 == " " })
            break
        }
        return isVersion(rest)
    }

    /// A RubyGems requirement as `chef_version` takes it: an optional operator and a dotted version whose
    /// first part is a number (`16`, `>= 17.2`, `< 19.0.a`).
    static func isGemConstraint(_ s: String) -> Bool {
        var rest = Substring(s)
        for op in [">=", "<=", "~>", "!=", ">", "<", "="] where rest.hasPrefix(op) {
            rest = rest.dropFirst(op.count).drop(while: { $0 == " " })
            break
        }
        let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard let major = parts.first, !major.isEmpty, major.allSatisfy({ $0.isASCII && $0.isNumber }) else { return false }
        return parts.dropFirst().allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isNumber || $0.isLetter) } }
    }

    /// One `key 'value', "value"  # comment` line.
    struct Statement {
        var key: String
        var values: [String]

        init(_ line: Substring, fail: (String) -> CookbookSourceError) throws {
            var i = line.startIndex
            while i < line.endIndex, line[i].isASCII, line[i].isLetter || line[i].isNumber || line[i] == "_" { i = line.index(after: i) }
            key = String(line[..<i])
            values = []
            let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
            guard !key.isEmpty, let first = key.first, first.isLowercase || first == "_",
                  i == line.endIndex || isBlank(line[i]) || line[i] == "'" || line[i] == "\"" else {
                throw fail("cannot read \"\(Self.excerpt(line))\": only key 'value' lines and comments are understood")
            }
            guard Self.knownKey(key) else {
                throw fail("'\(key)' is not a metadata.rb setting this parser understands (it reads: \(CookbookMetadataParser.knownKeys.joined(separator: ", ")))")
            }
            while true {
                while i < line.endIndex, isBlank(line[i]) { i = line.index(after: i) }
                guard i < line.endIndex, line[i] == "'" || line[i] == "\"" else {
                    let what = values.isEmpty ? "\(key) must be followed by a quoted string" : "expected a quoted string after ','"
                    let found = i < line.endIndex ? "found \"\(Self.excerpt(line[i...]))\"" : "found the end of the line (one statement per line)"
                    throw fail("\(what), \(found)")
                }
                let (value, end) = try Self.literal(line, from: i, fail: fail)
                values.append(value)
                i = end
                while i < line.endIndex, isBlank(line[i]) { i = line.index(after: i) }
                if i == line.endIndex || line[i] == "#" { return }
                guard line[i] == "," else {
                    throw fail("unexpected \"\(Self.excerpt(line[i...]))\" after \(key)'s value: only quoted strings separated by ',' are understood")
                }
                i = line.index(after: i)
            }
        }

        static func knownKey(_ key: String) -> Bool { CookbookMetadataParser.knownKeys.contains(key) }

        static func excerpt(_ s: Substring) -> String {
            let trimmed = s.trimmingCharacters(in: .whitespacesAndNewlines)
            return trimmed.count > 40 ? String(trimmed.prefix(40)) + "…" : trimmed
        }

        /// A Ruby string literal starting at `start` (a quote): single quotes know `\'` and `\\`; double quotes
        /// know `\"`, `\\`, `\n`, `\t`, `\#` and refuse interpolation.
        static func literal(_ line: Substring, from start: Substring.Index,
                            fail: (String) -> CookbookSourceError) throws -> (String, Substring.Index) {
            let quote = line[start]
            var out = ""
            var i = line.index(after: start)
            while i < line.endIndex {
                let c = line[i]
                if c == quote { return (out, line.index(after: i)) }
                if c == "\\" {
                    let next = line.index(after: i)
                    guard next < line.endIndex else { break }
                    let e = line[next]
                    if quote == "'" {
                        if e == "'" || e == "\\" { out.append(e) } else { out.append("\\"); out.append(e) }
                    } else {
                        switch e {
                        case "\"", "\\", "#": out.append(e)
                        case "n": out.append("\n")
                        case "t": out.append("\t")
                        default: throw fail("unsupported escape \\\(e) in a double-quoted string (use single quotes)")
                        }
                    }
                    i = line.index(after: next)
                    continue
                }
                if quote == "\"", c == "#" {
                    let next = line.index(after: i)
                    if next < line.endIndex, "{$@".contains(line[next]) {
                        throw fail("string interpolation (#\(line[next])...) is Ruby code this parser does not run; write the value out")
                    }
                }
                out.append(c)
                i = line.index(after: i)
            }
            throw fail("unterminated string: the closing \(quote) must be on the same line")
        }
    }
}

/// A cookbook in a folder: its parsed `metadata.rb` and the files to upload.
public struct LocalCookbook: Sendable, Equatable {
    /// The cookbook's folder.
    public var directory: String
    public var metadata: ChefCookbookMetadata

    public init(directory: String, metadata: ChefCookbookMetadata) {
        self.directory = directory
        self.metadata = metadata
    }

    /// Reads `directory/metadata.rb`.
    /// - Throws: ``CookbookSourceError`` for a missing or unreadable `metadata.rb` or a `chefignore`.
    public static func load(directory: String) throws -> LocalCookbook {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("metadata.rb").path
        guard FileManager.default.fileExists(atPath: path) else { throw CookbookSourceError(file: path, "missing: not a cookbook folder") }
        try refuseChefignore(in: directory)
        return LocalCookbook(directory: directory, metadata: try CookbookMetadataParser.load(path: path))
    }

    /// Every cookbook directly under `root`: the subfolders with a `metadata.rb` (others, like `ansible/`,
    /// are skipped), sorted by folder name. All metadata is parsed before anything is returned.
    /// - Throws: ``CookbookSourceError`` for an unreadable `root`, a bad `metadata.rb`, or two folders
    ///   declaring the same cookbook name.
    public static func discover(in root: String) throws -> [LocalCookbook] {
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: root) } catch {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory)
            throw CookbookSourceError(file: root, !exists ? "no such folder" : isDirectory.boolValue ? "cannot list this folder" : "not a folder")
        }
        try refuseChefignore(in: root)
        var cookbooks: [LocalCookbook] = []
        var byName: [String: String] = [:]
        for entry in entries.sorted() where !entry.hasPrefix(".") {
            let directory = URL(fileURLWithPath: root).appendingPathComponent(entry).path
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue,
                  FileManager.default.fileExists(atPath: directory + "/metadata.rb") else { continue }
            let cookbook = try load(directory: directory)
            if let other = byName[cookbook.metadata.name] {
                throw CookbookSourceError(file: directory + "/metadata.rb", "cookbook '\(cookbook.metadata.name)' is also defined by \(other)")
            }
            byName[cookbook.metadata.name] = directory
            cookbooks.append(cookbook)
        }
        return cookbooks
    }

    /// knife leaves out what a `chefignore` lists; this uploader does not read it, so it refuses rather than
    /// upload files someone meant to keep off the server.
    static func refuseChefignore(in directory: String) throws {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("chefignore").path
        if FileManager.default.fileExists(atPath: path) {
            throw CookbookSourceError(file: path, "chefignore is not supported: the files it lists would be uploaded; remove it or upload with knife")
        }
    }

    /// Every regular file of the cookbook (dot files left out), as ``ChefCookbookFile/files(inDirectory:)`` reads them.
    public func files() throws -> [ChefCookbookFile] {
        try ChefCookbookFile.files(inDirectory: directory)
    }

    /// Saves of a cookbook's versions in this process, one at a time per cookbook name (see ``upload(to:files:freeze:)``).
    static let saves = KeyedLock()

    /// Uploads this cookbook version the way `knife cookbook upload` does: files the server lacks are sent,
    /// then the version's manifest is saved. Running it again sends no file.
    ///
    /// A version already frozen on the server is left alone when its files are the same as `files` (the
    /// report's outcome is ``CookbookUploadReport/Outcome-swift.enum/frozenUnchanged``); when they differ
    /// it throws `ChefError` `.conflict` naming the differing files, before sending anything.
    ///
    /// - Parameters:
    ///   - files: what to upload; default: ``files()``.
    ///   - freeze: freeze the version (later changes need a new version).
    public func upload(to chef: ChefClient, files: [ChefCookbookFile]? = nil, freeze: Bool = false) async throws -> CookbookUploadReport {
        let files = try files ?? self.files()
        let name = metadata.name, version = metadata.version
        var existing: ChefCookbookVersion?
        do { existing = try await chef.cookbookVersion(name, version: version) } catch let error as ChefError where error.code == .notFound {
            existing = nil
        }
        var report = CookbookUploadReport(name: name, version: version, directory: directory, outcome: .uploaded, frozen: freeze,
                                          files: files.count, uploaded: [], alreadyPresent: [])
        if let existing, existing.frozen {
            let local = Dictionary(files.map { ($0.path, $0.checksum) }, uniquingKeysWith: { a, _ in a })
            let remote = Dictionary(existing.files.map { ($0.path, $0.checksum) }, uniquingKeysWith: { a, _ in a })
            guard local == remote else {
                let changed = local.keys.filter { remote[$0] != nil && remote[$0] != local[$0] }.sorted()
                let added = local.keys.filter { remote[$0] == nil }.sorted()
                let removed = remote.keys.filter { local[$0] == nil }.sorted()
                var parts: [String] = []
                if !changed.isEmpty { parts.append("changed: " + changed.joined(separator: ", ")) }
                if !added.isEmpty { parts.append("not on the server: " + added.joined(separator: ", ")) }
                if !removed.isEmpty { parts.append("only on the server: " + removed.joined(separator: ", ")) }
                throw ChefError(code: .conflict, message: "\(name) \(version) is frozen on the server and differs from \(directory) ("
                    + parts.joined(separator: "; ") + "); raise the version in metadata.rb")
            }
            report.outcome = .frozenUnchanged
            report.frozen = true
            report.alreadyPresent = files.map(\.path).sorted()
            return report
        }
        // goiardi 0.11.10 can keep only one of several versions of a cookbook saved at the same moment
        // (CI, December 4: a version whose save had succeeded was 404 at once; the test
        // `versionsOfOneCookbookUploadedAtOnceAreAllKept` lost one in three runs). So this process saves
        // one version of a cookbook at a time (December 5: with the read-back alone, a save racing with
        // another after both were read back still dropped one), and reads each back after its manifest is
        // saved, saving it again if the server lost it (a save from another process, a replica or `iot-daemon
        // publish-app`, can still race): a publish must not report a version the gateways then fail to
        // fetch; after three saves it throws the 404.
        let metadata = metadata
        let result = try await Self.saves.withLock(name) {
            var result = try await chef.uploadCookbook(metadata, files: files, freeze: freeze)
            for attempt in 1... {
                do {
                    _ = try await chef.cookbookVersion(name, version: version)
                    break
                } catch let error as ChefError where error.code == .notFound && attempt < 4 {
                    result.uploaded += try await chef.uploadCookbook(metadata, files: files, freeze: freeze).uploaded
                }
            }
            return result
        }
        let sent = Set(result.uploaded)
        report.uploaded = files.filter { sent.contains($0.checksum) }.map(\.path).sorted()
        report.alreadyPresent = files.filter { !sent.contains($0.checksum) }.map(\.path).sorted()
        return report
    }
}

/// What ``LocalCookbook/upload(to:files:freeze:)`` did with one cookbook version.
public struct CookbookUploadReport: Sendable, Codable, Equatable {
    public enum Outcome: String, Sendable, Codable {
        /// The manifest was saved (missing files sent first).
        case uploaded
        /// The version is frozen on the server with the same files; nothing was sent.
        case frozenUnchanged = "frozen-unchanged"
    }

    public var name: String
    public var version: String
    public var directory: String
    public var outcome: Outcome
    /// Whether the version is frozen on the server now.
    public var frozen: Bool
    /// How many files the cookbook has.
    public var files: Int
    /// Paths whose content was sent.
    public var uploaded: [String]
    /// Paths whose content the server already had.
    public var alreadyPresent: [String]
}

extension VendorConfiguration.ChefSettings {
    /// A client of `serverURL` signing as `adminName` with the key in `adminKey` (read now), as
    /// ``ChefProvisioner/configured(by:store:logger:now:)`` builds it, for tools that need no database.
    /// - Throws: ``ConfigurationError`` naming `chef.adminKey` or `chef.serverURL`.
    public func adminClient(logger: Logger) throws -> ChefClient {
        let pem: String
        do { pem = try String(contentsOfFile: adminKey, encoding: .utf8) } catch {
            throw ConfigurationError(.unreadable, field: "chef.adminKey", "cannot read the Chef admin key \(adminKey)")
        }
        let credentials: ChefCredentials
        do { credentials = try ChefCredentials(name: adminName, pemRepresentation: pem) } catch {
            throw ConfigurationError(.invalidField, field: "chef.adminKey", "\(adminKey) is not a PEM RSA private key")
        }
        do {
            return try ChefClient(serverURL: serverURL, organization: organization, credentials: credentials, logger: logger)
        } catch let error as ChefError {
            throw ConfigurationError(.invalidField, field: "chef.serverURL", error.message)
        }
    }
}
