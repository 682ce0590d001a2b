import Crypto
import Foundation
import GatewayProtocol
import Testing

@testable import HostUpdate

@Suite struct ManifestTests {
    let key = Curve25519.Signing.PrivateKey()
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func manifest(_ version: String = "1.2.0", expiresIn: TimeInterval = 3600) -> HostManifest {
        let a = HostManifest.Artifact(url: "client", sha256: String(repeating: "a", count: 64), size: 10)
        return HostManifest(version: version, issuedAt: now, expiresAt: now.addingTimeInterval(expiresIn), client: a,
                            playbook: .init(url: "playbook.tar.gz", sha256: String(repeating: "b", count: 64), size: 10))
    }

    var verifier: ManifestVerifier { ManifestVerifier(publicKey: key.publicKey, maxClientBytes: 1000, maxPlaybookBytes: 1000) }

    func envelope(_ s: SignedHostManifest) throws -> Data { try JSONEncoder().encode(s) }

    @Test func aSignedManifestVerifies() throws {
        let m = manifest()
        let verified = try verifier.verify(envelope: try envelope(try ManifestSigner(privateKey: key).sign(m)), now: now)
        #expect(verified == m)
    }

    @Test func aTamperedPayloadIsRefused() throws {
        var s = try ManifestSigner(privateKey: key).sign(manifest())
        var bytes = Data(base64Encoded: s.payload)!
        let text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "1.2.0", with: "9.2.0")
        bytes = Data(text.utf8)
        s.payload = bytes.base64EncodedString()
        #expect(throws: HostUpdateError(.badSignature, "the manifest's signature does not verify with the configured key")) {
            try verifier.verify(envelope: try envelope(s), now: now)
        }
    }

    @Test func anotherKeyIsRefusedAndNamed() throws {
        let other = Curve25519.Signing.PrivateKey()
        let s = try ManifestSigner(privateKey: other).sign(manifest())
        let e = #expect(throws: HostUpdateError.self) { try verifier.verify(envelope: try envelope(s), now: now) }
        #expect(e?.code == .badSignature)
        #expect(e?.message.contains(Keys.keyID(other.publicKey)) == true)
    }

    /// Domain separation: the same bytes signed as a bootstrap bundle (or bare, as plans are) never pass.
    @Test func signaturesOfOtherDocumentsDoNotPass() throws {
        let bytes = try WireJSON.encoder().encode(manifest())
        let asBootstrap = try Envelope.sign(bytes, domain: Envelope.bootstrapDomain, key: key)
        let bare = try key.signature(for: bytes)
        for sig in [asBootstrap, bare] {
            let s = SignedHostManifest(payload: bytes.base64EncodedString(), signature: sig.base64EncodedString(), keyID: Keys.keyID(key.publicKey))
            let e = #expect(throws: HostUpdateError.self) { try verifier.verify(envelope: try envelope(s), now: now) }
            #expect(e?.code == .badSignature)
        }
    }

    @Test func expiredAndFutureManifestsAreRefused() throws {
        let expired = try ManifestSigner(privateKey: key).sign(manifest(expiresIn: -1))
        #expect((#expect(throws: HostUpdateError.self) { try verifier.verify(envelope: try envelope(expired), now: now) })?.code == .expired)
        let signed = try ManifestSigner(privateKey: key).sign(manifest())
        let early = now.addingTimeInterval(-ManifestVerifier.allowedSkew - 10)
        #expect((#expect(throws: HostUpdateError.self) { try verifier.verify(envelope: try envelope(signed), now: early) })?.code == .expired)
    }

    @Test func malformedAndOversizedManifestsAreRefused() throws {
        #expect((#expect(throws: HostUpdateError.self) { try verifier.verify(envelope: Data("{}".utf8), now: now) })?.code == .malformed)
        var big = manifest()
        big.client.size = 1001
        let s = try ManifestSigner(privateKey: key).sign(big)
        #expect((#expect(throws: HostUpdateError.self) { try verifier.verify(envelope: try envelope(s), now: now) })?.code == .tooLarge)
        var badDigest = manifest()
        badDigest.playbook.sha256 = "ABC"
        let s2 = try ManifestSigner(privateKey: key).sign(badDigest)
        #expect((#expect(throws: HostUpdateError.self) { try verifier.verify(envelope: try envelope(s2), now: now) })?.code == .malformed)
        let s3 = try ManifestSigner(privateKey: key).sign(manifest("1.x"))
        #expect((#expect(throws: HostUpdateError.self) { try verifier.verify(envelope: try envelope(s3), now: now) })?.code == .malformed)
    }

    @Test func versionsCompareNumerically() throws {
        let v = { (s: String) in try #require(HostVersion(s)) }
        #expect(try v("1.10.0") > v("1.9.9"))
        #expect(try v("2") > v("1.99"))
        #expect(try v("1.4") == v("1.4.0"))
        #expect(try !(v("1.4.0") < v("1.4")))
        for bad in ["", "1.", ".1", "1.2.3.4.5", "v1", "1.-2", "1.0x", "1234567890"] { #expect(HostVersion(bad) == nil, "\(bad)") }
    }

    @Test func urlsMustBeHTTPSUnlessAllowed() throws {
        let strict = URLPolicy(allowInsecureHTTP: false)
        #expect(try strict.check("https://u.example/m.json", relativeTo: nil).absoluteString == "https://u.example/m.json")
        #expect((#expect(throws: HostUpdateError.self) { try strict.check("http://u.example/m.json", relativeTo: nil) })?.code == .insecureURL)
        #expect((#expect(throws: HostUpdateError.self) { try strict.check("file:///etc/passwd", relativeTo: nil) })?.code != nil)
        let base = URL(string: "https://u.example/gw/manifest.json")
        #expect(try strict.check("client-1.2", relativeTo: base).absoluteString == "https://u.example/gw/client-1.2")
        // A relative URL cannot downgrade to http, an absolute one is checked as given.
        #expect((#expect(throws: HostUpdateError.self) { try strict.check("http://evil.example/x", relativeTo: base) })?.code == .insecureURL)
        #expect(try URLPolicy(allowInsecureHTTP: true).check("http://127.0.0.1:8080/m", relativeTo: nil).scheme == "http")
    }

    @Test func stateIsWrittenDurablyAndACorruptOneFailsClosed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hostctl-state-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = StateStore(directory: dir)
        try store.prepare()
        #expect(try store.load() == HostState())
        let s = HostState(installedVersion: "1.0", highestAcceptedVersion: "1.1", previousVersion: "0.9")
        try store.save(s)
        #expect(try store.load() == s)
        #expect(!FileManager.default.fileExists(atPath: dir + "/state.json.tmp"))
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: dir + "/state.json"))
        #expect((#expect(throws: HostUpdateError.self) { try store.load() })?.code == .state)
    }

    @Test func oneRunAtATime() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hostctl-lock-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = StateStore(directory: dir)
        try store.prepare()
        let first = try #require(try store.lock())
        #expect(try store.lock() == nil)
        first.release()
        let again = try #require(try store.lock())
        again.release()
    }
}

@Suite struct HostctlConfigTests {
    func load(_ json: String) throws -> HostctlConfig {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hostctl-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return try HostctlConfig.load(path: path)
    }

    let key = Keys.encode(Curve25519.Signing.PrivateKey().publicKey)

    @Test func defaultsFitThePackagedUnits() throws {
        let c = try load(#"{"manifestURL": "https://u.example/m.json", "publicKey": "\#(key)"}"#)
        #expect(c.installPath == "/usr/lib/iot-gateway/iot-gateway-client")
        #expect(c.controlSocket == "/run/iot-gateway/control.sock")
        #expect(c.stateDirectory == "/var/lib/iot-gateway-hostctl")
        #expect(c.restartCommand == ["systemctl", "restart", "iot-gateway-client.service"])
        #expect(!c.allowInsecureHTTP)
        #expect(c.initialVersion == nil)
    }

    @Test func wrongSettingsAreRefused() throws {
        let cases: [(String, HostUpdateError.Code)] = [
            (#"{"manifestURL": "http://u.example/m.json", "publicKey": "\#(key)"}"#, .insecureURL),
            (#"{"manifestURL": "https://u.example/m.json", "publicKey": "c2hvcnQ="}"#, .config),
            (#"{"manifestURL": "https://u.example/m.json", "publicKey": "\#(key)", "initialVersion": "v2"}"#, .config),
            (#"{"manifestURL": "https://u.example/m.json", "publicKey": "\#(key)", "restartCommand": []}"#, .config),
            (#"{"manifestURL": "https://u.example/m.json", "publicKey": "\#(key)", "installPath": "bin/x"}"#, .config),
            (#"{"publicKey": "\#(key)"}"#, .config),
        ]
        for (json, code) in cases {
            #expect((#expect(throws: HostUpdateError.self) { try load(json) })?.code == code, "\(json)")
        }
        let lab = try load(#"{"manifestURL": "http://127.0.0.1:8080/m.json", "publicKey": "\#(key)", "allowInsecureHTTP": true}"#)
        #expect(lab.allowInsecureHTTP)
    }
}
