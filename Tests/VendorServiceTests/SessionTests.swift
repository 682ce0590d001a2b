import Crypto
import Foundation
import GatewayProtocol
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import VendorService

/// Plan polls in a session (`RequestSession`) as the daemon checks them: opened by a signed handshake, valid at
/// every replica with the signing key, for `/v1/plan` only, each sequence number once per replica.
@Suite("Sessions")
struct SessionTests {
    static let planPath = "/v1/plan"

    /// The harness's gateway with a plan for `FT1` and an open session, as its book holds it.
    static func opened(_ h: Harness, _ client: some TestClientProtocol) async throws -> SessionBook {
        try await h.register("FT1")
        let announced = try await client.execute(uri: "/v1/announce", method: .post,
                                                 headers: try signedHeaders(h.gateway, path: "/v1/announce",
                                                                            body: try Harness.announcement(h.gateway, serial: "FT1")),
                                                 body: ByteBuffer(bytes: try Harness.announcement(h.gateway, serial: "FT1")))
        #expect(announced.status == .ok)
        return try await openSession(h, client)
    }

    static func openSession(_ h: Harness, _ client: some TestClientProtocol) async throws -> SessionBook {
        let (key, offer) = SessionBook.makeOffer()
        let response = try await signedPost(client, h, RequestSession.path, offer)
        #expect(response.status == .ok)
        #expect(response.headers[.cacheControl] == "no-store")
        let book = SessionBook()
        try book.open(try decode(RequestSession.Grant.self, response), with: key, as: "acme")
        return book
    }

    static func pollHeaders(_ h: Harness, _ book: SessionBook, path: String = planPath, body: Data, vendor: String = "acme") throws -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in try #require(book.headers("acme", gatewayID: h.gateway.id, vendor: vendor, method: "POST", path: path, body: body,
                                                       now: Harness.now)) {
            fields[try #require(HTTPField.Name(name))] = value
        }
        fields[.contentType] = "application/json"
        return fields
    }

    static func poll(_ client: some TestClientProtocol, headers: HTTPFields, body: Data, path: String = planPath) async throws -> TestResponse {
        try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(bytes: body))
    }

    static func pollBody(_ h: Harness) throws -> Data {
        try WireJSON.encoder().encode(PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1))
    }

    @Test func aPollInASessionAnswersTheSignedPlanAndEachSequenceNumberOnce() async throws {
        try await Harness.with { h in
            try await h.app().test(.router) { client in
                let book = try await Self.opened(h, client)
                let body = try Self.pollBody(h)
                let headers = try Self.pollHeaders(h, book, body: body)
                let answer = try await Self.poll(client, headers: headers, body: body)
                #expect(answer.status == .ok)
                let plan = try h.validator().validate(rawBody: Data(answer.body.readableBytesView), lastVersion: 0, now: Harness.now).plan
                #expect(plan.devices.map(\.serial) == ["FT1"])
                // The very same request again: a replay.
                let replayed = try await Self.poll(client, headers: headers, body: body)
                #expect(replayed.status == .unauthorized)
                #expect(errorCode(replayed) == "replayedRequest")
                // The next sequence number is a new request.
                #expect(try await Self.poll(client, headers: try Self.pollHeaders(h, book, body: body), body: body).status == .ok)
            }
        }
    }

    @Test func aSessionOpenedAtOneReplicaIsValidAtAnotherWithTheSameSigningKey() async throws {
        try await Harness.with { h in
            let book = try await h.app().test(.router) { client in try await Self.opened(h, client) }
            // A second service on the same store and key: nothing about the session was stored anywhere.
            try await h.app().test(.router) { other in
                let body = try Self.pollBody(h)
                #expect(try await Self.poll(other, headers: try Self.pollHeaders(h, book, body: body), body: body).status == .ok)
            }
        }
    }

    @Test func aSessionProvesNothingButAPollOfItsOwnVendor() async throws {
        try await Harness.with { h in
            try await h.app().test(.router) { client in
                let book = try await Self.opened(h, client)
                // Every other route takes signed requests only.
                let announcement = try Harness.announcement(h.gateway, serial: "FT1")
                let announced = try await Self.poll(client, headers: try Self.pollHeaders(h, book, path: "/v1/announce", body: announcement),
                                                    body: announcement, path: "/v1/announce")
                #expect(announced.status == .unauthorized)
                #expect(errorCode(announced) == "badSignature")
                // Another body than the one MACed, and a request addressed to another vendor.
                let body = try Self.pollBody(h)
                let tampered = try await Self.poll(client, headers: try Self.pollHeaders(h, book, body: body),
                                                   body: try WireJSON.encoder().encode(PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 0)))
                #expect(errorCode(tampered) == "badSession")
                let elsewhere = try await Self.poll(client, headers: try Self.pollHeaders(h, book, body: body, vendor: "globex"), body: body)
                #expect(errorCode(elsewhere) == "wrongAudience")
                // Another gateway's id with this session's MAC.
                var other = try Self.pollHeaders(h, book, body: body)
                other[try #require(HTTPField.Name(RequestSignature.gatewayHeader))] = GatewayIdentity(key: Curve25519.Signing.PrivateKey()).id
                let stranger = try await Self.poll(client, headers: other, body: body)
                #expect(stranger.status == .forbidden)
                #expect(errorCode(stranger) == "unknownGateway")
            }
        }
    }

    @Test func anExpiredTicketOrARevokedGatewayEndsTheSession() async throws {
        try await Harness.with { h in
            let book = try await h.app().test(.router) { client in try await Self.opened(h, client) }
            let body = try Self.pollBody(h)
            try await h.app(now: Harness.now.addingTimeInterval(RequestSession.lifetime)).test(.router) { client in
                let late = try await Self.poll(client, headers: try Self.pollHeaders(h, book, body: body), body: body)
                #expect(late.status == .unauthorized)
                #expect(errorCode(late) == "badSession")
            }
            try await h.app().test(.router) { client in
                #expect(try await Self.poll(client, headers: try Self.pollHeaders(h, book, body: body), body: body).status == .ok)
                try await h.store.revokeGateway(id: h.gateway.id, at: Harness.now)
                let revoked = try await Self.poll(client, headers: try Self.pollHeaders(h, book, body: body), body: body)
                #expect(revoked.status == .forbidden)
                #expect(errorCode(revoked) == "unknownGateway")
            }
        }
    }

    @Test func theHandshakeIsSignedAndItsKeyChecked() async throws {
        try await Harness.with { h in
            try await h.app().test(.router) { client in
                let offer = try WireJSON.encoder().encode(SessionBook.makeOffer().offer)
                let unsigned = try await client.execute(uri: RequestSession.path, method: .post, body: ByteBuffer(bytes: offer))
                #expect(unsigned.status == .unauthorized)
                let stranger = try await signedPost(client, h, RequestSession.path, SessionBook.makeOffer().offer,
                                                    from: GatewayIdentity(key: Curve25519.Signing.PrivateKey()))
                #expect(stranger.status == .forbidden)
                let lowOrder = try await signedPost(client, h, RequestSession.path, RequestSession.Offer(key: Data(count: 32).base64EncodedString()))
                #expect(lowOrder.status == .badRequest)
                #expect(errorCode(lowOrder) == "invalidField")
            }
        }
    }
}
