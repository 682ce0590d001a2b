import Crypto
import Foundation
import GatewayProtocol
import Logging
import Synchronization

/// A session request's headers as received (nil when absent); see `RequestSession`.
public struct SessionReceived: Sendable, Equatable {
    public var gatewayID: String?
    public var vendor: String?
    public var ticket: String?
    public var sequence: String?
    public var mac: String?

    public init(gatewayID: String?, vendor: String?, ticket: String?, sequence: String?, mac: String?) {
        self.gatewayID = gatewayID
        self.vendor = vendor
        self.ticket = ticket
        self.sequence = sequence
        self.mac = mac
    }
}

extension ProvisioningService {
    /// Answers `POST /v1/session` for a gateway whose signed request was authenticated: a ticket valid for
    /// `RequestSession.lifetime` and its session key, sealed for the offered X25519 key (400 `invalidField`
    /// for a key that is not one).
    public func openSession(_ offer: RequestSession.Offer, for gateway: EnrolledGateway, logger: Logger) throws -> RequestSession.Grant {
        let ticket = RequestSession.makeTicket(now: now())
        let key = RequestSession.sessionKey(secret: sessionSecret, ticket: ticket, vendor: vendor, gatewayID: gateway.id,
                                            gatewayKey: gateway.publicKey)
        do {
            let grant = try RequestSession.grant(ticket: ticket, sessionKey: key, offer: offer)
            logger.debug("session opened", metadata: ["gateway.id": "\(gateway.id)"])
            return grant
        } catch let error as ProtocolError {
            throw APIError.invalidField(error)
        }
    }

    /// Authenticates a plan poll made in a session: the audience vendor must be this daemon's (401
    /// `wrongAudience`); the ticket unexpired and the MAC valid under the session key derived for the
    /// gateway's enrolled key (401 `badSession`: the gateway opens a new session); the sequence number not
    /// seen by this replica for the ticket (401 `replayedRequest`). Then the gateway's generation is read, as a
    /// nonce claim would read it: a copy of its row older than that is read again (403 `unknownGateway` once
    /// revoked; 401 `badSession` when its key changed).
    func authenticateSession(_ received: SessionReceived, method: String, path: String, body: some DataProtocol,
                             logger: Logger) async throws -> (gateway: EnrolledGateway, generation: PlanGeneration) {
        guard let gatewayID = received.gatewayID, let audience = received.vendor, let ticket = received.ticket,
              let sequenceText = received.sequence, let mac = received.mac else {
            throw APIError.badSignature("a session request needs the \(RequestSignature.gatewayHeader), \(RequestSignature.vendorHeader), "
                + "\(RequestSession.ticketHeader), \(RequestSession.sequenceHeader) and \(RequestSession.macHeader) headers")
        }
        guard audience == vendor else {
            throw APIError(.wrongAudience, status: .unauthorized, "request is addressed to vendor \(Fields.quote(audience)), this daemon serves \(vendor)")
        }
        let now = now()
        // A ticket this replica checked before: its expiry and key are kept with its window.
        let known = sessionWindows.known(ticket: ticket, gatewayID: gatewayID)
        guard let expiresAt = known?.expiresAt ?? RequestSession.parseTicket(ticket)?.expiresAt, let sequence = UInt64(sequenceText) else {
            throw APIError(.badSession, status: .unauthorized, "session ticket or sequence number is malformed: open a new session")
        }
        guard expiresAt > now else {
            throw APIError(.badSession, status: .unauthorized, "session ticket expired: open a new session")
        }
        func read() async throws -> GatewayRecord { try await readGateway(gatewayID, logger: logger) }
        /// The session key for the gateway's key in `record`, if the request's MAC verifies with it.
        func verifiedKey(_ record: GatewayRecord) -> Data? {
            let key = known.flatMap { $0.gatewayKey == record.gateway.publicKey ? $0.key : nil }
                ?? RequestSession.sessionKey(secret: sessionSecret, ticket: ticket, vendor: vendor, gatewayID: gatewayID,
                                             gatewayKey: record.gateway.publicKey).withUnsafeBytes { Data($0) }
            return RequestSession.isValid(mac: mac, key: SymmetricKey(data: key), method: method, path: path, vendor: vendor,
                                          gatewayID: gatewayID, ticket: ticket, sequence: sequence, body: body) ? key : nil
        }
        let refused = APIError(.badSession, status: .unauthorized, "session request does not verify for gateway "
            + "\(Fields.quote(gatewayID))'s enrolled key at vendor \(vendor): open a new session")
        var record: GatewayRecord
        let key: Data
        if let cached = knownGateways.value(for: gatewayID), let k = verifiedKey(cached) {
            record = cached
            key = k
        } else {
            record = try await read()
            guard let k = verifiedKey(record) else {
                logger.notice("session request refused", metadata: ["gateway.id": "\(gatewayID)"])
                throw refused
            }
            key = k
        }
        guard sessionWindows.accept(sequence, ticket: ticket, gatewayID: gatewayID,
                                    session: .init(expiresAt: expiresAt, key: key, gatewayKey: record.gateway.publicKey), now: now) else {
            logger.notice("session request replayed", metadata: ["gateway.id": "\(gatewayID)", "session.sequence": "\(sequence)"])
            throw APIError(.replayedRequest, status: .unauthorized, "session sequence number \(sequence) was already used or is too old")
        }
        guard let generation = try await store.generation(gatewayID: gatewayID) else {
            knownGateways.remove(gatewayID)
            throw APIError.unknownGateway("gateway \(Fields.quote(gatewayID)) is not enrolled with vendor \(vendor)")
        }
        if generation.gateway != record.generation {
            let checked = record
            record = try await read()
            if record.gateway.publicKey != checked.gateway.publicKey { throw refused }
        }
        return (record.gateway, generation)
    }
}

/// Each session ticket's ``ReplayWindow`` on this replica, with its expiry and its session key (derived once), for
/// at most `capacity` tickets: expired ones go first, then (a replica serving more live sessions than that)
/// the one expiring soonest, which can then be replayed to this replica as it can to any other (see
/// `RequestSession`).
final class SessionWindows: Sendable {
    /// What a ticket stands for once its first request verified.
    struct Session: Sendable {
        var expiresAt: Date
        /// The session key, for the gateway key below.
        var key: Data
        var gatewayKey: String
    }
    private struct Entry {
        var session: Session
        var window = ReplayWindow()
    }
    private let entries = Mutex<[String: Entry]>([:])
    let capacity: Int

    init(capacity: Int = 100_000) { self.capacity = max(1, capacity) }

    static func name(_ ticket: String, _ gatewayID: String) -> String { gatewayID + " " + ticket }

    /// The session a ticket stood for when a request of it last verified here.
    func known(ticket: String, gatewayID: String) -> Session? {
        entries.withLock { $0[Self.name(ticket, gatewayID)]?.session }
    }

    /// Records `sequence` for the ticket (a verified request's); false when seen or too old.
    func accept(_ sequence: UInt64, ticket: String, gatewayID: String, session: Session, now: Date) -> Bool {
        let name = Self.name(ticket, gatewayID)
        return entries.withLock { entries in
            if entries[name] == nil, entries.count >= capacity {
                entries = entries.filter { $0.value.session.expiresAt > now }
                if entries.count >= capacity, let soonest = entries.min(by: { $0.value.session.expiresAt < $1.value.session.expiresAt })?.key {
                    entries[soonest] = nil
                }
            }
            var entry = entries[name] ?? Entry(session: session)
            guard entry.window.accept(sequence) else { return false }
            entry.session = session
            entries[name] = entry
            return true
        }
    }
}
