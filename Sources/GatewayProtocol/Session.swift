import Crypto
import Foundation
import Synchronization

/// Plan polls authenticated by a session MAC after one signed handshake.
///
/// A gateway polls its plan every few seconds, and an Ed25519 check of each poll's signature was a third of
/// the vendor's CPU per poll (`scripts/bench-fleet-scale`). A poll changes nothing and answers what the
/// vendor signed anyway, so it may be authenticated by a cheaper proof:
///
/// 1. The gateway sends `POST /v1/session`, signed as every other request (`RequestSignature` v2, nonce
///    claimed), with an ephemeral X25519 public key (``Offer``).
/// 2. The vendor answers a ``Grant``: a *ticket* (expiry and 16 random bytes, in clear) and the session key,
///    sealed (ChaCha20-Poly1305) under the X25519 agreement with an ephemeral key of its own, so nobody on the
///    path learns it. The session key is `HMAC-SHA256(secret, ticket, vendor, gateway, gateway public key)`,
///    where `secret` is derived from the vendor's plan-signing key: every replica holding that key derives
///    the same session key from the ticket alone, with nothing stored, and a new gateway key (or another
///    gateway) gives another one.
/// 3. Each poll carries the ticket, a sequence number and `HMAC-SHA256(session key, canonical)`
///    (``canonical(method:path:vendor:gatewayID:ticket:sequence:body:)``).
///
/// Only `POST /v1/plan` accepts a session. Requests that change something (announce, bootstrap, report, the
/// handshake itself) stay signed with nonces shared by all replicas. A replica refuses a sequence number it
/// saw for the ticket (``ReplayWindow``), but replicas do not share windows: a recorded poll can be sent
/// once more to each other replica until the ticket expires, which gains its sender the signed plan the
/// recording already showed, and nothing else.
public enum RequestSession {
    public static let path = "/v1/session"
    public static let ticketHeader = "X-IoTGW-Session"
    public static let sequenceHeader = "X-IoTGW-Sequence"
    public static let macHeader = "X-IoTGW-MAC"
    /// How long a ticket is valid; a gateway takes a new one a minute before.
    public static let lifetime: TimeInterval = 3600
    /// The label of the session-key secret derived from the vendor's signing key.
    static let secretLabel = "iotgw-session-secret-v1"

    /// The handshake's body: the gateway's ephemeral X25519 public key, base64 of 32 bytes.
    public struct Offer: Sendable, Codable, Equatable {
        public var key: String

        public init(key: String) { self.key = key }
    }

    /// The handshake's answer.
    public struct Grant: Sendable, Codable, Equatable {
        /// `EXPIRY.RANDOM`: Unix seconds, then 16 random bytes in base64url. Sent back with every poll.
        public var ticket: String
        /// The vendor's ephemeral X25519 public key, base64.
        public var key: String
        /// The session key sealed under the agreement (ChaCha20-Poly1305 combined form), base64.
        public var sealedKey: String

        public init(ticket: String, key: String, sealedKey: String) {
            self.ticket = ticket
            self.key = key
            self.sealedKey = sealedKey
        }
    }

    /// A ticket's parts; nil unless `EXPIRY.RANDOM` with a decimal expiry and a nonce in the nonce alphabet.
    public static func parseTicket(_ ticket: String) -> (expiresAt: Date, random: Substring)? {
        guard ticket.utf8.count <= 64 else { return nil }
        let parts = ticket.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let seconds = Int64(parts[0]), seconds > 0, Fields.nonce.isValid(String(parts[1])) else { return nil }
        return (Date(timeIntervalSince1970: TimeInterval(seconds)), parts[1])
    }

    /// A fresh ticket valid for ``lifetime`` from `now`.
    public static func makeTicket(now: Date) -> String {
        "\(Int64(now.timeIntervalSince1970 + lifetime)).\(RequestSignature.makeNonce())"
    }

    /// The secret session keys are derived from, by every replica holding the vendor's signing key (raw
    /// bytes: `SymmetricKey` is not `Sendable` on Linux).
    public static func secret(signingKey: Curve25519.Signing.PrivateKey) -> Data {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: signingKey.rawRepresentation), info: Data(secretLabel.utf8),
                               outputByteCount: 32).withUnsafeBytes { Data($0) }
    }

    /// The session key of `ticket` for `gatewayID` enrolled with the public key `gatewayKey` (base64), at `vendor`.
    public static func sessionKey(secret: Data, ticket: String, vendor: String, gatewayID: String, gatewayKey: String) -> SymmetricKey {
        let message = Data(["iotgw-session-key-v1", ticket, vendor, gatewayID, gatewayKey].joined(separator: "\n").utf8)
        return SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: secret))))
    }

    /// The key that seals a session key: HKDF of the X25519 agreement, bound to the ticket.
    static func sealingKey(_ shared: SharedSecret, ticket: String) -> SymmetricKey {
        shared.hkdfDerivedSymmetricKey(using: SHA256.self, salt: Data(ticket.utf8), sharedInfo: Data("iotgw-session-seal-v1".utf8),
                                       outputByteCount: 32)
    }

    /// False for the all-zero agreement a low-order point gives (swift-crypto does not refuse one here):
    /// whoever sent it would know the sealing key without any private key.
    static func isContributory(_ shared: SharedSecret) -> Bool {
        shared.withUnsafeBytes { $0.contains { $0 != 0 } }
    }

    /// The vendor's side of the handshake: seals `sessionKey` for the gateway that offered `offer`.
    public static func grant(ticket: String, sessionKey: SymmetricKey, offer: Offer) throws -> Grant {
        guard let raw = Data(base64Encoded: offer.key), raw.count == 32 else {
            throw ProtocolError(.invalidKey, "session offer key must be base64 of 32 bytes")
        }
        let theirs = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: raw)
        let ours = Curve25519.KeyAgreement.PrivateKey()
        guard let shared = try? ours.sharedSecretFromKeyAgreement(with: theirs), isContributory(shared) else {
            throw ProtocolError(.invalidKey, "session offer key is not a usable X25519 key")
        }
        let sealed = try ChaChaPoly.seal(sessionKey.withUnsafeBytes { Data($0) }, using: sealingKey(shared, ticket: ticket))
        return Grant(ticket: ticket, key: ours.publicKey.rawRepresentation.base64EncodedString(), sealedKey: sealed.combined.base64EncodedString())
    }

    /// The gateway's side: opens a grant with the private key whose public half it offered.
    public static func open(_ grant: Grant, with ours: Curve25519.KeyAgreement.PrivateKey) throws -> SymmetricKey {
        guard parseTicket(grant.ticket) != nil else { throw ProtocolError(.malformed, "session ticket is malformed") }
        guard let raw = Data(base64Encoded: grant.key), raw.count == 32, let sealed = Data(base64Encoded: grant.sealedKey) else {
            throw ProtocolError(.malformed, "session grant is not base64 of the expected sizes")
        }
        do {
            let shared = try ours.sharedSecretFromKeyAgreement(with: try Curve25519.KeyAgreement.PublicKey(rawRepresentation: raw))
            guard isContributory(shared) else { throw ProtocolError(.invalidKey, "session grant key is not a usable X25519 key") }
            let key = try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: sealed), using: sealingKey(shared, ticket: grant.ticket))
            guard key.count == 32 else { throw ProtocolError(.malformed, "session key is not 32 bytes") }
            return SymmetricKey(data: key)
        } catch let error as ProtocolError {
            throw error
        } catch {
            throw ProtocolError(.badSignature, "session grant does not open with this handshake's key")
        }
    }

    /// What a poll's MAC covers, each part on its own line.
    static func canonical(method: String, path: String, vendor: String, gatewayID: String, ticket: String, sequence: UInt64,
                          body: some DataProtocol) -> Data {
        // Appended into one buffer: every poll makes this, and joining an array of strings cost more than the MAC.
        var out = Data()
        out.reserveCapacity(256)
        for part in ["iotgw-session-request-v1", method.uppercased(), path, vendor, gatewayID, ticket, String(sequence)] {
            out.append(contentsOf: part.utf8)
            out.append(UInt8(ascii: "\n"))
        }
        out.append(contentsOf: Keys.sha256Hex(body).utf8)
        return out
    }

    /// The headers of a request made in a session (with ``RequestSignature/gatewayHeader`` and ``RequestSignature/vendorHeader``).
    public static func headers(gatewayID: String, vendor: String, ticket: String, sequence: UInt64, key: SymmetricKey, method: String,
                               path: String, body: some DataProtocol) -> [(String, String)] {
        let mac = HMAC<SHA256>.authenticationCode(
            for: canonical(method: method, path: path, vendor: vendor, gatewayID: gatewayID, ticket: ticket, sequence: sequence, body: body),
            using: key)
        return [(RequestSignature.gatewayHeader, gatewayID), (RequestSignature.vendorHeader, vendor), (ticketHeader, ticket),
                (sequenceHeader, String(sequence)), (macHeader, Data(mac).base64EncodedString())]
    }

    /// Whether `mac` (base64) is the MAC of the request under `key`; compared in constant time.
    public static func isValid(mac: String, key: SymmetricKey, method: String, path: String, vendor: String, gatewayID: String,
                               ticket: String, sequence: UInt64, body: some DataProtocol) -> Bool {
        guard let code = Data(base64Encoded: mac), code.count == SHA256.byteCount else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(
            code, authenticating: canonical(method: method, path: path, vendor: vendor, gatewayID: gatewayID, ticket: ticket, sequence: sequence,
                                            body: body),
            using: key)
    }
}

/// The sequence numbers one receiver has seen for one ticket: the highest, and which of the 64 below it.
/// Requests may arrive a little out of order (several in flight); a number seen before, or 64 or more below
/// the highest, is refused.
public struct ReplayWindow: Sendable, Equatable {
    public private(set) var highest: UInt64 = 0
    private var seen: UInt64 = 0

    public init() {}

    /// Records `sequence`; false when it was seen or is too old (nothing recorded then).
    public mutating func accept(_ sequence: UInt64) -> Bool {
        guard sequence > 0 else { return false }
        if sequence > highest {
            let shift = sequence - highest
            seen = shift >= 64 ? 0 : seen << shift
            seen |= 1
            highest = sequence
            return true
        }
        let age = highest - sequence
        guard age < 64, seen & (1 << age) == 0 else { return false }
        seen |= 1 << age
        return true
    }
}

extension PlanSigner {
    /// The secret this vendor's session keys are derived from (``RequestSession/secret(signingKey:)``).
    public var sessionSecret: Data { RequestSession.secret(signingKey: key) }
}

/// A client's sessions (``RequestSession``), one per name it chooses (a vendor, a gateway): each session's
/// ticket, key and next sequence number. Shared by the tasks of one client.
public final class SessionBook: Sendable {
    private struct Held {
        var ticket: String
        var key: Data
        var expiresAt: Date
        var next: UInt64
    }
    private let state = Mutex([String: Held]())
    /// A session is renewed this long before its ticket expires, so no request is sent on one about to lapse.
    public static let renewal: TimeInterval = 60

    public init() {}

    /// An offer for a handshake, and the private key that opens its grant.
    public static func makeOffer() -> (key: Curve25519.KeyAgreement.PrivateKey, offer: RequestSession.Offer) {
        let key = Curve25519.KeyAgreement.PrivateKey()
        return (key, RequestSession.Offer(key: key.publicKey.rawRepresentation.base64EncodedString()))
    }

    /// Opens `grant` with `key` and keeps it under `name`, in place of any session held there.
    public func open(_ grant: RequestSession.Grant, with key: Curve25519.KeyAgreement.PrivateKey, as name: String) throws {
        let sessionKey = try RequestSession.open(grant, with: key)
        guard let expiresAt = RequestSession.parseTicket(grant.ticket)?.expiresAt else {
            throw ProtocolError(.malformed, "session ticket is malformed")
        }
        state.withLock {
            $0[name] = Held(ticket: grant.ticket, key: sessionKey.withUnsafeBytes { Data($0) }, expiresAt: expiresAt, next: 1)
        }
    }

    /// The headers of one request in the session held under `name`, with its next sequence number; nil when
    /// none is held or it expires within ``renewal``.
    public func headers(_ name: String, gatewayID: String, vendor: String, method: String, path: String, body: some DataProtocol,
                        now: Date = Date()) -> [(String, String)]? {
        let taken = state.withLock { s -> (ticket: String, key: Data, sequence: UInt64)? in
            guard var held = s[name], held.expiresAt.timeIntervalSince(now) > Self.renewal else { return nil }
            defer { held.next += 1; s[name] = held }
            return (held.ticket, held.key, held.next)
        }
        guard let taken else { return nil }
        return RequestSession.headers(gatewayID: gatewayID, vendor: vendor, ticket: taken.ticket, sequence: taken.sequence,
                                      key: SymmetricKey(data: taken.key), method: method, path: path, body: body)
    }

    /// Whether a session is held under `name` that does not expire within ``renewal``.
    public func holds(_ name: String, now: Date = Date()) -> Bool {
        state.withLock { $0[name].map { $0.expiresAt.timeIntervalSince(now) > Self.renewal } ?? false }
    }

    /// Forgets the session held under `name` (the receiver refused it).
    public func drop(_ name: String) { _ = state.withLock { $0.removeValue(forKey: name) } }
}
