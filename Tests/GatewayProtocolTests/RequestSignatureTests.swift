import Crypto
import Foundation
import Testing
@testable import GatewayProtocol

/// `RequestSignature` v2: who signed, for which vendor and host, when, once.
@Suite("RequestSignature v2")
struct RequestSignatureTests {
    let gateway = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let body = Data(#"{"gatewayID":"gw-0123456789abcdef"}"#.utf8)
    let audience = RequestSignature.Audience(vendor: "acme", host: "iot.acme.example")

    /// The headers a gateway sends, as the receiver reads them.
    func received(nonce: String = "abcdefghijklmnop0123", audience: RequestSignature.Audience? = nil,
                  key: Curve25519.Signing.PrivateKey? = nil) throws -> RequestSignature.Received {
        let headers = Dictionary(uniqueKeysWithValues: try RequestSignature.headers(
            gatewayID: gateway.id, key: key ?? gateway.key, method: "POST", path: "/v1/announce", audience: audience ?? self.audience,
            body: body, now: now, nonce: nonce))
        return RequestSignature.Received(gatewayID: headers[RequestSignature.gatewayHeader], vendor: headers[RequestSignature.vendorHeader],
                                         timestamp: headers[RequestSignature.timestampHeader], nonce: headers[RequestSignature.nonceHeader],
                                         signature: headers[RequestSignature.signatureHeader])
    }

    func verify(_ r: RequestSignature.Received, method: String = "POST", path: String = "/v1/announce", vendor: String = "acme",
                hosts: Set<String> = ["iot.acme.example"], body: Data? = nil, at: Date? = nil) throws {
        try RequestSignature.verify(r, publicKey: gateway.key.publicKey, method: method, path: path, vendor: vendor, hosts: hosts,
                                    body: body ?? self.body, now: at ?? now)
    }

    func code(_ body: () throws -> Void) -> ProtocolError.Code? {
        do { try body() } catch let error as ProtocolError { return error.code } catch { return ProtocolError.Code("other") }
        return nil
    }

    @Test func headersCarryTheAudienceAndVerify() throws {
        let r = try received()
        #expect(r.gatewayID == gateway.id)
        #expect(r.vendor == "acme")
        #expect(r.timestamp == "1800000000")
        #expect(r.nonce == "abcdefghijklmnop0123")
        try verify(r)
        // The host is one of several, in any case; the method in any case.
        try verify(r, hosts: ["other.example", "iot.acme.example"])
        try verify(try received(audience: .init(vendor: "acme", host: "IOT.Acme.Example")))
        try verify(r, method: "post")
        // Within the allowed skew either way.
        try verify(r, at: now.addingTimeInterval(RequestSignature.allowedSkew))
        try verify(r, at: now.addingTimeInterval(-RequestSignature.allowedSkew))
    }

    @Test func aRequestForAnotherVendorIsTheWrongAudience() throws {
        #expect(code { try verify(try received(), vendor: "globex") } == .wrongAudience)
        // Claiming the receiver's vendor in the header without having signed it does not help.
        var forged = try received(audience: .init(vendor: "globex", host: "iot.acme.example"))
        forged.vendor = "acme"
        #expect(code { try verify(forged) } == .badSignature)
    }

    @Test func aRequestForAnotherHostDoesNotVerify() throws {
        #expect(code { try verify(try received(), hosts: ["iot.globex.example"]) } == .badSignature)
        #expect(code { try verify(try received(), hosts: []) } == .badSignature)
        #expect(code { try verify(try received(audience: .init(vendor: "acme", host: "staging.acme.example"))) } == .badSignature)
    }

    @Test func anyAlteredPartFailsTheSignature() throws {
        let r = try received()
        #expect(code { try verify(r, path: "/v1/report") } == .badSignature)
        #expect(code { try verify(r, method: "PUT") } == .badSignature)
        #expect(code { try verify(r, body: Data(#"{"gatewayID":"gw-0123456789abcdee"}"#.utf8)) } == .badSignature)
        #expect(code { try verify(r, body: Data()) } == .badSignature)
        var nonce = r
        nonce.nonce = "abcdefghijklmnop0124"
        #expect(code { try verify(nonce) } == .badSignature)
        var timestamp = r
        timestamp.timestamp = "1800000001"
        #expect(code { try verify(timestamp) } == .badSignature)
        var gatewayID = r
        gatewayID.gatewayID = GatewayIdentity(key: .init()).id
        #expect(code { try verify(gatewayID) } == .badSignature)
        var signature = r
        signature.signature = "not base64!"
        #expect(code { try verify(signature) } == .badSignature)
        #expect(code { try verify(try received(key: Curve25519.Signing.PrivateKey())) } == .badSignature)
    }

    @Test func staleAndMalformedTimestampsAreRefused() throws {
        let r = try received()
        #expect(code { try verify(r, at: now.addingTimeInterval(RequestSignature.allowedSkew + 1)) } == .staleRequest)
        #expect(code { try verify(r, at: now.addingTimeInterval(-RequestSignature.allowedSkew - 1)) } == .staleRequest)
        for bad in ["", "soon", "nan", "inf", "1e400"] {
            var t = r
            t.timestamp = bad
            #expect(code { try verify(t) } == .staleRequest, "\(bad)")
        }
    }

    @Test func everyHeaderIsRequiredAndTheNonceWellFormed() throws {
        let r = try received()
        for keyPath in [\RequestSignature.Received.gatewayID, \.vendor, \.timestamp, \.nonce, \.signature] {
            var missing = r
            missing[keyPath: keyPath] = nil
            #expect(code { try verify(missing) } == .badSignature)
        }
        for nonce in ["short", String(repeating: "n", count: 65), "abcdefghijklmnop\n", "abcdefghijklmnop/+="] {
            #expect(code { try verify(try received(nonce: nonce)) } == .badSignature, "\(nonce.debugDescription)")
        }
    }

    @Test func noncesAreFreshAndWellFormed() {
        let nonces = (0..<100).map { _ in RequestSignature.makeNonce() }
        #expect(Set(nonces).count == nonces.count)
        #expect(nonces.allSatisfy { Fields.nonce.isValid($0) && $0.count == 22 })
    }

    @Test func theWrongAudienceMessageQuotesTheVendorEscaped() throws {
        var r = try received()
        r.vendor = "acme\u{1B}[2J"
        let error = #expect(throws: ProtocolError.self) { try verify(r) }
        #expect(error?.code == .wrongAudience)
        #expect(error.map { Fields.isShowable($0.message, max: 1024) } == true)
    }
}
