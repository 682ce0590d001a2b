import AsyncHTTPClient
import Foundation
import GatewayProtocol
import Logging
import NIOCore
import NIOFoundationCompat

/// Why talking to a vendor's IoT Daemon failed.
public struct VendorError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Network or server trouble: worth retrying with backoff.
        case unreachable
        /// The vendor refused (not genuine, gateway not enrolled...): retrying will not help.
        case refused(code: String)
    }
    public var kind: Kind
    public var message: String
    public var description: String {
        switch kind {
        case .unreachable: message
        case .refused(let code): "\(code): \(message)"
        }
    }

    public var isRetryable: Bool { kind == .unreachable }
}

/// Talks to vendors' daemons. Every request is gateway-initiated and signed with the gateway key.
public struct VendorClient: Sendable {
    let http: HTTPClient
    let identity: GatewayIdentity
    let logger: Logger
    public var timeout: TimeAmount = .seconds(10)

    public init(http: HTTPClient, identity: GatewayIdentity, logger: Logger) {
        self.http = http
        self.identity = identity
        self.logger = logger
    }

    /// Announces a device; returns the raw response body (a signed plan) for `PlanValidator`.
    public func announce(_ announcement: Announcement, to vendor: GatewayConfig.VendorEntry) async throws -> Data {
        try await post("/v1/announce", body: try WireJSON.encoder().encode(announcement), vendor: vendor,
                       limit: PlanValidator.maxPlanBytes + 1)
    }

    /// Asks for the vendor's current plan for this gateway (raw body, a signed plan).
    public func currentPlan(_ request: PlanRequest, from vendor: GatewayConfig.VendorEntry) async throws -> Data {
        try await post("/v1/plan", body: try WireJSON.encoder().encode(request), vendor: vendor, limit: PlanValidator.maxPlanBytes + 1)
    }

    /// Fetches what the container needs to converge the vendor's apps (carries the node's key).
    public func bootstrap(_ request: BootstrapRequest, from vendor: GatewayConfig.VendorEntry) async throws -> BootstrapBundle {
        // Room for an Ansible playbook archive (base64) besides keys and run lists.
        let data = try await post("/v1/bootstrap", body: try WireJSON.encoder().encode(request), vendor: vendor,
                                  limit: BootstrapBundle.maxPlaybookBytes * 4 / 3 + 64 * 1024)
        do { return try WireJSON.decoder().decode(BootstrapBundle.self, from: data) } catch {
            throw VendorError(kind: .refused(code: "malformed"), message: "vendor \(vendor.id) sent an unreadable bootstrap bundle")
        }
    }

    /// Reports what was done with a plan.
    public func report(_ report: ProvisioningReport, to vendor: GatewayConfig.VendorEntry) async throws {
        _ = try await post("/v1/report", body: try WireJSON.encoder().encode(report), vendor: vendor, limit: 64 * 1024)
    }

    func post(_ path: String, body: Data, vendor: GatewayConfig.VendorEntry, limit: Int) async throws -> Data {
        let base = vendor.daemonURL.hasSuffix("/") ? String(vendor.daemonURL.dropLast()) : vendor.daemonURL
        var req = HTTPClientRequest(url: base + path)
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/json")
        for (k, v) in try RequestSignature.headers(gatewayID: identity.id, key: identity.key, method: "POST", path: path, body: body) {
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
            throw VendorError(kind: .unreachable, message: "vendor \(vendor.id) at \(vendor.daemonURL) unreachable: \(error)")
        }
        let data = Data(buffer: bytes)
        switch response.status.code {
        case 200..<300:
            return data
        case 500...:
            throw VendorError(kind: .unreachable, message: "vendor \(vendor.id) answered \(response.status.code)")
        default:
            let err = try? JSONDecoder().decode(ErrorBody.self, from: data)
            throw VendorError(kind: .refused(code: err?.error.code ?? "http\(response.status.code)"),
                              message: "vendor \(vendor.id) refused: \(err?.error.message ?? String(decoding: data.prefix(200), as: UTF8.self))")
        }
    }
}
