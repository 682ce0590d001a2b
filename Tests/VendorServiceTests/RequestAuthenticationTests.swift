import Crypto
import Foundation
import GatewayProtocol
import GRDB
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import VendorService

/// `RequestSignature` v2 as the daemon checks it: audience (vendor and host), nonce, timestamp.
@Suite("Request authentication")
struct RequestAuthenticationTests {
    /// A signed announcement of `FT1` by the harness's gateway, kept as sent so it can be replayed.
    struct Captured {
        var headers: HTTPFields
        var body: Data

        init(_ h: Harness, vendor: String? = nil, host: String = testHost, at: Date = Harness.now) throws {
            body = try Harness.announcement(h.gateway, serial: "FT1")
            headers = try signedHeaders(h.gateway, path: "/v1/announce", body: body, now: at, vendor: vendor ?? h.configuration.vendor,
                                        host: host)
        }

        /// The same request with one header changed (nil: removed).
        func replacing(_ header: String, with value: String?) throws -> Captured {
            var copy = self
            copy.headers[try #require(HTTPField.Name(header))] = value
            return copy
        }

        func send(_ client: some TestClientProtocol) async throws -> TestResponse {
            try await client.execute(uri: "/v1/announce", method: .post, headers: headers, body: ByteBuffer(bytes: body))
        }
    }

    /// A request `h`'s daemon accepted (an announcement of a registered `FT1`), to replay.
    static func acceptedRequest(_ h: Harness) async throws -> Captured {
        try await h.register("FT1")
        let request = try Captured(h)
        try await h.app().test(.router) { client in
            let response = try await request.send(client)
            #expect(response.status == .ok)
        }
        return request
    }

    @Test func aRequestSignedForOneVendorIsRefusedByAnother() async throws {
        try await Harness.with { acme in
            let request = try await Self.acceptedRequest(acme)
            // The same gateway is enrolled with globex, which also makes a device with serial FT1.
            try await Harness.with(configure: { $0.vendor = "globex" }) { globex in
                try await globex.store.enrollGateway(EnrolledGateway(id: acme.gateway.id, publicKey: acme.gateway.publicKey,
                                                                     enrolledAt: Harness.now))
                try await globex.register("FT1")
                try await globex.app().test(.router) { client in
                    let replayed = try await request.send(client)
                    #expect(replayed.status == .unauthorized)
                    #expect(errorCode(replayed) == "wrongAudience")
                    // Not yet used anywhere: refused just the same.
                    let fresh = try await Captured(acme).send(client)
                    #expect(errorCode(fresh) == "wrongAudience")
                }
                #expect(try await globex.store.plan(gatewayID: acme.gateway.id) == nil)
                #expect(try await globex.store.gateways().first?.devices == [])
            }
        }
    }

    @Test func theSameRequestTwiceIsAReplay() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let request = try Captured(h)
            try await h.app().test(.router) { client in
                #expect(try await request.send(client).status == .ok)
                let replayed = try await request.send(client)
                #expect(replayed.status == .unauthorized)
                #expect(errorCode(replayed) == "replayedRequest")
                // A fresh nonce is a new request.
                #expect(try await Captured(h).send(client).status == .ok)
            }
            // Another process on the same database (a replica, a restart) knows the nonce too.
            let replica = try SQLiteVendorStore(path: h.configuration.database, create: false)
            let service = ProvisioningService(configuration: h.configuration, store: replica, signer: h.signer, now: { Harness.now })
            try await buildApplication(configuration: h.configuration, service: service, logger: Harness.logger).test(.router) { client in
                let replayed = try await request.send(client)
                #expect(errorCode(replayed) == "replayedRequest")
            }
            // Nonce claims skip their own sync; everything else the writer commits is synced (FULL: GRDB's WAL
            // setup sets NORMAL), and a claims' batch leaves it so.
            #expect(try await replica.pool.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 2)
        }
    }

    @Test func aReplayAfterTheNonceWindowIsStale() async throws {
        try await Harness.with { h in
            let request = try await Self.acceptedRequest(h)
            // Within the timestamp window the nonce is still known...
            try await h.app(now: Harness.now.addingTimeInterval(RequestSignature.allowedSkew)).test(.router) { client in
                let replayed = try await request.send(client)
                #expect(errorCode(replayed) == "replayedRequest")
            }
            // ...and once it is pruned, the timestamp is what refuses the request.
            let later = Harness.now.addingTimeInterval(2 * RequestSignature.allowedSkew + 1)
            try await h.app(now: later).test(.router) { client in
                let replayed = try await request.send(client)
                #expect(replayed.status == .unauthorized)
                #expect(errorCode(replayed) == "badSignature")
                #expect(try decode(ErrorBody.self, replayed).error.message.contains("timestamp"))
                // A request made now is accepted (and prunes the expired nonce).
                #expect(try await Captured(h, at: later).send(client).status == .ok)
            }
        }
    }

    @Test func aBadSignatureDoesNotBurnTheNonce() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let request = try Captured(h)
            let forged = try request.replacing(RequestSignature.signatureHeader, with: Data(repeating: 7, count: 64).base64EncodedString())
            try await h.app().test(.router) { client in
                let refused = try await forged.send(client)
                #expect(errorCode(refused) == "badSignature")
                #expect(try await request.send(client).status == .ok)
            }
        }
    }

    @Test(arguments: [RequestSignature.gatewayHeader, RequestSignature.vendorHeader, RequestSignature.timestampHeader,
                      RequestSignature.nonceHeader, RequestSignature.signatureHeader])
    func everySignatureHeaderIsRequired(_ header: String) async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let request = try Captured(h).replacing(header, with: nil)
            try await h.app().test(.router) { client in
                let response = try await request.send(client)
                #expect(response.status == .unauthorized)
                #expect(errorCode(response) == "badSignature")
            }
            #expect(try await h.store.plan(gatewayID: h.gateway.id) == nil)
        }
    }

    @Test func aMalformedNonceIsRefused() async throws {
        try await Harness.with { h in
            let body = try Harness.announcement(h.gateway, serial: "FT1")
            try await h.app().test(.router) { client in
                for nonce in ["short", String(repeating: "a", count: 65), "aaaaaaaaaaaaaaaa\u{1B}[2J", "aaaaaaaaaaaaaaaa/../.."] {
                    let headers = try signedHeaders(h.gateway, path: "/v1/announce", body: body, nonce: nonce)
                    let response = try await client.execute(uri: "/v1/announce", method: .post, headers: headers, body: ByteBuffer(bytes: body))
                    #expect(errorCode(response) == "badSignature", "nonce \(nonce.debugDescription)")
                }
            }
        }
    }

    @Test func aRequestSignedForAHostNotInPublicHostsIsRefused() async throws {
        try await Harness.with(configure: { $0.publicHosts = ["iot.acme.example", testHost] }) { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                let elsewhere = try await Captured(h, host: "staging.acme.example").send(client)
                #expect(elsewhere.status == .unauthorized)
                #expect(errorCode(elsewhere) == "badSignature")
                // Any of the listed hosts will do, whatever the Host header says.
                #expect(try await Captured(h, host: "iot.acme.example").send(client).status == .ok)
                #expect(try await Captured(h, host: "IOT.acme.example").send(client).status == .ok)
            }
        }
    }

    @Test func withoutPublicHostsTheHostHeaderIsTheAudience() async throws {
        try await Harness.with(configure: { $0.publicHosts = nil }) { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                // HummingbirdTesting sends `localhost` as the authority.
                #expect(try await Captured(h, host: testHost).send(client).status == .ok)
                let other = try await Captured(h, host: "iot.acme.example").send(client)
                #expect(errorCode(other) == "badSignature")
            }
            try await h.app().test(.live) { client in
                let response = try await Captured(h, host: testHost).send(client)
                #expect(response.status == .ok)
            }
        }
    }

    @Test(arguments: [("Example.COM:8470", "example.com"), ("example.com", "example.com"), ("10.0.3.1:80", "10.0.3.1"),
                      ("[::1]:8470", "::1"), ("[::1]", "::1"), (":80", nil), ("[::1", nil), ("", nil)] as [(String, String?)])
    func theHostOfAnAuthority(_ authority: String, _ host: String?) {
        #expect(ProvisioningService.host(ofAuthority: authority) == host)
    }
}
