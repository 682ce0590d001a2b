import AsyncHTTPClient
import Crypto
import Foundation
import GatewayAgent
import GatewayProtocol
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing

/// The gateway's `VendorClient` polls plans in a session (`RequestSession`) against a vendor daemon stand-in
/// that checks each poll's MAC as `iot-daemon` does: one handshake for many polls, a new one when the session
/// is refused, signed polls when the daemon has no sessions. No LXD.
@Suite("VendorClient sessions")
struct VendorClientSessionTests {
    /// What the stand-in saw and how it behaves.
    struct Seen {
        var handshakes = 0
        var sessionPolls: [UInt64] = []
        var signedPolls = 0
        var refuseNextSession = false
    }

    final class Daemon: Sendable {
        let port = freePort()
        let secret = RequestSession.secret(signingKey: Curve25519.Signing.PrivateKey())
        let gateway: GatewayIdentity
        let sessions: Bool
        /// Grants that do not open (a sealed key under no agreement the gateway made).
        let garbageGrants: Bool
        let seen = Mutex(Seen())

        init(gateway: GatewayIdentity, sessions: Bool, garbageGrants: Bool) {
            self.gateway = gateway
            self.sessions = sessions
            self.garbageGrants = garbageGrants
        }

        func header(_ name: String, _ request: Request) -> String? {
            request.headers.first { $0.name.canonicalName == name.lowercased() }?.value
        }

        func application() -> some ApplicationProtocol {
            let router = Router()
            if sessions {
                router.post(RouterPath(RequestSession.path)) { [self] request, _ -> Response in
                    let body = Data(buffer: try await request.body.collect(upTo: 4096))
                    #expect(header(RequestSignature.signatureHeader, request) != nil, "the handshake is signed")
                    var offer = try WireJSON.decoder().decode(RequestSession.Offer.self, from: body)
                    if garbageGrants { offer = SessionBook.makeOffer().offer }
                    let ticket = RequestSession.makeTicket(now: Date())
                    let key = RequestSession.sessionKey(secret: secret, ticket: ticket, vendor: "acme", gatewayID: gateway.id,
                                                        gatewayKey: gateway.publicKey)
                    seen.withLock { $0.handshakes += 1 }
                    return Self.json(try WireJSON.encoder().encode(try RequestSession.grant(ticket: ticket, sessionKey: key, offer: offer)))
                }
            }
            router.post("/v1/plan") { [self] request, _ -> Response in
                let body = Data(buffer: try await request.body.collect(upTo: 4096))
                guard let ticket = header(RequestSession.ticketHeader, request) else {
                    #expect(header(RequestSignature.signatureHeader, request) != nil)
                    seen.withLock { $0.signedPolls += 1 }
                    return Self.json(Data("{}".utf8))
                }
                let sequence = try #require(header(RequestSession.sequenceHeader, request).flatMap { UInt64($0) })
                let key = RequestSession.sessionKey(secret: secret, ticket: ticket, vendor: "acme", gatewayID: gateway.id,
                                                    gatewayKey: gateway.publicKey)
                #expect(RequestSession.isValid(mac: try #require(header(RequestSession.macHeader, request)), key: key, method: "POST",
                                               path: "/v1/plan", vendor: "acme", gatewayID: gateway.id, ticket: ticket, sequence: sequence,
                                               body: body))
                let refuse = seen.withLock { s in
                    defer { s.refuseNextSession = false }
                    if !s.refuseNextSession { s.sessionPolls.append(sequence) }
                    return s.refuseNextSession
                }
                if refuse {
                    return Self.json(try WireJSON.encoder().encode(ErrorBody(code: "badSession", message: "ticket expired")), status: .unauthorized)
                }
                return Self.json(Data("{}".utf8))
            }
            var logger = Logger(label: "vendor-stand-in")
            logger.logLevel = .warning
            return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        }

        static func json(_ data: Data, status: HTTPResponse.Status = .ok) -> Response {
            Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: data)))
        }
    }

    /// Runs `body` with a client of `gateway` and a stand-in daemon listening.
    func with(sessions: Bool, garbageGrants: Bool = false, _ body: (VendorClient, GatewayConfig.VendorEntry, Daemon) async throws -> Void) async throws {
        let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
        let daemon = Daemon(gateway: gateway, sessions: sessions, garbageGrants: garbageGrants)
        let http = HTTPClient(configuration: VendorClient.httpConfiguration)
        let vendor = GatewayConfig.VendorEntry(id: "acme", match: [],
                                               daemonURL: "http://127.0.0.1:\(daemon.port)", publicKey: Keys.encode(Curve25519.Signing.PrivateKey().publicKey),
                                               policy: .auto, allowInsecureHTTP: true)
        let client = VendorClient(http: http, identity: gateway, logger: Logger(label: "vendor-client-test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await daemon.application().runService() }
            // Until it listens.
            let deadline = ContinuousClock.now + .seconds(10)
            while (try? await http.execute(HTTPClientRequest(url: vendor.daemonURL + "/"), timeout: .seconds(1))) == nil {
                guard ContinuousClock.now < deadline else { throw CancellationError() }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await body(client, vendor, daemon)
            group.cancelAll()
        }
        try await http.shutdown()
    }

    @Test func onePollsSessionServesManyPollsAndARefusedOneIsReplacedAtOnce() async throws {
        try await with(sessions: true) { client, vendor, daemon in
            let request = PlanRequest(gatewayID: daemon.gateway.id, currentPlanVersion: 0)
            for _ in 0..<3 { _ = try await client.currentPlan(request, from: vendor) }
            #expect(daemon.seen.withLock { $0.handshakes } == 1)
            #expect(daemon.seen.withLock { $0.sessionPolls } == [1, 2, 3])
            // The daemon refuses the session (its ticket expired, the gateway's key changed): the same poll is
            // made again at once in a new session, and answered.
            daemon.seen.withLock { $0.refuseNextSession = true }
            _ = try await client.currentPlan(request, from: vendor)
            #expect(daemon.seen.withLock { $0.handshakes } == 2)
            #expect(daemon.seen.withLock { $0.sessionPolls } == [1, 2, 3, 1])
            #expect(daemon.seen.withLock { $0.signedPolls } == 0)
        }
    }

    @Test func aDaemonWithoutSessionsIsPolledSignedAndNotAskedAgainAtEveryPoll() async throws {
        try await with(sessions: false) { client, vendor, daemon in
            let request = PlanRequest(gatewayID: daemon.gateway.id, currentPlanVersion: 0)
            for _ in 0..<3 { _ = try await client.currentPlan(request, from: vendor) }
            #expect(daemon.seen.withLock { $0.signedPolls } == 3)
            #expect(daemon.seen.withLock { $0.sessionPolls }.isEmpty)
        }
    }

    @Test func aGrantThatDoesNotOpenIsNotAskedForAgainAtEveryPoll() async throws {
        try await with(sessions: true, garbageGrants: true) { client, vendor, daemon in
            let request = PlanRequest(gatewayID: daemon.gateway.id, currentPlanVersion: 0)
            for _ in 0..<3 { _ = try await client.currentPlan(request, from: vendor) }
            #expect(daemon.seen.withLock { $0.handshakes } == 1)
            #expect(daemon.seen.withLock { $0.signedPolls } == 3)
        }
    }
}
