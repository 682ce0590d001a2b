import Crypto
import Foundation
import GatewayAgent
import GatewayProtocol
import Hummingbird
import Logging
import LXD
import NIOCore
import NIOFoundationCompat
import Synchronization
import UmockdevTesting

/// A vendor whose signing key the gateway trusts, run by an attacker: an iot-daemon look-alike whose
/// every answer (plans, bundles, errors, redirects) is chosen by the test, and which records every
/// request the gateway sends it (to replay them elsewhere).
final class Attacker: Sendable {
    struct Request: Sendable {
        var path: String
        var headers: [(String, String)]
        var body: Data
    }

    /// What the attacker answers. `plan` makes the plan for announcements and polls (nil: 409 noPlan).
    struct Behaviour: Sendable {
        var plan: @Sendable (_ gatewayID: String) throws -> ProvisioningPlan?
        /// Raw bytes to answer a plan with instead (malformed, oversized...).
        var rawPlan: Data?
        /// Answer announcements and polls with this error status and message instead.
        var refusal: (status: Int, message: String)?
        /// Answer every request with a redirect to this URL instead.
        var redirect: String?
        /// The bootstrap answer (raw); nil: a valid `kind: none` bundle.
        var bundle: (@Sendable (BootstrapRequest, Curve25519.Signing.PrivateKey) throws -> Data)?
        /// Answer bootstrap requests with 503 (the gateway retries later).
        var bundleUnavailable = false
    }

    let id: String
    let port: Int
    let rawKey: Data
    let behaviour: Mutex<Behaviour>
    let requests = Mutex<[Request]>([])

    var key: Curve25519.Signing.PrivateKey {
        // Invariant: rawKey came from a valid key in init.
        try! Curve25519.Signing.PrivateKey(rawRepresentation: rawKey)
    }

    init(id: String, port: Int, plan: @escaping @Sendable (String) throws -> ProvisioningPlan?) {
        self.id = id
        self.port = port
        rawKey = Curve25519.Signing.PrivateKey().rawRepresentation
        behaviour = Mutex(Behaviour(plan: plan))
    }

    func update(_ body: (inout Behaviour) -> Void) { behaviour.withLock { body(&$0) } }
    func recorded(_ path: String) -> [Request] { requests.withLock { $0.filter { $0.path == path } } }

    func entryYAML(policy: String, usbVendorID: String) -> String {
        "  - {id: \(id), match: [{vendorID: \"\(usbVendorID)\"}], daemonURL: \"http://127.0.0.1:\(port)\", allowInsecureHTTP: true, "
            + "publicKey: \"\(Keys.encode(key.publicKey))\", policy: \(policy), appUpdates: auto}"
    }

    func signedPlan(_ plan: ProvisioningPlan) throws -> Data {
        try WireJSON.encoder().encode(try PlanSigner(privateKey: key).sign(plan))
    }

    func answer(_ path: String, _ req: Request) throws -> Response {
        requests.withLock { $0.append(req) }
        let b = behaviour.withLock { $0 }
        if let redirect = b.redirect {
            return Response(status: .temporaryRedirect, headers: [.location: redirect])
        }
        switch path {
        case "/v1/report":
            return Response(status: .noContent)
        case "/v1/bootstrap":
            if b.bundleUnavailable { return Response(status: .serviceUnavailable) }
            let r = try WireJSON.decoder().decode(BootstrapRequest.self, from: req.body)
            let data = try b.bundle?(r, key) ?? WireJSON.encoder().encode(try PlanSigner(privateKey: key).sign(
                BootstrapBundle(kind: .none, gatewayID: r.gatewayID, vendor: id, planVersion: r.planVersion, expiresAt: Date().addingTimeInterval(600))))
            return Self.json(data)
        default:
            if let (status, message) = b.refusal {
                return Self.json(try WireJSON.encoder().encode(ErrorBody(code: "notGenuine", message: message)), status: .init(code: status))
            }
            if let raw = b.rawPlan { return Self.json(raw) }
            let gatewayID = req.headers.first { $0.0.lowercased() == RequestSignature.gatewayHeader.lowercased() }?.1 ?? ""
            guard let plan = try b.plan(gatewayID) else {
                return Self.json(try WireJSON.encoder().encode(ErrorBody(code: "noPlan", message: "no plan")), status: .conflict)
            }
            return Self.json(try signedPlan(plan))
        }
    }

    static func json(_ data: Data, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: data)))
    }

    func application() -> some ApplicationProtocol {
        let router = Router()
        for path in ["/v1/announce", "/v1/plan", "/v1/bootstrap", "/v1/report"] {
            router.post(RouterPath(path)) { [self] req, _ -> Response in
                let body = Data(buffer: try await req.body.collect(upTo: 1 << 20))
                let headers = req.headers.map { ($0.name.canonicalName, $0.value) }
                return try answer(path, Request(path: path, headers: headers, body: body))
            }
        }
        var logger = Logger(label: "attacker")
        logger.logLevel = .warning
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
    }
}

/// A server that only counts what reaches it (where an attacker redirects the gateway to).
final class Sink: Sendable {
    let port: Int
    let hits = Mutex(0)
    init(port: Int) { self.port = port }

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("/{path}") { [self] _, _ -> Response in
            hits.withLock { $0 += 1 }
            return Response(status: .ok)
        }
        router.post("/v1/{path}") { [self] _, _ -> Response in
            hits.withLock { $0 += 1 }
            return Response(status: .ok)
        }
        var logger = Logger(label: "sink")
        logger.logLevel = .warning
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
    }
}

/// A value shared between a test and the closures it hands out (a `Mutex` cannot be captured).
final class Shared<Value: Sendable>: Sendable {
    private let m: Mutex<Value>
    init(_ value: Value) { m = Mutex(value) }
    var value: Value { m.withLock { $0 } }
    @discardableResult
    func update<R: Sendable>(_ body: @Sendable (inout Value) -> R) -> R { m.withLock { body(&$0) } }
    func set(_ v: Value) { m.withLock { $0 = v } }
}

extension Attacker {
    /// Runs `body` with this vendor's daemon (and `servers`) listening and `gateway` started on a fresh
    /// testbed; the containers and daemons are cleaned up whatever happens.
    func serving(_ lxd: LXDClient, gateway: GatewayFixture, containers: [String],
                 servers: [(port: Int, run: @Sendable () async throws -> Void)] = [],
                 _ body: (Testbed) async throws -> Void) async throws {
        try await E2EContext.cleaningUp(lxd, containers, daemons: { [gateway.daemon] }) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await self.application().runService() }
                for s in servers { group.addTask { try await s.run() } }
                defer { group.cancelAll() }
                let ports = [port] + servers.map(\.port)
                _ = try await eventually("servers listening") { ports.allSatisfy { canConnect(port: $0) } ? true : nil }
                let testbed = try Testbed()
                try await gateway.start(testbed: testbed)
                try await body(testbed)
            }
        }
    }
}
