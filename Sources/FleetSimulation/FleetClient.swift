import AsyncHTTPClient
import Foundation
import GatewayProtocol
import Logging
import NIOCore
import NIOFoundationCompat
import Synchronization

/// The routes a simulated gateway uses.
public enum Route: String, Sendable, Codable, CaseIterable {
    case announce, plan, bootstrap, report, health, session

    public var path: String { "/v1/\(rawValue)" }
}

/// One `iot-daemon` replica: its base URL and the host a request is signed for.
public struct VendorEndpoint: Sendable, Equatable {
    public var baseURL: String
    public var host: String

    public init(url: String) throws {
        guard let u = URL(string: url), let scheme = u.scheme, scheme == "http" || scheme == "https", let host = u.host, !host.isEmpty else {
            throw FleetError(.badOption, "\(url) is not an http(s) URL")
        }
        baseURL = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.host = host
    }

    /// `URL[,URL...]`.
    public static func list(_ urls: String) throws -> [VendorEndpoint] {
        let parts = urls.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw FleetError(.badOption, "no URL given") }
        return try parts.map(VendorEndpoint.init(url:))
    }
}

/// A request's answer: status, body (size-limited) and how long it took from sending to the last body byte.
public struct Exchange: Sendable {
    public var status: Int
    public var body: Data
    public var latency: Duration

    /// The `ErrorBody` code of a refusal, else `http<status>`.
    public var errorCode: String {
        let said = try? WireJSON.decoder().decode(ErrorBody.self, from: body)
        return said.map(\.error.code).flatMap { Fields.name.isValid($0) ? $0 : nil } ?? "http\(status)"
    }
}

/// Sends the simulated gateways' requests over one shared `HTTPClient`, signed exactly as a gateway signs
/// them (`RequestSignature` v2 from GatewayProtocol), each with a timeout and a body limit.
public struct FleetClient: Sendable {
    public let http: HTTPClient
    public let vendor: String
    public var timeout: TimeAmount
    let logger: Logger

    /// Largest answer read: a signed bootstrap may carry a playbook archive.
    static let maxAnswerBytes = BootstrapBundle.maxSignedBytes + 1

    /// The configuration a client for `concurrency` simultaneous requests per replica needs: no redirects
    /// (signed headers never travel to another origin), HTTP/1 keep-alive connections enough for the load.
    public static func httpConfiguration(concurrency: Int) -> HTTPClient.Configuration {
        var c = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(30)))
        c.httpVersion = .http1Only
        c.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, concurrency))
        return c
    }

    public init(http: HTTPClient, vendor: String, timeout: TimeAmount = .seconds(30), logger: Logger) {
        self.http = http
        self.vendor = vendor
        self.timeout = timeout
        self.logger = logger
    }

    /// A signed `POST` of `body` to `route` as `gateway`; `nonce` defaults to a fresh one (tests replay one).
    public func post(_ route: Route, body: Data, as gateway: GatewayIdentity, to endpoint: VendorEndpoint,
                     nonce: String = RequestSignature.makeNonce()) async throws -> Exchange {
        try await post(signed(route, body: body, as: gateway, to: endpoint, nonce: nonce))
    }

    /// A `POST` of `body` to `route`, signed as `gateway` now, to be sent within `RequestSignature.allowedSkew`.
    public func signed(_ route: Route, body: Data, as gateway: GatewayIdentity, to endpoint: VendorEndpoint,
                       nonce: String = RequestSignature.makeNonce()) throws -> SignedPost {
        let audience = RequestSignature.Audience(vendor: vendor, host: endpoint.host)
        let headers = try RequestSignature.headers(gatewayID: gateway.id, key: gateway.key, method: "POST", path: route.path,
                                                   audience: audience, body: body, nonce: nonce)
        return SignedPost(url: endpoint.baseURL + route.path, headers: headers, body: ByteBuffer(data: body))
    }

    /// Opens a session for `gateway` (`RequestSession`: a signed handshake) and keeps it in `sessions` under
    /// the gateway's id; it is valid at every replica with the vendor's signing key.
    public func openSession(as gateway: GatewayIdentity, to endpoint: VendorEndpoint, in sessions: SessionBook) async throws -> Exchange {
        let (key, offer) = SessionBook.makeOffer()
        let exchange = try await post(.session, body: try WireJSON.encoder().encode(offer), as: gateway, to: endpoint)
        guard exchange.status == 200 else { return exchange }
        try sessions.open(try WireJSON.decoder().decode(RequestSession.Grant.self, from: exchange.body), with: key, as: gateway.id)
        return exchange
    }

    /// A `POST` of `body` to `route` in `gateway`'s session held in `sessions` (its next sequence number);
    /// nil when none is held.
    public func inSession(_ route: Route, body: Data, as gateway: GatewayIdentity, to endpoint: VendorEndpoint,
                          in sessions: SessionBook) -> SignedPost? {
        guard let headers = sessions.headers(gateway.id, gatewayID: gateway.id, vendor: vendor, method: "POST", path: route.path, body: body) else {
            return nil
        }
        return SignedPost(url: endpoint.baseURL + route.path, headers: headers, body: ByteBuffer(data: body))
    }

    /// Sends a request signed earlier by ``signed(_:body:as:to:nonce:)``.
    public func post(_ signed: SignedPost) async throws -> Exchange {
        var request = HTTPClientRequest(url: signed.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in signed.headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(signed.body)
        return try await send(request)
    }

    /// `GET /v1/health`: the trivial route the plan route is compared with.
    public func health(at endpoint: VendorEndpoint) async throws -> Exchange {
        try await send(HTTPClientRequest(url: endpoint.baseURL + Route.health.path))
    }

    func send(_ request: HTTPClientRequest) async throws -> Exchange {
        let clock = ContinuousClock()
        let start = clock.now
        let response = try await http.execute(request, timeout: timeout, logger: logger)
        let body = try await response.body.collect(upTo: Self.maxAnswerBytes)
        return Exchange(status: Int(response.status.code), body: Data(buffer: body), latency: clock.now - start)
    }
}

/// A signed `POST`, ready to send.
public struct SignedPost: Sendable {
    public var url: String
    public var headers: [(String, String)]
    public var body: ByteBuffer
}

/// Bounds how many requests are in flight at once, whatever the number of simulated gateways. Waiters are
/// served in order; `release` is synchronous so it can follow any exit path.
final class Limiter: Sendable {
    private struct State {
        var available: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ permits: Int) { state = Mutex(State(available: max(1, permits))) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                guard s.available > 0 else {
                    s.waiting.append(continuation)
                    return false
                }
                s.available -= 1
                return true
            }
            if now { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard !s.waiting.isEmpty else {
                s.available += 1
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}
