import Crypto
import Foundation
import NIOHTTP1
import Testing
@testable import Chef

/// Request signing reproduces Ruby Mixlib::Authentication byte for byte.
@Suite struct ChefSigningTests {
    static let vectors: [SigningVector] = (try? SigningVector.all()) ?? []

    @Test func fixtureHasAllNineVectors() throws {
        let v = try SigningVector.all()
        #expect(v.count == 9)
        #expect(Set(v.map(\.proto)) == ["1.0", "1.1", "1.3"])
        #expect(Set(v.map(\.method)) == ["GET", "POST", "PUT"])
    }

    @Test(arguments: vectors)
    func reproducesVector(_ v: SigningVector) throws {
        let proto = try #require(ChefSigningProtocol(rawValue: v.proto))
        let signer = ChefRequestSigner(userID: v.userID, key: try Fixture.testKey(), protocolVersion: proto,
                                       serverAPIVersion: v.serverAPIVersion, chefVersion: try #require(v.headers["X-Chef-Version"]))
        let body = Array(v.body.utf8)

        #expect(signer.canonicalRequest(method: v.method, path: v.path, body: body, timestamp: v.timestamp) == v.canonicalRequest)
        #expect(ChefRequestSigner.contentHash(body, proto) == v.headers["X-Ops-Content-Hash"])

        let headers = try signer.headers(method: v.method, path: v.path, body: body, timestamp: v.timestamp)
        // Every header of the vector, byte for byte, each exactly once.
        for (name, value) in v.headers {
            #expect(headers[name] == [value], "\(name)")
        }
        // Nothing signed beyond the vector's lines; Content-Type only with a body.
        let ours = Set(headers.map { $0.name })
        let extra = ours.subtracting(v.headers.keys)
        #expect(extra == (body.isEmpty ? [] : ["Content-Type"]))
        if !body.isEmpty { #expect(headers["Content-Type"] == ["application/json"]) }
        // Authorization lines in order, 60 characters each except the last.
        var lines: [String] = []
        while let line = headers["X-Ops-Authorization-\(lines.count + 1)"].first { lines.append(line) }
        let expectedCount = v.headers.keys.filter { $0.hasPrefix("X-Ops-Authorization-") }.count
        #expect(lines.count == expectedCount)
        #expect(lines.dropLast().allSatisfy { $0.count == 60 })
    }

    @Test(arguments: vectors)
    func signingWithADateFormatsTheTimestamp(_ v: SigningVector) throws {
        let proto = try #require(ChefSigningProtocol(rawValue: v.proto))
        let signer = ChefRequestSigner(userID: v.userID, key: try Fixture.testKey(), protocolVersion: proto, serverAPIVersion: v.serverAPIVersion)
        let date = try #require(ISO8601DateFormatter().date(from: v.timestamp)).addingTimeInterval(0.75)
        let headers = try signer.headers(method: v.method, path: v.path, body: Array(v.body.utf8), date: date)
        #expect(headers["X-Ops-Timestamp"] == [v.timestamp])
        #expect(headers["X-Ops-Authorization-1"] == [try #require(v.headers["X-Ops-Authorization-1"])])
    }

    @Test func timestampIsUTCWholeSeconds() {
        #expect(ChefRequestSigner.timestamp(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00Z")
        #expect(ChefRequestSigner.timestamp(Date(timeIntervalSince1970: 1_704_164_645.999)) == "2024-01-02T03:04:05Z")
        #expect(ChefRequestSigner.timestamp(Date(timeIntervalSince1970: 4_102_444_799)) == "2099-12-31T23:59:59Z")
    }

    @Test func canonicalPathFollowsMixlib() {
        #expect(ChefRequestSigner.canonicalPath("//nodes/web01/") == "/nodes/web01")
        #expect(ChefRequestSigner.canonicalPath("/organizations//acme///clients") == "/organizations/acme/clients")
        #expect(ChefRequestSigner.canonicalPath("/") == "/")
        #expect(ChefRequestSigner.canonicalPath("//") == "/")
        #expect(ChefRequestSigner.canonicalPath("/search/node?q=name:web01") == "/search/node")
    }

    @Test func tooLongCanonicalRequestIsASigningError() throws {
        let key = try Fixture.testKey()
        #expect(throws: ChefError.self) { try key.privateEncrypt([UInt8](repeating: 0x41, count: 246)) }
        _ = try key.privateEncrypt([UInt8](repeating: 0x41, count: 245))
    }

    @Test func loadsPKCS8AndRejectsGarbage() throws {
        let key = try Fixture.testKey()
        #expect(key.pemRepresentation.hasPrefix("-----BEGIN RSA PRIVATE KEY-----"))
        #expect(key.publicKeyPEM.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        // Same key, `openssl pkcs8 -topk8 -nocrypt` of the fixture.
        let pkcs8 = try ChefPrivateKey(pemRepresentation: Fixture.string("test-signing-key.pkcs8.pem"))
        let v = try #require(Self.vectors.first { $0.proto == "1.1" })
        let signer = ChefRequestSigner(userID: v.userID, key: pkcs8, protocolVersion: .v1_1)
        let h = try signer.headers(method: v.method, path: v.path, body: Array(v.body.utf8), timestamp: v.timestamp)
        #expect(h["X-Ops-Authorization-1"] == [try #require(v.headers["X-Ops-Authorization-1"])])

        #expect { try ChefPrivateKey(pemRepresentation: "not a key") } throws: { ($0 as? ChefError)?.code == .invalidKey }
        #expect { try ChefPrivateKey(pemRepresentation: key.publicKeyPEM) } throws: { ($0 as? ChefError)?.code == .invalidKey }
    }

    @Test func generatedKeysSignAndAreFast() throws {
        let key = try ChefPrivateKey.generate()
        #expect(key.keySizeInBits == 2048)
        let signer = ChefRequestSigner(userID: "x", key: key)
        let clock = ContinuousClock()
        let elapsed = try clock.measure {
            for _ in 0..<20 { _ = try signer.headers(method: "GET", path: "/nodes/x", timestamp: "2024-01-02T03:04:05Z") }
        }
        #expect(elapsed < .milliseconds(20 * 100), "20 signatures took \(elapsed)")
    }
}
