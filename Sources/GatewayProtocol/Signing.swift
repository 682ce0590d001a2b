import Crypto
import Foundation

/// A plan as it travels: the exact signed bytes, so no re-encoding can change what was signed.
public struct SignedPlan: Sendable, Codable, Equatable {
    /// Base64 of the plan's JSON bytes.
    public var payload: String
    /// Base64 Ed25519 signature over those bytes.
    public var signature: String
    /// Which vendor key signed (the first 16 hex digits of the SHA-256 of the public key).
    public var keyID: String

    public init(payload: String, signature: String, keyID: String) {
        self.payload = payload
        self.signature = signature
        self.keyID = keyID
    }
}

/// Ed25519 key helpers shared by vendor (plans) and gateway (requests).
public enum Keys {
    /// Base64 of a raw 32-byte public key.
    public static func encode(_ key: Curve25519.Signing.PublicKey) -> String { key.rawRepresentation.base64EncodedString() }

    public static func decodePublic(_ base64: String) throws -> Curve25519.Signing.PublicKey {
        guard let raw = Data(base64Encoded: base64), raw.count == 32 else {
            throw ProtocolError(.invalidKey, "public key must be base64 of 32 bytes")
        }
        return try Curve25519.Signing.PublicKey(rawRepresentation: raw)
    }

    public static func decodePrivate(_ base64: String) throws -> Curve25519.Signing.PrivateKey {
        guard let raw = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)), raw.count == 32 else {
            throw ProtocolError(.invalidKey, "private key must be base64 of 32 bytes")
        }
        return try Curve25519.Signing.PrivateKey(rawRepresentation: raw)
    }

    /// Stable short id of a public key.
    public static func keyID(_ key: Curve25519.Signing.PublicKey) -> String {
        SHA256.hash(data: key.rawRepresentation).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    public static func sha256Hex(_ data: some DataProtocol) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }
}

/// JSON as both sides write it: sorted keys, ISO-8601 dates.
public enum WireJSON {
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}

/// The vendor side: signs plans.
public struct PlanSigner: Sendable {
    // Raw bytes: swift-crypto's key types are not Sendable on Linux.
    let rawKey: Data
    var key: Curve25519.Signing.PrivateKey {
        // Invariant: rawKey came from a valid key's rawRepresentation in init.
        try! Curve25519.Signing.PrivateKey(rawRepresentation: rawKey)
    }

    public init(privateKey: Curve25519.Signing.PrivateKey) { rawKey = privateKey.rawRepresentation }

    public var publicKey: Curve25519.Signing.PublicKey { key.publicKey }

    public func sign(_ plan: ProvisioningPlan) throws -> SignedPlan {
        let bytes = try WireJSON.encoder().encode(plan)
        let sig = try key.signature(for: bytes)
        return SignedPlan(payload: bytes.base64EncodedString(), signature: sig.base64EncodedString(), keyID: Keys.keyID(key.publicKey))
    }
}

/// Gateway requests are signed so a vendor knows which enrolled gateway is asking (all traffic is
/// gateway-initiated, so there is no other channel to authenticate it).
///
/// Signed string: `METHOD\nPATH\nTIMESTAMP\nSHA256HEX(BODY)`.
public enum RequestSignature {
    public static let gatewayHeader = "X-IoTGW-Gateway"
    public static let timestampHeader = "X-IoTGW-Timestamp"
    public static let signatureHeader = "X-IoTGW-Signature"
    /// How far a request's timestamp may be from the receiver's clock.
    public static let allowedSkew: TimeInterval = 300

    static func canonical(method: String, path: String, timestamp: String, body: some DataProtocol) -> Data {
        Data("\(method.uppercased())\n\(path)\n\(timestamp)\n\(Keys.sha256Hex(body))".utf8)
    }

    /// Headers to add to a request.
    public static func headers(gatewayID: String, key: Curve25519.Signing.PrivateKey, method: String, path: String,
                               body: some DataProtocol, now: Date = Date()) throws -> [(String, String)] {
        let ts = String(Int(now.timeIntervalSince1970))
        let sig = try key.signature(for: canonical(method: method, path: path, timestamp: ts, body: body))
        return [(gatewayHeader, gatewayID), (timestampHeader, ts), (signatureHeader, sig.base64EncodedString())]
    }

    /// Verifies a request's signature and freshness.
    public static func verify(publicKey: Curve25519.Signing.PublicKey, method: String, path: String, timestamp: String,
                              signature: String, body: some DataProtocol, now: Date = Date()) throws {
        guard let t = TimeInterval(timestamp), abs(now.timeIntervalSince1970 - t) <= allowedSkew else {
            throw ProtocolError(.staleRequest, "request timestamp is missing or too far from now")
        }
        guard let sig = Data(base64Encoded: signature),
              publicKey.isValidSignature(sig, for: canonical(method: method, path: path, timestamp: timestamp, body: body)) else {
            throw ProtocolError(.badSignature, "request signature does not verify")
        }
    }
}

/// A gateway's identity: its key pair; the id is derived from the public key.
public struct GatewayIdentity: Sendable {
    // Raw bytes: swift-crypto's key types are not Sendable on Linux.
    let rawKey: Data
    public var key: Curve25519.Signing.PrivateKey {
        // Invariant: rawKey came from a valid key's rawRepresentation in init.
        try! Curve25519.Signing.PrivateKey(rawRepresentation: rawKey)
    }

    public init(key: Curve25519.Signing.PrivateKey) { rawKey = key.rawRepresentation }

    /// The private key as stored on disk (base64 of 32 bytes).
    public var privateKeyBase64: String { rawKey.base64EncodedString() }

    public var id: String { "gw-" + Keys.keyID(key.publicKey) }
    public var publicKey: String { Keys.encode(key.publicKey) }
}
