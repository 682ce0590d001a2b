import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import _NIOFileSystem

extension LXDClient {
    /// All images in the local store.
    public func listImages() async throws -> [Image] {
        try await sync(.GET, "/1.0/images", query: [("recursion", "1")], as: [Image].self).0
    }

    /// One image by fingerprint (a unique prefix works too).
    public func image(fingerprint: String) async throws -> Image {
        try LXDName.validateObject(fingerprint, kind: "fingerprint")
        return try await sync(.GET, "/1.0/images/\(Self.pathEscape(fingerprint))", as: Image.self).0
    }

    /// An alias and the fingerprint it points to.
    public func imageAlias(_ name: String) async throws -> ImageAlias {
        try LXDName.validateObject(name, kind: "alias")
        return try await sync(.GET, "/1.0/images/aliases/\(Self.pathEscape(name))", as: ImageAlias.self).0
    }

    /// Points a new alias at an image (409 `.conflict` if the alias exists).
    public func createImageAlias(_ name: String, target fingerprint: String, description: String = "") async throws {
        try LXDName.validateObject(name, kind: "alias")
        try await syncSend(.POST, "/1.0/images/aliases", body: ImageAliasesPost(name: name, description: description, target: fingerprint))
    }

    /// Deletes an alias (not the image).
    public func deleteImageAlias(_ name: String) async throws {
        try LXDName.validateObject(name, kind: "alias")
        try check(try await exchange(makeRequest(.DELETE, uri("/1.0/images/aliases/\(Self.pathEscape(name))"))))
    }

    /// Deletes an image.
    public func deleteImage(fingerprint: String) async throws {
        try LXDName.validateObject(fingerprint, kind: "fingerprint")
        try await asyncCall(.DELETE, "/1.0/images/\(Self.pathEscape(fingerprint))")
    }

    /// SHA-256 of a local file, hex: LXD's fingerprint of a unified image tarball.
    public static func sha256(ofFile path: String) async throws -> String {
        do {
            return try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(path)) { handle in
                var hasher = SHA256()
                for try await chunk in handle.readChunks(chunkLength: .mebibytes(1)) {
                    chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                }
                return hasher.finalize().map { String(format: "%02x", $0) }.joined()
            }
        } catch let e as FileSystemError {
            throw LXDError(code: .invalidArgument, message: "cannot read \(path): \(e.message)")
        }
    }

    /// Uploads a unified image tarball (`metadata.yaml` + `rootfs/`) and returns its fingerprint.
    ///
    /// The SHA-256 is computed first and sent as `X-LXD-fingerprint`, so LXD rejects a corrupted
    /// upload; the result is checked again against what LXD reports. `progress` gets bytes sent.
    /// An image already present is not uploaded again. 5.0 creates no alias on upload: see `createImageAlias`.
    public func importImage(tarball path: String, expectedFingerprint: String? = nil,
                            progress: (@Sendable (Int64) -> Void)? = nil) async throws -> String {
        let fingerprint = try await Self.sha256(ofFile: path)
        if let expectedFingerprint, expectedFingerprint.lowercased() != fingerprint {
            throw LXDError(code: .fingerprintMismatch, message: "\(path) has fingerprint \(fingerprint), expected \(expectedFingerprint)")
        }
        if (try? await image(fingerprint: fingerprint)) != nil { return fingerprint }
        try await upload(tarball: path, fingerprint: fingerprint, progress: progress)
        return fingerprint
    }

    /// Uploads a tarball whose SHA-256 the caller already computed (`fingerprint`). LXD checks it
    /// against the bytes it receives (`X-LXD-fingerprint`) and refuses a mismatch; what it reports
    /// storing is checked too.
    public func upload(tarball path: String, fingerprint: String, progress: (@Sendable (Int64) -> Void)? = nil) async throws {
        let headers: HTTPHeaders = [
            "Content-Type": "application/octet-stream",
            "X-LXD-fingerprint": fingerprint,
            "X-LXD-filename": (path as NSString).lastPathComponent,
        ]
        var op: LXDOperation?
        try await streamLocalFile(path, progress: progress) { body in
            op = try await asyncCall(.POST, "/1.0/images", headers: headers, body: body, requestTimeout: .hours(1))
        }
        let reported = op?.metadata?["fingerprint"]?.stringValue
        guard reported == fingerprint else {
            throw LXDError(code: .fingerprintMismatch, message: "LXD stored \(reported ?? "nothing"), uploaded \(fingerprint)")
        }
    }

    /// Checks that `alias` resolves to an image with exactly `fingerprint`.
    public func verifyImage(alias: String, fingerprint: String) async throws {
        let a = try await imageAlias(alias)
        guard a.target == fingerprint.lowercased() else {
            throw LXDError(code: .fingerprintMismatch, message: "image \(alias) is \(a.target), expected \(fingerprint)")
        }
    }
}
