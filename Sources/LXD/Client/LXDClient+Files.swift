import AsyncHTTPClient
import Foundation
import NIOCore
import NIOConcurrencyHelpers
import NIOHTTP1
import _NIOFileSystem

/// Owner and mode of a file inside an instance.
public struct FileAttributes: Sendable, Equatable {
    public var uid: Int
    public var gid: Int
    /// Permission bits, e.g. `0o644`.
    public var mode: Int

    public init(uid: Int = 0, gid: Int = 0, mode: Int = 0o644) {
        self.uid = uid
        self.gid = gid
        self.mode = mode
    }

    /// LXD parses `X-LXD-mode` with Go's `ParseInt(v, 0, 0)`: it must carry a leading zero to be octal.
    var modeHeader: String {
        let octal = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - octal.count)) + octal
    }
}

/// What `pull` returns.
public struct PulledFile: Sendable {
    public var content: ByteBuffer
    public var attributes: FileAttributes
    /// `file`, `directory` or `symlink`.
    public var type: String
    /// For a directory: its entry names.
    public var entries: [String]
}

extension LXDClient {
    func filesURI(_ instance: String, _ path: String) -> String {
        uri(Self.instancePath(instance) + "/files", [("path", path)])
    }

    static func fileHeaders(_ attrs: FileAttributes?, type: String, write: String = "overwrite") -> HTTPHeaders {
        var h: HTTPHeaders = ["Content-Type": "application/octet-stream", "X-LXD-type": type, "X-LXD-write": write]
        if let attrs {
            h.add(name: "X-LXD-uid", value: String(attrs.uid))
            h.add(name: "X-LXD-gid", value: String(attrs.gid))
            h.add(name: "X-LXD-mode", value: attrs.modeHeader)
        }
        return h
    }

    /// Runs a whole-file read or overwrite again, up to twice, when LXD's file server dropped it
    /// (``LXDError/isFileServerReset``). Not an append or a delete, which LXD may have done before the reset.
    func againIfFileServerReset<T>(_ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do { return try await body() } catch let e as LXDError where e.isFileServerReset && attempt < 2 {
                attempt += 1
                logger.debug("lxd file server reset: trying again", metadata: ["lxd.error": "\(e.message)"])
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    static func validatePath(_ path: String) throws {
        guard path.hasPrefix("/"), !path.contains("\0") else {
            throw LXDError(code: .invalidArgument, message: "instance path must be absolute: \(path)")
        }
    }

    /// Writes `content` to `path` in the instance. LXD applies owner and mode only when it creates the
    /// file; parent directories must already exist.
    public func push(_ instance: String, path: String, content: ByteBuffer, attributes: FileAttributes? = FileAttributes(),
                     append: Bool = false) async throws {
        try LXDName.validateInstance(instance)
        try Self.validatePath(path)
        let req = makeRequest(.POST, filesURI(instance, path),
                              headers: Self.fileHeaders(attributes, type: "file", write: append ? "append" : "overwrite"),
                              body: .bytes(content))
        // An append is not made twice: LXD may have written it before the reset.
        if append { return try check(try await exchange(req)) }
        try await againIfFileServerReset { try check(try await exchange(req)) }
    }

    /// Convenience for text and small blobs.
    public func push(_ instance: String, path: String, string: String, attributes: FileAttributes? = FileAttributes()) async throws {
        try await push(instance, path: path, content: ByteBuffer(string: string), attributes: attributes)
    }

    /// Streams a local file into the instance without holding it in memory. `progress` gets bytes sent so far.
    public func pushFile(_ instance: String, localPath: String, to path: String, attributes: FileAttributes? = FileAttributes(),
                         progress: (@Sendable (Int64) -> Void)? = nil) async throws {
        try LXDName.validateInstance(instance)
        try Self.validatePath(path)
        let headers = Self.fileHeaders(attributes, type: "file")
        let uri = filesURI(instance, path)
        try await streamLocalFile(localPath, progress: progress) { body in
            try check(try await exchange(makeRequest(.POST, uri, headers: headers, body: body), timeout: .hours(1)))
        }
    }

    /// Opens a local file and hands its content to `send` as a streamed request body of known length.
    func streamLocalFile(_ localPath: String, progress: (@Sendable (Int64) -> Void)?,
                         _ send: (HTTPClientRequest.Body) async throws -> Void) async throws {
        do {
            try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(localPath)) { handle in
                let size = try await handle.info().size
                let sent = ByteCounter()
                let chunks = handle.readChunks(in: 0..<size, chunkLength: .mebibytes(1)).map { chunk in
                    progress?(sent.add(Int64(chunk.readableBytes)))
                    return chunk
                }
                try await send(.stream(chunks, length: .known(size)))
            }
        } catch let e as FileSystemError {
            throw LXDError(code: .invalidArgument, message: "cannot read \(localPath): \(e.message)")
        }
    }

    /// Creates a directory (its parent must exist). An existing directory is left as it is.
    public func mkdir(_ instance: String, path: String, attributes: FileAttributes = FileAttributes(mode: 0o755)) async throws {
        try LXDName.validateInstance(instance)
        try Self.validatePath(path)
        let req = makeRequest(.POST, filesURI(instance, path), headers: Self.fileHeaders(attributes, type: "directory"))
        try check(try await exchange(req))
    }

    /// Creates a directory and its missing parents, like `mkdir -p`.
    public func mkdirAll(_ instance: String, path: String, attributes: FileAttributes = FileAttributes(mode: 0o755)) async throws {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            try await mkdir(instance, path: current, attributes: attributes)
        }
    }

    /// Reads a file or lists a directory.
    public func pull(_ instance: String, path: String, maxBytes: Int = 64 * 1024 * 1024) async throws -> PulledFile {
        try LXDName.validateInstance(instance)
        try Self.validatePath(path)
        let raw = try await againIfFileServerReset {
            let raw = try await exchange(makeRequest(.GET, filesURI(instance, path)), limit: maxBytes)
            try check(raw)
            return raw
        }
        let h = raw.headers
        let attrs = FileAttributes(uid: Int(h.first(name: "X-LXD-uid") ?? "") ?? -1,
                                   gid: Int(h.first(name: "X-LXD-gid") ?? "") ?? -1,
                                   mode: Int(h.first(name: "X-LXD-mode") ?? "", radix: 8) ?? -1)
        let type = h.first(name: "X-LXD-type") ?? "file"
        var entries: [String] = []
        if type == "directory" { entries = try decode([String].self, from: raw).sorted() }
        return PulledFile(content: raw.body, attributes: attrs, type: type, entries: entries)
    }

    /// Deletes a file or an empty directory.
    public func deleteFile(_ instance: String, path: String) async throws {
        try LXDName.validateInstance(instance)
        try Self.validatePath(path)
        try check(try await exchange(makeRequest(.DELETE, filesURI(instance, path))))
    }

    /// Pushes a local directory tree to `path` (created with its parents), keeping file modes.
    /// Symlinks are pushed as symlinks. Returns the number of files pushed.
    @discardableResult
    public func pushTree(_ instance: String, localDirectory: String, to path: String, uid: Int = 0, gid: Int = 0) async throws -> Int {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: localDirectory, isDirectory: &isDir), isDir.boolValue else {
            throw LXDError(code: .invalidArgument, message: "not a directory: \(localDirectory)")
        }
        try await mkdirAll(instance, path: path, attributes: FileAttributes(uid: uid, gid: gid, mode: 0o755))
        let base = URL(fileURLWithPath: localDirectory)
        let relPaths = (try fm.subpathsOfDirectory(atPath: localDirectory)).sorted()  // parents sort before children
        var files = 0
        for rel in relPaths {
            let local = base.appendingPathComponent(rel).path
            let remote = path + "/" + rel
            let attrs = try fm.attributesOfItem(atPath: local)
            let mode = (attrs[.posixPermissions] as? NSNumber)?.intValue ?? 0o644
            switch attrs[.type] as? FileAttributeType {
            case .typeDirectory?:
                try await mkdir(instance, path: remote, attributes: FileAttributes(uid: uid, gid: gid, mode: mode))
            case .typeSymbolicLink?:
                let target = try fm.destinationOfSymbolicLink(atPath: local)
                let req = makeRequest(.POST, filesURI(instance, remote), headers: Self.fileHeaders(nil, type: "symlink"),
                                      body: .bytes(ByteBuffer(string: target)))
                try check(try await exchange(req))
            case .typeRegular?:
                try await pushFile(instance, localPath: local, to: remote, attributes: FileAttributes(uid: uid, gid: gid, mode: mode))
                files += 1
            default:
                continue
            }
        }
        return files
    }
}

/// Counts bytes sent across the body stream's callbacks.
final class ByteCounter: Sendable {
    private let storage = NIOLockedValueBox<Int64>(0)
    func add(_ n: Int64) -> Int64 { storage.withLockedValue { $0 += n; return $0 } }
}
