import Crypto
import Foundation
import GatewayProtocol

/// What the operator's update server publishes: a new build of the gateway software and the playbook
/// that installs it. Travels inside a ``SignedHostManifest``; see README "Updating the gateway software".
public struct HostManifest: Sendable, Codable, Equatable {
    /// A file the manifest names: where to get it and exactly what it must be.
    public struct Artifact: Sendable, Codable, Equatable {
        /// Absolute, or relative to the manifest's own URL.
        public var url: String
        /// Lowercase hex SHA-256 of the file.
        public var sha256: String
        /// Its size in bytes (a download stops as soon as it is exceeded).
        public var size: Int

        public init(url: String, sha256: String, size: Int) {
            self.url = url
            self.sha256 = sha256
            self.size = size
        }

        enum CodingKeys: String, CodingKey { case url, sha256, size }
    }

    /// The manifest format; gateways refuse formats they do not know.
    public var schema: Int
    /// Dotted numeric version of the build (`1.4.0`); gateways install strictly newer versions only.
    public var version: String
    public var issuedAt: Date
    public var expiresAt: Date
    /// The new `iot-gateway-client` binary.
    public var client: Artifact
    /// A gzip'd (or plain) tar of an Ansible playbook directory with `site.yml` at its top; it installs
    /// the binary given to it as `iotgw_client_artifact` at `iotgw_install_path`.
    public var playbook: Artifact
    /// Free text for the operator's records.
    public var notes: String?

    public static let currentSchema = 1

    public init(version: String, issuedAt: Date, expiresAt: Date, client: Artifact, playbook: Artifact, notes: String? = nil) {
        schema = Self.currentSchema
        self.version = version
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.client = client
        self.playbook = playbook
        self.notes = notes
    }

    enum CodingKeys: String, CodingKey { case schema, version, issuedAt, expiresAt, client, playbook, notes }
}

/// A manifest as it travels: its exact JSON bytes and an Ed25519 signature over the domain tag
/// ``Envelope/hostUpdateDomain`` and those bytes, so no other signed document of the project (a plan,
/// a bootstrap bundle, a request) can pass as a manifest, nor a manifest as one of them.
public struct SignedHostManifest: Sendable, Codable, Equatable {
    /// Base64 of the manifest's JSON bytes.
    public var payload: String
    /// Base64 Ed25519 signature.
    public var signature: String
    /// The signing key's id (``Keys/keyID(_:)``), so an operator rotating keys sees which one signed.
    public var keyID: String

    public init(payload: String, signature: String, keyID: String) {
        self.payload = payload
        self.signature = signature
        self.keyID = keyID
    }

    enum CodingKeys: String, CodingKey { case payload, signature, keyID }
}

/// A build version: dot-separated decimal numbers (`1.4.0`, at most 4 parts). `1.4` equals `1.4.0`.
public struct HostVersion: Sendable, Comparable, CustomStringConvertible {
    public let parts: [Int]
    public let description: String

    public init?(_ text: String) {
        let pieces = text.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...4).contains(pieces.count) else { return nil }
        var parts: [Int] = []
        for p in pieces {
            guard (1...9).contains(p.count), p.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(p) else { return nil }
            parts.append(n)
        }
        self.parts = parts
        description = text
    }

    private func padded(_ n: Int) -> [Int] { parts + Array(repeating: 0, count: n - parts.count) }

    public static func < (a: HostVersion, b: HostVersion) -> Bool { a.padded(4).lexicographicallyPrecedes(b.padded(4)) }
    public static func == (a: HostVersion, b: HostVersion) -> Bool { a.padded(4) == b.padded(4) }
}

/// The operator's side: signs manifests.
public struct ManifestSigner: Sendable {
    // Raw bytes: swift-crypto's key types are not Sendable on Linux.
    let rawKey: Data

    public init(privateKey: Curve25519.Signing.PrivateKey) { rawKey = privateKey.rawRepresentation }

    public func sign(_ manifest: HostManifest) throws -> SignedHostManifest {
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: rawKey)
        let bytes = try WireJSON.encoder().encode(manifest)
        let signature = try Envelope.sign(bytes, domain: Envelope.hostUpdateDomain, key: key)
        return SignedHostManifest(payload: bytes.base64EncodedString(), signature: signature.base64EncodedString(),
                                  keyID: Keys.keyID(key.publicKey))
    }
}

/// Checks a fetched manifest before anything of it is used. Pure: no I/O, time injected.
public struct ManifestVerifier: Sendable {
    /// Largest envelope accepted (the manifest is small; anything bigger is not one).
    public static let maxEnvelopeBytes = 64 * 1024
    /// How far in the future `issuedAt` may be (clock skew between the operator and the gateway).
    public static let allowedSkew: TimeInterval = 300

    let rawPublicKey: Data
    /// Upper bounds for the artifacts' declared sizes.
    public var maxClientBytes: Int
    public var maxPlaybookBytes: Int

    public init(publicKey: Curve25519.Signing.PublicKey, maxClientBytes: Int, maxPlaybookBytes: Int) {
        rawPublicKey = publicKey.rawRepresentation
        self.maxClientBytes = maxClientBytes
        self.maxPlaybookBytes = maxPlaybookBytes
    }

    /// Decodes the envelope, verifies the signature over the exact payload bytes, then the manifest's
    /// fields and expiry. The version is checked by the caller against its durable floor (``isNewer``).
    public func verify(envelope: Data, now: Date) throws -> HostManifest {
        guard envelope.count <= Self.maxEnvelopeBytes else {
            throw HostUpdateError(.tooLarge, "the manifest is larger than \(Self.maxEnvelopeBytes) bytes")
        }
        let signed: SignedHostManifest
        do { signed = try JSONDecoder().decode(SignedHostManifest.self, from: envelope) } catch {
            throw HostUpdateError(.malformed, "the manifest is not a signed envelope {payload, signature, keyID}")
        }
        guard let payload = Data(base64Encoded: signed.payload), let signature = Data(base64Encoded: signed.signature) else {
            throw HostUpdateError(.malformed, "the manifest's payload or signature is not base64")
        }
        let key = try Curve25519.Signing.PublicKey(rawRepresentation: rawPublicKey)
        guard Envelope.isValid(signature, payload: payload, domain: Envelope.hostUpdateDomain, key: key) else {
            let other = signed.keyID == Keys.keyID(key) ? "" : " (it names key \(Fields.quote(signed.keyID)), ours is \(Keys.keyID(key)))"
            throw HostUpdateError(.badSignature, "the manifest's signature does not verify with the configured key\(other)")
        }
        // Only now, with the bytes known to be the operator's, are they parsed.
        let m: HostManifest
        do { m = try WireJSON.decoder().decode(HostManifest.self, from: payload) } catch {
            throw HostUpdateError(.malformed, "the signed manifest does not decode: \(error)")
        }
        guard m.schema == HostManifest.currentSchema else {
            throw HostUpdateError(.malformed, "manifest schema \(m.schema) is not supported (this updater knows \(HostManifest.currentSchema))")
        }
        guard HostVersion(m.version) != nil else {
            throw HostUpdateError(.malformed, "manifest version \(Fields.quote(m.version)) is not dotted decimal numbers")
        }
        guard m.expiresAt > now else {
            throw HostUpdateError(.expired, "the manifest for \(m.version) expired at \(m.expiresAt)")
        }
        guard m.issuedAt <= now.addingTimeInterval(Self.allowedSkew) else {
            throw HostUpdateError(.expired, "the manifest for \(m.version) is issued in the future (\(m.issuedAt))")
        }
        try Self.check(m.client, "client", max: maxClientBytes)
        try Self.check(m.playbook, "playbook", max: maxPlaybookBytes)
        return m
    }

    static func check(_ a: HostManifest.Artifact, _ name: String, max: Int) throws {
        guard a.sha256.count == 64, a.sha256.allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) }) else {
            throw HostUpdateError(.malformed, "the \(name) artifact's sha256 is not 64 lowercase hex digits")
        }
        guard a.size > 0 else { throw HostUpdateError(.malformed, "the \(name) artifact's size must be positive") }
        guard a.size <= max else { throw HostUpdateError(.tooLarge, "the \(name) artifact (\(a.size) bytes) is larger than \(max) bytes") }
        guard !a.url.isEmpty, a.url.utf8.count <= 2048 else { throw HostUpdateError(.malformed, "the \(name) artifact's url is empty or too long") }
    }
}
