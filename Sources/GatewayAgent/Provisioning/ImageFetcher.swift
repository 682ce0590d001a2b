import AsyncHTTPClient
import Foundation
import GatewayProtocol
import Logging
import LXD
import NIOCore

/// The images the gateway has, by full fingerprint, and the way to add one. `LXDClient` is the real one.
public protocol ImageStore: Sendable {
    func hasImage(fingerprint: String) async throws -> Bool
    /// Imports a unified image tarball whose SHA-256 the caller checked is `fingerprint` (the store may
    /// check it again, but need not hash the file a second time).
    func importImage(tarball path: String, fingerprint: String) async throws
}

extension LXDClient: ImageStore {
    public func hasImage(fingerprint: String) async throws -> Bool {
        do {
            // LXD also answers a unique prefix: only the full fingerprint counts.
            return try await image(fingerprint: fingerprint).fingerprint == fingerprint
        } catch let e as LXDError where e.code == .notFound {
            return false
        }
    }

    public func importImage(tarball path: String, fingerprint: String) async throws {
        // LXD verifies the bytes against the fingerprint it is sent: no second pass over a large file here.
        try await upload(tarball: path, fingerprint: fingerprint)
    }
}

/// A download in progress, as `iot-gateway status` shows it.
public struct ImageDownload: Sendable, Codable, Equatable {
    public var fingerprint: String
    /// The vendors waiting for it (one download serves every vendor naming the same fingerprint).
    public var vendors: [String]
    public var bytes: Int64
    /// Nil until the server said how big the image is.
    public var totalBytes: Int64?
}

/// Brings a plan's image onto the gateway when LXD does not have it yet, or when another vendor served it
/// (a vendor gets an image only by serving its bytes itself: knowing a fingerprint is not having the
/// image): downloads the unified tarball from the vendor's image server (`ImageRef.url`, on a host
/// `GrantCheck.checkImage` allowed), resuming a partial file with a `Range` request (after a dropped
/// connection or a restart of the daemon), refuses anything over `images.maxMiB` or whose SHA-256 is not
/// the plan's fingerprint (then nothing is imported and the partial file is removed), and imports it
/// through LXD's API once: vendors naming the same fingerprint share one image in LXD. The owner's own
/// images (never downloaded by the gateway) are used as they are.
///
/// Downloads use the vendors' HTTP client, which never follows a redirect: the owner's host check holds.
public actor ImageFetcher {
    let http: HTTPClient
    let store: any ImageStore
    /// Partial downloads, `<fingerprint>.part`, mode 0600 in a 0700 directory.
    let directory: String
    let maxBytes: Int64
    let logger: Logger
    /// Attempts per call before the step fails (the reconcile lane retries later, resuming).
    let attempts: Int
    /// Where imported images are recorded as the gateway's own (the only ones `Pruner` deletes).
    let records: GatewayStore?
    /// Checked once the server said how big the image is.
    let disk: DiskGuard?
    private var inflight: [String: Task<Void, any Error>] = [:]
    private var progress: [String: ImageDownload] = [:]

    public init(http: HTTPClient, store: any ImageStore, directory: String, maxBytes: Int64, logger: Logger, attempts: Int = 3,
                records: GatewayStore? = nil, disk: DiskGuard? = nil) {
        self.records = records
        self.disk = disk
        self.http = http
        self.store = store
        self.directory = directory
        self.maxBytes = maxBytes
        self.logger = logger
        self.attempts = attempts
    }

    /// Downloads in progress, by fingerprint.
    public func downloads() -> [ImageDownload] { progress.values.sorted { $0.fingerprint < $1.fingerprint } }

    /// Makes sure LXD has the image `ref` names, by its full fingerprint.
    /// - Throws: ``GatewayError/Code/digestMismatch`` for a download that is not the plan's image,
    ///   ``GatewayError/Code/imageDownload`` when it cannot be fetched or is too big.
    public func ensure(_ ref: ImageRef, vendor: String) async throws {
        let fp = ref.fingerprint.lowercased()
        let key = fp + " " + vendor
        if let running = inflight[key] { return try await running.value }
        guard let url = ref.url else {
            throw GatewayError(.imageDownload, "image \(fp.prefix(12)) is not on this gateway and the plan names no URL for it")
        }
        let task = Task { try await self.fetch(url, fingerprint: fp, vendor: vendor, key: key) }
        inflight[key] = task
        defer {
            inflight[key] = nil
            progress[key] = nil
        }
        try await task.value
    }

    private func fetch(_ url: String, fingerprint fp: String, vendor: String, key: String) async throws {
        if try await store.hasImage(fingerprint: fp) {
            let servedBy = try await records?.imageVendors(fp) ?? []
            if servedBy.isEmpty || servedBy.contains(vendor) { return }
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let part = (directory as NSString).appendingPathComponent("\(fp)-\(vendor).part")
        progress[key] = ImageDownload(fingerprint: fp, vendors: [vendor], bytes: Self.size(of: part), totalBytes: nil)
        var attempt = 0
        while true {
            attempt += 1
            do {
                try await download(url, to: part, fingerprint: fp, key: key)
                break
            } catch let e as TooLarge {
                try? FileManager.default.removeItem(atPath: part)
                throw e.error
            } catch let e as GatewayError where e.code == .diskSpace {
                throw e
            } catch {
                guard attempt < attempts, !Task.isCancelled else {
                    throw GatewayError(.imageDownload, "image \(fp.prefix(12)) not downloaded after \(attempt) attempts: \(error.safeDescription)")
                }
                logger.warning("image download interrupted, resuming", metadata: [
                    "iotgw.image": "\(fp.prefix(12))", "iotgw.bytes": "\(Self.size(of: part))", "iotgw.error": "\(error.safeDescription)",
                ])
                try await Task.sleep(for: .milliseconds(250 << attempt))
            }
        }
        let sha = try await LXDClient.sha256(ofFile: part)
        guard sha == fp else {
            // Corrupt or not the image the vendor signed: nothing is imported, and the next try starts afresh.
            try? FileManager.default.removeItem(atPath: part)
            throw GatewayError(.digestMismatch, "the image downloaded for \(vendor) has SHA-256 \(sha.prefix(12)), the plan names \(fp.prefix(12)): "
                               + "refused, nothing imported")
        }
        if try await !store.hasImage(fingerprint: fp) { try await store.importImage(tarball: part, fingerprint: fp) }
        try await records?.recordDownloadedImage(fp, vendor: vendor, at: Date())
        try? FileManager.default.removeItem(atPath: part)
        logger.notice("image downloaded and imported", metadata: ["iotgw.image": "\(fp.prefix(12))", "iotgw.vendor": "\(vendor)"])
    }

    /// Appends the rest of the image to `part` (all of it when the server ignores the range).
    private func download(_ url: String, to part: String, fingerprint fp: String, key: String) async throws {
        let have = Self.size(of: part)
        var request = HTTPClientRequest(url: url)
        if have > 0 { request.headers.add(name: "Range", value: "bytes=\(have)-") }
        let response = try await http.execute(request, timeout: .hours(2))
        let offset: Int64
        switch response.status.code {
        case 206 where have > 0 && (response.headers.first(name: "Content-Range") ?? "").hasPrefix("bytes \(have)-"):
            offset = have
        case 200:
            offset = 0
        default:
            throw GatewayError(.imageDownload, "the image server answered \(response.status.code)")
        }
        let total = response.headers.first(name: "Content-Length").flatMap(Int64.init).map { $0 + offset }
        if let total, total > maxBytes {
            throw TooLarge(error: GatewayError(.imageDownload, "image \(fp.prefix(12)) is \(total) bytes, larger than the owner's images.maxMiB"))
        }
        if let total, let disk {
            // The rest of the tarball, and LXD's own copy of all of it.
            try await disk.ensureHost(total - offset + total, at: directory, for: "downloading image \(fp.prefix(12))")
        }
        progress[key]?.totalBytes = total
        progress[key]?.bytes = offset
        let fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC | (offset == 0 ? O_TRUNC : O_APPEND), 0o600)
        guard fd >= 0 else { throw GatewayError(.imageDownload, "cannot open \(part) (errno \(errno))") }
        defer { close(fd) }
        var written = offset
        for try await chunk in response.body {
            written += Int64(chunk.readableBytes)
            guard written <= maxBytes else {
                throw TooLarge(error: GatewayError(.imageDownload, "image \(fp.prefix(12)) is larger than the owner's images.maxMiB"))
            }
            try chunk.withUnsafeReadableBytes { buffer in
                var at = 0
                while at < buffer.count {
                    let n = write(fd, buffer.baseAddress! + at, buffer.count - at)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw GatewayError(.imageDownload, "cannot write \(part) (errno \(errno))") }
                    at += n
                }
            }
            progress[key]?.bytes = written
        }
        guard fsync(fd) == 0 else { throw GatewayError(.imageDownload, "cannot sync \(part) (errno \(errno))") }
        if let total, written != total {
            throw GatewayError(.imageDownload, "the download stopped at \(written) of \(total) bytes")
        }
    }

    /// An image over the owner's limit: not retried, and its partial file goes.
    private struct TooLarge: Error { var error: GatewayError }

    static func size(of path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }
}
