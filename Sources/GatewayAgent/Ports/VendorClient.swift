import AsyncHTTPClient
import Foundation
import GatewayProtocol
import Logging
import NIOCore
import NIOFoundationCompat

/// Talks to vendors' daemons over its own HTTP client: redirects are never followed (a redirect
/// would carry the signed headers to another origin), `https` is required unless the owner allowed
/// plain `http` for that vendor, and every request is signed for its audience (vendor id and host)
/// with a fresh nonce, so no vendor can replay it to another.
public struct VendorClient: VendorAPI {
    let http: HTTPClient
    let identity: GatewayIdentity
    let logger: Logger
    public var timeout: TimeAmount = .seconds(10)

    /// The HTTP client configuration vendor traffic needs: no redirects, bounded connects.
    public static var httpConfiguration: HTTPClient.Configuration {
        var c = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(60)))
        c.httpVersion = .http1Only
        c.connectionPool.idleTimeout = DaemonHTTP.pooledConnectionIdle
        return c
    }

    /// - Parameter http: a client made with ``httpConfiguration`` (shared by all vendors, separate from
    ///   the LXD and control clients).
    public init(http: HTTPClient, identity: GatewayIdentity, logger: Logger) {
        self.http = http
        self.identity = identity
        self.logger = logger
    }

    public func announce(_ announcement: Announcement, to vendor: GatewayConfig.VendorEntry) async throws -> Data {
        try await post("/v1/announce", body: try WireJSON.encoder().encode(announcement), vendor: vendor,
                       limit: PlanValidator.maxPlanBytes + 1)
    }

    public func currentPlan(_ request: PlanRequest, from vendor: GatewayConfig.VendorEntry) async throws -> Data {
        try await post("/v1/plan", body: try WireJSON.encoder().encode(request), vendor: vendor, limit: PlanValidator.maxPlanBytes + 1)
    }

    public func bootstrap(_ request: BootstrapRequest, from vendor: GatewayConfig.VendorEntry) async throws -> Data {
        try await post("/v1/bootstrap", body: try WireJSON.encoder().encode(request), vendor: vendor,
                       limit: BootstrapBundle.maxSignedBytes + 1)
    }

    public func report(_ report: ProvisioningReport, to vendor: GatewayConfig.VendorEntry) async throws {
        _ = try await post("/v1/report", body: try WireJSON.encoder().encode(report), vendor: vendor, limit: 64 * 1024)
    }

    func post(_ path: String, body: Data, vendor: GatewayConfig.VendorEntry, limit: Int) async throws -> Data {
        guard let url = URL(string: vendor.daemonURL), let scheme = url.scheme, let host = url.host else {
            throw VendorError(kind: .refused(code: "badURL"), message: "vendor \(vendor.id)'s daemonURL is not a URL")
        }
        guard scheme == "https" || (scheme == "http" && vendor.allowInsecureHTTP) else {
            throw VendorError(kind: .refused(code: "insecure"),
                              message: "vendor \(vendor.id)'s daemonURL is plain http and the owner did not allow it (allowInsecureHTTP)")
        }
        let base = vendor.daemonURL.hasSuffix("/") ? String(vendor.daemonURL.dropLast()) : vendor.daemonURL
        var req = HTTPClientRequest(url: base + path)
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/json")
        let audience = RequestSignature.Audience(vendor: vendor.id, host: host)
        for (k, v) in try RequestSignature.headers(gatewayID: identity.id, key: identity.key, method: "POST", path: path, audience: audience,
                                                   body: body) {
            req.headers.add(name: k, value: v)
        }
        req.body = .bytes(ByteBuffer(data: body))
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await http.execute(req, timeout: timeout, logger: logger)
            // One byte over the limit is read so an oversized answer is detected, not truncated.
            bytes = try await response.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw VendorError(kind: .refused(code: "tooLarge"), message: "vendor \(vendor.id) answered more than \(limit) bytes")
        } catch {
            throw VendorError(kind: .unreachable, message: "vendor \(vendor.id) unreachable: \(Fields.displayText("\(error)", max: 200))")
        }
        let data = Data(buffer: bytes)
        switch response.status.code {
        case 200..<300:
            return data
        case 300..<400:
            // Never followed: the signature headers must not travel to another origin.
            throw VendorError(kind: .refused(code: "redirect"),
                              message: "vendor \(vendor.id) answered a redirect (\(response.status.code)); redirects are not followed")
        case 500...:
            throw VendorError(kind: .unreachable, message: "vendor \(vendor.id) answered \(response.status.code)")
        default:
            let err = try? JSONDecoder().decode(ErrorBody.self, from: data)
            let code = err.map(\.error.code).flatMap { Fields.name.isValid($0) ? $0 : nil } ?? "http\(response.status.code)"
            let said = err?.error.message ?? String(decoding: data.prefix(200), as: UTF8.self)
            throw VendorError(kind: .refused(code: code), message: "vendor \(vendor.id) refused: \(Fields.displayText(said, max: 300))")
        }
    }
}
