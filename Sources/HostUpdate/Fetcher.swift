import AsyncHTTPClient
import Crypto
import Foundation
import GatewayProtocol
import NIOCore
import NIOFoundationCompat

#if canImport(Glibc)
import Glibc
#endif

/// Fetches the manifest and its artifacts from the operator's update server. Every call has a
/// timeout and a size limit; artifacts are hashed while they stream to disk.
public struct Fetcher: Sendable {
    let http: HTTPClient
    let policy: URLPolicy

    public init(http: HTTPClient, allowInsecureHTTP: Bool) {
        self.http = http
        policy = URLPolicy(allowInsecureHTTP: allowInsecureHTTP)
    }

    /// A client for the updater: no redirects (a redirect could leave https or the operator's server).
    public static var httpConfiguration: HTTPClient.Configuration {
        var c = HTTPClient.Configuration()
        c.redirectConfiguration = .disallow
        c.timeout = .init(connect: .seconds(15), read: .seconds(60))
        return c
    }

    /// The manifest envelope's bytes.
    public func manifest(_ url: URL) async throws -> Data {
        var req = HTTPClientRequest(url: url.absoluteString)
        req.method = .GET
        do {
            let response = try await http.execute(req, timeout: .seconds(60))
            guard response.status == .ok else {
                throw HostUpdateError(.download, "GET \(url.absoluteString) answered HTTP \(response.status.code)")
            }
            return Data(buffer: try await response.body.collect(upTo: ManifestVerifier.maxEnvelopeBytes + 1))
        } catch let e as HostUpdateError {
            throw e
        } catch let e as NIOTooManyBytesError {
            throw HostUpdateError(.tooLarge, "the manifest at \(url.absoluteString) is larger than \(ManifestVerifier.maxEnvelopeBytes) bytes: \(e)")
        } catch {
            throw HostUpdateError(.download, "cannot fetch the manifest from \(url.absoluteString): \(error)")
        }
    }

    /// Downloads an artifact to `path` (mode 0600) and checks its size and SHA-256 against the signed
    /// manifest; on any mismatch the file is removed and nothing else is touched.
    public func download(_ artifact: HostManifest.Artifact, relativeTo base: URL, to path: String, timeout: TimeAmount = .seconds(1800)) async throws {
        let url = try policy.check(artifact.url, relativeTo: base)
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw HostUpdateError(.io, "cannot create \(path): errno \(errno)") }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var ok = false
        defer {
            try? handle.close()
            if !ok { unlink(path) }
        }
        var hasher = SHA256()
        var total = 0
        do {
            let response = try await http.execute(HTTPClientRequest(url: url.absoluteString), timeout: timeout)
            guard response.status == .ok else {
                throw HostUpdateError(.download, "GET \(url.absoluteString) answered HTTP \(response.status.code)")
            }
            for try await chunk in response.body {
                total += chunk.readableBytes
                guard total <= artifact.size else {
                    throw HostUpdateError(.digestMismatch, "\(url.absoluteString) is larger than the manifest's \(artifact.size) bytes")
                }
                chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                try handle.write(contentsOf: Data(buffer: chunk))
            }
        } catch let e as HostUpdateError {
            throw e
        } catch {
            throw HostUpdateError(.download, "cannot download \(url.absoluteString): \(error)")
        }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard total == artifact.size, digest == artifact.sha256 else {
            throw HostUpdateError(.digestMismatch, "\(url.absoluteString) is \(total) bytes with SHA-256 \(digest); the signed manifest says \(artifact.size) bytes, \(artifact.sha256)")
        }
        guard fsync(fd) == 0 else { throw HostUpdateError(.io, "cannot sync \(path): errno \(errno)") }
        ok = true
    }
}

/// The agent's health as `iot-gateway status` sees it: `GET /v1/status` on the control socket answers
/// 200 with the gateway's id. Talks HTTP over the unix socket itself: no GatewayAgent code is needed.
public struct HealthCheck: Sendable {
    public let socketPath: String
    let http: HTTPClient

    public init(socketPath: String, http: HTTPClient) {
        self.socketPath = socketPath
        self.http = http
    }

    struct Status: Decodable { var gatewayID: String }

    /// One probe: nil when healthy, else why not.
    public func probe() async -> String? {
        let host = socketPath.addingPercentEncoding(withAllowedCharacters: .urlHostAllowed) ?? socketPath
        var req = HTTPClientRequest(url: "http+unix://\(host)/v1/status")
        req.headers.add(name: "Host", value: "localhost")
        do {
            let response = try await http.execute(req, timeout: .seconds(5))
            let body = try await response.body.collect(upTo: 16 * 1024 * 1024)
            guard response.status == .ok else { return "status answered HTTP \(response.status.code)" }
            let s = try JSONDecoder().decode(Status.self, from: Data(buffer: body))
            return s.gatewayID.isEmpty ? "status has no gateway id" : nil
        } catch {
            return "no answer on \(socketPath): \(error)"
        }
    }

    /// Probes once a second until healthy or `deadline` passes; nil when healthy, else the last reason.
    public func waitHealthy(within timeout: Duration, clock: ContinuousClock = .init()) async -> String? {
        let deadline = clock.now.advanced(by: timeout)
        var last = "not probed"
        while clock.now < deadline {
            guard let why = await probe() else { return nil }
            last = why
            try? await Task.sleep(for: .seconds(1))
        }
        return last
    }
}
