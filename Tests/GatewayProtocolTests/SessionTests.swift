import Crypto
import Foundation
import Testing
@testable import GatewayProtocol

/// `RequestSession`: the handshake's sealed key, the per-request MAC and the replay window.
@Suite("RequestSession")
struct SessionTests {
    let vendorKey = Curve25519.Signing.PrivateKey()
    let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let body = Data(#"{"currentPlanVersion":1}"#.utf8)

    /// A handshake as both sides make it: the gateway's book holds the session under "acme".
    func handshake(secret: Data? = nil) throws -> (book: SessionBook, ticket: String, vendorSide: SymmetricKey) {
        let (key, offer) = SessionBook.makeOffer()
        let ticket = RequestSession.makeTicket(now: now)
        let sessionKey = RequestSession.sessionKey(secret: secret ?? RequestSession.secret(signingKey: vendorKey), ticket: ticket,
                                                   vendor: "acme", gatewayID: gateway.id, gatewayKey: gateway.publicKey)
        let grant = try RequestSession.grant(ticket: ticket, sessionKey: sessionKey, offer: offer)
        let book = SessionBook()
        try book.open(grant, with: key, as: "acme")
        return (book, ticket, sessionKey)
    }

    func macVerifies(_ headers: [(String, String)], key: SymmetricKey, path: String = "/v1/plan", body: Data? = nil,
                     vendor: String = "acme", gatewayID: String? = nil) throws -> Bool {
        let h = Dictionary(uniqueKeysWithValues: headers)
        let sequence = try #require(h[RequestSession.sequenceHeader].flatMap { UInt64($0) })
        return RequestSession.isValid(mac: try #require(h[RequestSession.macHeader]), key: key, method: "POST", path: path, vendor: vendor,
                                      gatewayID: gatewayID ?? gateway.id, ticket: try #require(h[RequestSession.ticketHeader]),
                                      sequence: sequence, body: body ?? self.body)
    }

    @Test func bothSidesHoldTheSameKeyAndEveryRequestTakesTheNextSequenceNumber() throws {
        let (book, ticket, vendorSide) = try handshake()
        let first = try #require(book.headers("acme", gatewayID: gateway.id, vendor: "acme", method: "POST", path: "/v1/plan", body: body, now: now))
        let second = try #require(book.headers("acme", gatewayID: gateway.id, vendor: "acme", method: "POST", path: "/v1/plan", body: body, now: now))
        #expect(Dictionary(uniqueKeysWithValues: first)[RequestSession.sequenceHeader] == "1")
        #expect(Dictionary(uniqueKeysWithValues: second)[RequestSession.sequenceHeader] == "2")
        #expect(Dictionary(uniqueKeysWithValues: first)[RequestSession.ticketHeader] == ticket)
        #expect(try macVerifies(first, key: vendorSide))
        #expect(try macVerifies(second, key: vendorSide))
    }

    @Test func theMACCoversPathBodyVendorAndGateway() throws {
        let (book, _, vendorSide) = try handshake()
        let headers = try #require(book.headers("acme", gatewayID: gateway.id, vendor: "acme", method: "POST", path: "/v1/plan", body: body, now: now))
        #expect(try !macVerifies(headers, key: vendorSide, path: "/v1/report"))
        #expect(try !macVerifies(headers, key: vendorSide, body: Data(#"{"currentPlanVersion":2}"#.utf8)))
        #expect(try !macVerifies(headers, key: vendorSide, vendor: "globex"))
        #expect(try !macVerifies(headers, key: vendorSide, gatewayID: "gw-0000000000000000"))
    }

    @Test func theKeyDependsOnTheVendorsSecretTheTicketAndTheGatewaysKey() throws {
        let secret = RequestSession.secret(signingKey: vendorKey)
        let ticket = RequestSession.makeTicket(now: now)
        func key(_ secret: Data, _ ticket: String, gatewayKey: String) -> Data {
            RequestSession.sessionKey(secret: secret, ticket: ticket, vendor: "acme", gatewayID: gateway.id, gatewayKey: gatewayKey)
                .withUnsafeBytes { Data($0) }
        }
        let base = key(secret, ticket, gatewayKey: gateway.publicKey)
        // Every replica with the signing key derives the same key from the ticket alone.
        #expect(key(RequestSession.secret(signingKey: vendorKey), ticket, gatewayKey: gateway.publicKey) == base)
        #expect(key(RequestSession.secret(signingKey: Curve25519.Signing.PrivateKey()), ticket, gatewayKey: gateway.publicKey) != base)
        #expect(key(secret, RequestSession.makeTicket(now: now), gatewayKey: gateway.publicKey) != base)
        #expect(key(secret, ticket, gatewayKey: GatewayIdentity(key: Curve25519.Signing.PrivateKey()).publicKey) != base)
    }

    @Test func onlyTheOfferingKeyOpensTheGrant() throws {
        let (key, offer) = SessionBook.makeOffer()
        let ticket = RequestSession.makeTicket(now: now)
        let sessionKey = SymmetricKey(size: .bits256)
        let grant = try RequestSession.grant(ticket: ticket, sessionKey: sessionKey, offer: offer)
        #expect(try RequestSession.open(grant, with: key) == sessionKey)
        #expect(throws: ProtocolError.self) { try RequestSession.open(grant, with: Curve25519.KeyAgreement.PrivateKey()) }
        // The ticket is bound into the sealing key: another ticket does not open.
        var moved = grant
        moved.ticket = RequestSession.makeTicket(now: now)
        #expect(throws: ProtocolError.self) { try RequestSession.open(moved, with: key) }
    }

    @Test func aLowOrderOrMalformedOfferIsRefused() {
        for key in [Data(count: 32).base64EncodedString(), "not base64", Data(count: 31).base64EncodedString()] {
            #expect(throws: ProtocolError.self) {
                try RequestSession.grant(ticket: RequestSession.makeTicket(now: now), sessionKey: SymmetricKey(size: .bits256),
                                         offer: .init(key: key))
            }
        }
    }

    @Test func ticketsParseOnlyInTheirOwnShape() {
        let ticket = RequestSession.makeTicket(now: now)
        #expect(RequestSession.parseTicket(ticket)?.expiresAt == now.addingTimeInterval(RequestSession.lifetime))
        for bad in ["", "1", "x.abcdefghijklmnop", "-5.abcdefghijklmnop", "1800000000.a b", "1800000000.abc.def", String(repeating: "9", count: 70)] {
            #expect(RequestSession.parseTicket(bad) == nil, "\(bad)")
        }
    }

    @Test func aSessionAboutToLapseIsNotUsed() throws {
        let (book, _, _) = try handshake()
        let late = now.addingTimeInterval(RequestSession.lifetime - SessionBook.renewal)
        #expect(book.holds("acme", now: now))
        #expect(!book.holds("acme", now: late))
        #expect(book.headers("acme", gatewayID: gateway.id, vendor: "acme", method: "POST", path: "/v1/plan", body: body, now: late) == nil)
        book.drop("acme")
        #expect(!book.holds("acme", now: now))
    }

    @Test func theWindowRefusesEveryNumberSeenAndThoseTooOld() {
        var w = ReplayWindow()
        func accept(_ n: UInt64) -> Bool { w.accept(n) }
        #expect(!accept(0))
        #expect(accept(1))
        #expect(!accept(1))
        #expect(accept(3))
        #expect(accept(2), "a little out of order")
        #expect(!accept(2))
        #expect(accept(70))
        #expect(!accept(6), "64 or more below the highest")
        #expect(accept(7))
        #expect(!accept(7))
        #expect(accept(1_000))
        #expect(!accept(70))
        #expect(w.highest == 1_000)
    }
}
