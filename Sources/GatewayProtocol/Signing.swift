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
        hex(SHA256.hash(data: key.rawRepresentation).prefix(8))
    }

    public static func sha256Hex(_ data: some DataProtocol) -> String {
        hex(SHA256.hash(data: data))
    }

    /// Lowercase hex. Every signed request hashes its body and its canonical string with this (on both
    /// sides), so it writes the digits itself: `String(format:)` per byte cost more than the hash.
    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
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
    /// Computed once: deriving the public key from the seed is a scalar multiplication.
    let keyID: String

    public init(privateKey: Curve25519.Signing.PrivateKey) {
        rawKey = privateKey.rawRepresentation
        keyID = Keys.keyID(privateKey.publicKey)
    }

    public var publicKey: Curve25519.Signing.PublicKey { key.publicKey }

    public func sign(_ plan: ProvisioningPlan) throws -> SignedPlan {
        let bytes = try WireJSON.encoder().encode(plan)
        let sig = try key.signature(for: bytes)
        return SignedPlan(payload: bytes.base64EncodedString(), signature: sig.base64EncodedString(), keyID: keyID)
    }
}

/// Gateway requests are signed so a vendor knows which enrolled gateway is asking (all traffic is
/// gateway-initiated, so there is no other channel to authenticate it), and bound to their audience
/// so that no one who sees a request (another vendor, or anyone on the path) can replay it elsewhere.
///
/// Signed string (each part on its own line):
/// `iotgw-request-v2`, METHOD, PATH, HOST, VENDOR, GATEWAY, TIMESTAMP, NONCE, SHA256HEX(BODY).
/// The receiver checks that VENDOR is itself and HOST one of its names, that the timestamp is within
/// ``allowedSkew`` of its clock, and that it has not seen NONCE from this gateway within that window.
public enum RequestSignature {
    public static let gatewayHeader = "X-IoTGW-Gateway"
    public static let vendorHeader = "X-IoTGW-Vendor"
    public static let timestampHeader = "X-IoTGW-Timestamp"
    public static let nonceHeader = "X-IoTGW-Nonce"
    public static let signatureHeader = "X-IoTGW-Signature"
    /// How far a request's timestamp may be from the receiver's clock; nonces are kept this long (and again).
    public static let allowedSkew: TimeInterval = 300

    /// Who a request is for: the vendor's id and the host name the gateway connects to (no port).
    public struct Audience: Sendable, Equatable {
        public var vendor: String
        public var host: String

        public init(vendor: String, host: String) {
            self.vendor = vendor
            self.host = host.lowercased()
        }
    }

    static func canonical(method: String, path: String, audience: Audience, gatewayID: String, timestamp: String, nonce: String,
                          body: some DataProtocol) -> Data {
        Data(["iotgw-request-v2", method.uppercased(), path, audience.host, audience.vendor, gatewayID, timestamp, nonce,
              Keys.sha256Hex(body)].joined(separator: "\n").utf8)
    }

    /// A fresh nonce: 16 random bytes, base64url.
    public static func makeNonce() -> String {
        var g = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        // base64url without padding, mapped byte by byte (every signed request makes one).
        let base64 = Data(bytes).base64EncodedData()
        return String(decoding: base64.compactMap { c -> UInt8? in
            switch c {
            case UInt8(ascii: "+"): UInt8(ascii: "-")
            case UInt8(ascii: "/"): UInt8(ascii: "_")
            case UInt8(ascii: "="): nil
            default: c
            }
        }, as: UTF8.self)
    }

    /// Headers to add to a request.
    public static func headers(gatewayID: String, key: Curve25519.Signing.PrivateKey, method: String, path: String, audience: Audience,
                               body: some DataProtocol, now: Date = Date(), nonce: String = makeNonce()) throws -> [(String, String)] {
        let ts = String(Int(now.timeIntervalSince1970))
        let sig = try key.signature(for: canonical(method: method, path: path, audience: audience, gatewayID: gatewayID, timestamp: ts,
                                                   nonce: nonce, body: body))
        return [(gatewayHeader, gatewayID), (vendorHeader, audience.vendor), (timestampHeader, ts), (nonceHeader, nonce),
                (signatureHeader, sig.base64EncodedString())]
    }

    /// A request's signature headers as received (nil when absent).
    public struct Received: Sendable, Equatable {
        public var gatewayID: String?
        public var vendor: String?
        public var timestamp: String?
        public var nonce: String?
        public var signature: String?

        public init(gatewayID: String?, vendor: String?, timestamp: String?, nonce: String?, signature: String?) {
            self.gatewayID = gatewayID
            self.vendor = vendor
            self.timestamp = timestamp
            self.nonce = nonce
            self.signature = signature
        }
    }

    /// Verifies a request's audience, signature and freshness. The caller then claims the nonce (it
    /// must refuse a nonce it has seen from this gateway within twice ``allowedSkew``).
    /// - Parameters:
    ///   - vendor: the receiver's own vendor id.
    ///   - hosts: the host names the receiver answers to; the signed host must be one of them.
    public static func verify(_ received: Received, publicKey: Curve25519.Signing.PublicKey, method: String, path: String,
                              vendor: String, hosts: Set<String>, body: some DataProtocol, now: Date = Date()) throws {
        guard let gatewayID = received.gatewayID, let timestamp = received.timestamp, let nonce = received.nonce,
              let signature = received.signature, let audienceVendor = received.vendor else {
            throw ProtocolError(.badSignature, "request lacks signature headers")
        }
        guard Fields.nonce.isValid(nonce) else { throw ProtocolError(.badSignature, "request nonce is malformed") }
        guard audienceVendor == vendor else {
            throw ProtocolError(.wrongAudience, "request is addressed to vendor \(Fields.quote(audienceVendor)), this is \(vendor)")
        }
        guard let t = TimeInterval(timestamp), abs(now.timeIntervalSince1970 - t) <= allowedSkew else {
            throw ProtocolError(.staleRequest, "request timestamp is missing or too far from now")
        }
        guard let sig = Data(base64Encoded: signature) else { throw ProtocolError(.badSignature, "request signature is not base64") }
        // The host is not sent as a header: the signature verifies only for a host the receiver answers to.
        for host in hosts.sorted() {
            let audience = Audience(vendor: vendor, host: host)
            if publicKey.isValidSignature(sig, for: canonical(method: method, path: path, audience: audience, gatewayID: gatewayID,
                                                              timestamp: timestamp, nonce: nonce, body: body)) { return }
        }
        throw ProtocolError(.badSignature, "request signature does not verify for this vendor and its hosts")
    }
}

/// A signed envelope's signature, with a domain tag so that a signature made for one kind of
/// document (a bootstrap bundle) can never pass as another's (a plan).
public enum Envelope {
    /// Domain tag for bootstrap bundles.
    public static let bootstrapDomain = "iotgw-bootstrap-v1"
    /// Domain tag for the operator's update manifests of the gateway software itself (`iot-gateway-hostctl`).
    public static let hostUpdateDomain = "iotgw-host-update-v1"

    static func message(domain: String, payload: Data) -> Data { Data((domain + "\n").utf8) + payload }

    public static func sign(_ payload: Data, domain: String, key: Curve25519.Signing.PrivateKey) throws -> Data {
        try key.signature(for: message(domain: domain, payload: payload))
    }

    public static func isValid(_ signature: Data, payload: Data, domain: String, key: Curve25519.Signing.PublicKey) -> Bool {
        key.isValidSignature(signature, for: message(domain: domain, payload: payload))
    }
}

/// A gateway's identity: its key pair; the id is derived from the public key.
public struct GatewayIdentity: Sendable {
    // Raw bytes: swift-crypto's key types are not Sendable on Linux.
    let rawKey: Data
    /// The key itself, kept: rebuilding it from `rawKey` for every signed request derived the public key
    /// again, a scalar multiplication as costly as the signature.
    private let box: KeyBox
    public var key: Curve25519.Signing.PrivateKey { box.key }

    /// `@unchecked Sendable`: it holds one swift-crypto key, an immutable value (BoringSSL's 64-byte private
    /// key and the public key, written once in its init and only read after), which is not marked
    /// `Sendable` on Linux. Nothing here mutates it, so it is safe to read from any task.
    private final class KeyBox: @unchecked Sendable {
        let key: Curve25519.Signing.PrivateKey
        init(_ key: Curve25519.Signing.PrivateKey) { self.key = key }
    }

    /// `gw-` + the public key's id; with ``publicKey``, computed once, since every signed request names the
    /// gateway and deriving the public key from the seed is a scalar multiplication.
    public let id: String
    /// Base64 of the raw public key.
    public let publicKey: String

    public init(key: Curve25519.Signing.PrivateKey) {
        rawKey = key.rawRepresentation
        box = KeyBox(key)
        id = "gw-" + Keys.keyID(key.publicKey)
        publicKey = Keys.encode(key.publicKey)
    }

    /// The private key as stored on disk (base64 of 32 bytes).
    public var privateKeyBase64: String { rawKey.base64EncodedString() }

    /// The private key as PKCS#8 PEM (RFC 8410: a fixed 16-byte prefix and the 32-byte seed), which
    /// OpenSSL reads for TLS on the fleet channel.
    public var pkcs8PEM: String {
        let der = Data([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]) + rawKey
        return "-----BEGIN PRIVATE KEY-----\n" + der.base64EncodedString() + "\n-----END PRIVATE KEY-----\n"
    }

    /// Writes ``pkcs8PEM`` to `path`, mode 0600 from its creation, replacing any file there by rename.
    public func writePKCS8PEM(to path: String) throws {
        let tmp = path + ".tmp"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw ProtocolError(.invalidField, "cannot create \(tmp) (errno \(errno))") }
        let bytes = Array(pkcs8PEM.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ProtocolError(.invalidField, "cannot write \(path) (errno \(errno))")
        }
    }
}
