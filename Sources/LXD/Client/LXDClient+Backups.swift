import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat

extension LXDClient {
    /// Exports an instance, with its snapshots, as LXD's backup tarball (gzip) into `path`: LXD makes a
    /// backup (`POST .../backups`), the tarball is streamed to `path.part` (never held in memory), synced
    /// and renamed, and the backup is deleted. A backup of that name left by an earlier, interrupted export
    /// is replaced. `lxc import` (or `POST /1.0/instances` with the tarball) brings the instance back.
    public func exportInstance(_ name: String, to path: String, timeout: Duration = .seconds(1800)) async throws {
        try LXDName.validateInstance(name)
        let backup = "iotgw-export"
        let backups = Self.instancePath(name) + "/backups"
        do { try await asyncCall(.DELETE, backups + "/" + backup) } catch let e as LXDError where e.code == .notFound {}
        struct BackupsPost: Encodable {
            var name: String
            var instance_only = false
            var optimized_storage = false
            var compression_algorithm = "gzip"
        }
        try await asyncCall(.POST, backups, headers: Self.jsonHeaders, body: try Self.jsonBody(BackupsPost(name: backup)), timeout: timeout)
        do { try await download(backups + "/" + backup + "/export", to: path, timeout: timeout) } catch {
            _ = try? await asyncCall(.DELETE, backups + "/" + backup)
            throw error
        }
        try await asyncCall(.DELETE, backups + "/" + backup)
    }

    /// Streams a `GET` response body into `path` (through `path.part`, synced, then renamed).
    func download(_ path: String, to file: String, timeout: Duration) async throws {
        if let err = LXDSocket.probe(socketPath) {
            throw LXDError(code: .unreachable, message: "LXD is not answering on \(socketPath): \(String(cString: strerror(err)))")
        }
        let request = makeRequest(.GET, uri(path))
        let response: HTTPClientResponse
        do { response = try await http.execute(request, timeout: .seconds(Int64(timeout.components.seconds)), logger: logger) } catch {
            throw LXDError(code: .unreachable, message: "\(socketPath): \(error)")
        }
        guard response.status.code < 300 else {
            let body = try await response.body.collect(upTo: 64 * 1024)
            try check(RawResponse(status: Int(response.status.code), headers: response.headers, body: body))
            return
        }
        let part = file + ".part"
        try? FileManager.default.removeItem(atPath: part)
        guard FileManager.default.createFile(atPath: part, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: part) else {
            throw LXDError(code: .invalidArgument, message: "cannot create \(part)")
        }
        do {
            for try await chunk in response.body { try handle.write(contentsOf: Data(buffer: chunk)) }
            try handle.synchronize()
            try handle.close()
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: part)
            throw error
        }
        try? FileManager.default.removeItem(atPath: file)
        try FileManager.default.moveItem(atPath: part, toPath: file)
    }
}
