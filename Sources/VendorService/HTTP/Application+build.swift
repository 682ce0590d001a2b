import Foundation
import GatewayProtocol
import Hummingbird
import Logging

/// Builds the IoT daemon's HTTP application, loading the plan-signing key named by the configuration and,
/// with a `chef` section, the Chef admin key (apps are then delivered by a ``ChefProvisioner``).
/// Run it in a `ServiceGroup` (it is a `Service`), or drive it from tests with HummingbirdTesting.
///
/// - Parameter metrics: where the application counts; serve it with ``buildMetricsApplication(listen:metrics:logger:)``.
public func buildApplication(configuration: VendorConfiguration, store: some VendorStore, logger: Logger,
                             metrics: VendorMetrics = VendorMetrics()) throws -> some ApplicationProtocol
{
    let service = try ProvisioningService.configured(by: configuration, store: store, logger: logger, metrics: metrics)
    return buildApplication(configuration: configuration, service: service, logger: logger)
}

extension ProvisioningService {
    /// The service the configuration describes: its signing key, and a ``ChefProvisioner`` when it has a
    /// `chef` section (else ``NoopProvisioner``).
    public static func configured(by configuration: VendorConfiguration, store: some VendorStore, logger: Logger,
                                  metrics: VendorMetrics = VendorMetrics()) throws -> ProvisioningService
    {
        let signer = try SigningKeyFile.load(path: configuration.signingKey)
        let provisioner: any Provisioner
        if let chef = try ChefProvisioner.configured(by: configuration, store: store, logger: logger) {
            provisioner = chef
        } else if let ansible = AnsiblePlaybookProvisioner.configured(by: configuration) {
            provisioner = ansible
        } else {
            provisioner = NoopProvisioner()
        }
        return ProvisioningService(configuration: configuration, store: store, signer: signer, provisioner: provisioner, metrics: metrics)
    }
}

/// Builds the IoT daemon's HTTP application around a prepared service (its own signer, provisioner and clock).
public func buildApplication(configuration: VendorConfiguration, service: ProvisioningService, logger: Logger)
    -> some ApplicationProtocol
{
    Application(
        router: buildRouter(service: service),
        configuration: ApplicationConfiguration(
            address: .hostname(configuration.listen.host, port: configuration.listen.port),
            serverName: "iot-daemon"
        ),
        logger: logger
    )
}

/// The routes:
/// - `GET /v1/health` → 200 `{"status":"ok","vendor":"<vendor>"}`
/// - `POST /v1/announce` (signed, `Announcement`, ≤ 16 KiB) → 200 `SignedPlan`
/// - `POST /v1/plan` (signed, `PlanRequest`, ≤ 16 KiB) → 200 `SignedPlan` (the current plan), 409 `noPlan`
/// - `POST /v1/bootstrap` (signed, `BootstrapRequest`, ≤ 16 KiB) → 200 `SignedBootstrap` (may carry the
///   node's Chef client key: `Cache-Control: no-store`), 409 `noPlan` or `planVersionMismatch`, 503
///   `chefUnavailable`
/// - `POST /v1/report` (signed, `ProvisioningReport`, ≤ 16 KiB) → 204
/// - `POST /v1/session` (signed, `RequestSession.Offer`) → 200 `RequestSession.Grant`: `/v1/plan` then also
///   takes the session's MAC in place of a signature (401 `badSession`, `replayedRequest`)
///
/// Signed: `RequestSignature` v2, checked by ``ProvisioningService/authenticate(_:method:path:requestHost:body:logger:)``
/// before the body is parsed (401 `badSignature`, `wrongAudience`, `replayedRequest`; 403 `unknownGateway`).
/// Every field of a parsed body is checked before use (400 `invalidField`).
///
/// Every error is `ErrorBody` JSON with a stable code (``APIError/Code``).
///
/// Every request is counted and timed in the service's ``VendorMetrics`` by route template; there is no
/// `/metrics` here (see ``buildMetricsApplication(listen:metrics:logger:)``).
func buildRouter(service: ProvisioningService) -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: RequestMetricsMiddleware(metrics: service.metrics))
    router.add(middleware: ErrorBodyMiddleware())
    router.add(middleware: LogRequestsMiddleware(.debug))
    let routes = VendorRoutes(service: service)
    router.get("/v1/health") { _, _ in try routes.health() }
    router.post("/v1/announce") { request, context in try await routes.announce(request, context: context) }
    router.post("/v1/plan") { request, context in try await routes.plan(request, context: context) }
    router.post("/v1/session") { request, context in try await routes.session(request, context: context) }
    router.post("/v1/bootstrap") { request, context in try await routes.bootstrap(request, context: context) }
    router.post("/v1/report") { request, context in try await routes.report(request, context: context) }
    return router
}

/// The health answer.
public struct HealthStatus: Sendable, Codable, Equatable {
    public var vendor: String
    public var status: String

    public init(vendor: String, status: String) {
        self.vendor = vendor
        self.status = status
    }
}

struct VendorRoutes: Sendable {
    /// Largest request body accepted.
    static let maxBodyBytes = 16 * 1024

    let service: ProvisioningService

    func health() throws -> Response {
        try Self.json(HealthStatus(vendor: service.vendor, status: "ok"))
    }

    func announce(_ request: Request, context: some RequestContext) async throws -> Response {
        let (gateway, body, _) = try await authenticated(request, context: context)
        let announcement = try Self.decode(Announcement.self, from: body)
        let signed = try await service.announce(announcement, from: gateway, logger: context.logger)
        return try Self.json(signed)
    }

    func plan(_ request: Request, context: some RequestContext) async throws -> Response {
        let (gateway, body, generation) = try await authenticated(request, context: context, session: true)
        let planRequest = try Self.decode(PlanRequest.self, from: body)
        // The stored signed plan's JSON as it is: the bytes `json(_:)` would write again.
        let json = try await service.currentPlanJSON(planRequest, from: gateway, generation: generation, logger: context.logger)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }

    func session(_ request: Request, context: some RequestContext) async throws -> Response {
        let (gateway, body, _) = try await authenticated(request, context: context)
        let offer = try Self.decode(RequestSession.Offer.self, from: body)
        var response = try Self.json(try service.openSession(offer, for: gateway, logger: context.logger))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    func bootstrap(_ request: Request, context: some RequestContext) async throws -> Response {
        let (gateway, body, _) = try await authenticated(request, context: context)
        let bootstrapRequest = try Self.decode(BootstrapRequest.self, from: body)
        var response = try Self.json(try await service.bootstrap(bootstrapRequest, from: gateway, logger: context.logger))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    func report(_ request: Request, context: some RequestContext) async throws -> Response {
        let (gateway, body, _) = try await authenticated(request, context: context)
        let report = try Self.decode(ProvisioningReport.self, from: body)
        try await service.report(report, from: gateway, logger: context.logger)
        return Response(status: .noContent)
    }

    /// Reads the body (size-limited) and checks the request's signature before anything parses it; with
    /// `session`, a request carrying a session ticket is checked by its session MAC instead (`RequestSession`).
    private func authenticated(_ request: Request, context: some RequestContext,
                               session: Bool = false) async throws -> (EnrolledGateway, Data, PlanGeneration) {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: Self.maxBodyBytes) } catch let error as any HTTPResponseError
            where error.status == .contentTooLarge
        {
            throw APIError(.tooLarge, status: .contentTooLarge, "request body is over \(Self.maxBodyBytes) bytes")
        }
        let body = Data(buffer.readableBytesView)
        if let ticket = Self.header(RequestSession.ticketHeader, in: request) {
            guard session else {
                throw APIError.badSignature("\(request.uri.path) takes signed requests only, not a session's (\(RequestSession.ticketHeader))")
            }
            let received = SessionReceived(
                gatewayID: Self.header(RequestSignature.gatewayHeader, in: request),
                vendor: Self.header(RequestSignature.vendorHeader, in: request),
                ticket: ticket,
                sequence: Self.header(RequestSession.sequenceHeader, in: request),
                mac: Self.header(RequestSession.macHeader, in: request)
            )
            let (gateway, generation) = try await service.authenticateSession(received, method: request.method.rawValue, path: request.uri.path,
                                                                              body: body, logger: context.logger)
            return (gateway, body, generation)
        }
        let received = RequestSignature.Received(
            gatewayID: Self.header(RequestSignature.gatewayHeader, in: request),
            vendor: Self.header(RequestSignature.vendorHeader, in: request),
            timestamp: Self.header(RequestSignature.timestampHeader, in: request),
            nonce: Self.header(RequestSignature.nonceHeader, in: request),
            signature: Self.header(RequestSignature.signatureHeader, in: request)
        )
        // HTTP/1's Host header arrives as the request's authority.
        let (gateway, generation) = try await service.authenticateRequest(received, method: request.method.rawValue, path: request.uri.path,
                                                                          requestHost: request.head.authority, body: body, logger: context.logger)
        return (gateway, body, generation)
    }

    private static func header(_ name: String, in request: Request) -> String? {
        let lowercased = name.lowercased()
        return request.headers.first { $0.name.canonicalName == lowercased }?.value
    }

    /// One decoder for every request (its options are set once and only read): making one per request cost
    /// a poll more than decoding its two fields.
    private static let decoder = WireJSON.decoder()

    private static func decode<T: Decodable>(_ type: T.Type, from body: Data) throws -> T {
        do { return try decoder.decode(type, from: body) } catch {
            throw APIError.malformed("body is not a valid \(type): \(describe(error))")
        }
    }

    /// Where decoding failed. Dictionary keys in a coding path are the sender's: escaped.
    private static func describe(_ error: any Error) -> String {
        func path(_ keys: [any CodingKey]) -> String { Fields.escaped(keys.map(\.stringValue).joined(separator: "."), max: 128) }
        switch error {
        case DecodingError.keyNotFound(let key, let c):
            return "missing field \(path(c.codingPath + [key]))"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type at \(path(c.codingPath))"
        case DecodingError.dataCorrupted(let c):
            return c.codingPath.isEmpty ? "not JSON" : "invalid value at \(path(c.codingPath))"
        default:
            return "not JSON"
        }
    }

    static func json(_ value: some Encodable) throws -> Response {
        let data = try WireJSON.encoder().encode(value)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Turns every error into `ErrorBody` JSON: ``APIError`` as is, framework errors (404, 405, 413) with a
/// code for their status, anything else as a logged 500 that tells the client nothing internal.
struct ErrorBodyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.response()
        } catch let error as any HTTPResponseError {
            let code: APIError.Code = switch error.status {
            case .notFound: .notFound
            case .methodNotAllowed: .methodNotAllowed
            case .contentTooLarge: .tooLarge
            case .badRequest: .malformed
            default: error.status.code >= 500 ? .internal : APIError.Code("http\(error.status.code)")
            }
            return APIError(code, status: error.status, error.status.reasonPhrase).response()
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(String(reflecting: type(of: error)))", "error.message": "\(error)"])
            return APIError.internalError.response()
        }
    }
}
