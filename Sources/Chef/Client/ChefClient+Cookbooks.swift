import NIOCore
import NIOHTTP1

/// Cookbook upload as `knife cookbook upload` does it (`Chef::CookbookUploader`): create a sandbox
/// for the files' MD5s, upload the ones the server lacks, commit the sandbox, then `PUT` the
/// cookbook version manifest. Needs an admin (or a user allowed to upload cookbooks).
extension ChefClient {
    /// Uploads one cookbook version.
    ///
    /// - Parameters:
    ///   - freeze: mark the version frozen (later uploads of it then fail with `.conflict`).
    /// - Throws: `.invalidArgument` for bad names, versions or paths (nothing is sent then);
    ///   `.conflict` when the version exists and is frozen.
    @discardableResult
    public func uploadCookbook(_ metadata: ChefCookbookMetadata, files: [ChefCookbookFile], freeze: Bool = false) async throws -> ChefCookbookUpload {
        try CookbookManifest.validate(metadata, files)
        let manifest = try CookbookManifest.json(metadata, files, frozen: freeze)
        let byChecksum = Dictionary(files.map { ($0.checksum, $0) }, uniquingKeysWith: { first, _ in first })

        // A checksum another upload has announced but not yet sent counts as present in our
        // sandbox, and the commit then fails with 503 until that upload finishes. A fresh sandbox
        // asks again and uploads what is still missing (goiardi did this to two parallel uploads).
        var (uploaded, present): ([String], [String]) = ([], [])
        for attempt in 1...Self.sandboxAttempts {
            present = []  // what an earlier attempt uploaded stays counted as uploaded by us
            let sandbox = try await createSandbox(checksums: Array(byChecksum.keys))
            for (checksum, file) in byChecksum.sorted(by: { $0.key < $1.key }) {
                guard let entry = sandbox.checksums[checksum], entry.needsUpload else {
                    if !uploaded.contains(checksum) { present.append(checksum) }
                    continue
                }
                guard let url = entry.url else {
                    throw ChefError(code: .invalidResponse, message: "sandbox \(sandbox.sandboxID) wants \(checksum) but gave no upload URL")
                }
                try await uploadFile(file, to: url)
                if !uploaded.contains(checksum) { uploaded.append(checksum) }
            }
            do {
                try await commitSandbox(sandbox)
                break
            } catch let error as ChefError where error.status == 503 && attempt < Self.sandboxAttempts {
                logger.notice("chef sandbox commit raced another upload, retrying", metadata: ["chef.error": "\(error.message)"])
                try await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
        try await call(.PUT, "cookbooks/\(metadata.name)/\(metadata.version)", body: Array(manifest.utf8))
        logger.info("chef cookbook uploaded", metadata: [
            "chef.cookbook": "\(metadata.name)", "chef.version": "\(metadata.version)",
            "chef.uploaded": "\(uploaded.count)", "chef.present": "\(present.count)",
        ])
        return ChefCookbookUpload(name: metadata.name, version: metadata.version, uploaded: uploaded, alreadyPresent: present)
    }

    static let sandboxAttempts = 4

    /// `POST /sandboxes` for these MD5 checksums (lowercase hex).
    public func createSandbox(checksums: [String]) async throws -> ChefSandbox {
        let body: [String: ChefJSONValue] = ["checksums": .object(Dictionary(uniqueKeysWithValues: checksums.map { ($0, .null) }))]
        return try await call(.POST, "sandboxes", body: Self.encode(body), as: ChefSandbox.self)
    }

    /// `PUT` of one file's bytes to the URL the sandbox gave, signed, with `Content-MD5`.
    public func uploadFile(_ file: ChefCookbookFile, to url: String) async throws {
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw ChefError(code: .invalidResponse, message: "sandbox upload URL is not http(s): \(url)")
        }
        let raw = try await exchange(.PUT, url: url, body: file.contents, contentType: "application/x-binary",
                                     extraHeaders: ["Content-MD5": file.contentMD5])
        try Self.check(raw)
    }

    /// `PUT /sandboxes/ID {"is_completed":true}`: the server checks every file arrived.
    public func commitSandbox(_ sandbox: ChefSandbox) async throws {
        try Self.validateName(sandbox.sandboxID, "sandbox")
        try await call(.PUT, "sandboxes/\(sandbox.sandboxID)", body: Self.encode(["is_completed": true]))
    }

    /// `GET /cookbooks/NAME/VERSION` (`_latest` for the newest).
    public func cookbookVersion(_ name: String, version: String) async throws -> ChefCookbookVersion {
        try Self.validateName(name, "cookbook")
        try Self.validateName(version, "cookbook version")
        return try await call(.GET, "cookbooks/\(name)/\(version)", as: ChefCookbookVersion.self)
    }

    /// `GET` of a cookbook file's content from the `url` of its manifest record (signed).
    public func cookbookFileContents(_ record: ChefCookbookFileRecord, maxBytes: Int = 16 * 1024 * 1024) async throws -> [UInt8] {
        guard let url = record.url else {
            throw ChefError(code: .invalidArgument, message: "cookbook file \(record.path) has no URL")
        }
        var copy = self
        copy.maxResponseBytes = maxBytes
        let raw = try await copy.exchange(.GET, url: url)
        try Self.check(raw)
        return Array(buffer: raw.body)
    }

    /// `DELETE /cookbooks/NAME/VERSION`.
    public func deleteCookbook(_ name: String, version: String) async throws {
        try Self.validateName(name, "cookbook")
        try Self.validateName(version, "cookbook version")
        try await call(.DELETE, "cookbooks/\(name)/\(version)")
    }
}
