import Foundation
import GatewayProtocol

/// Where the IoT daemon keeps its registry, enrollments, plans, reports, app releases and Chef registrations.
///
/// SQLite (``SQLiteVendorStore``, the embedded default) serves a vendor with a few thousand gateways;
/// PostgreSQL (``PostgresVendorStore``) serves any number of replicas on one database. Every method is one
/// transaction.
public protocol VendorStore: Sendable {
    /// Adds a device to the manufacturing registry. Registering the same device again with the same
    /// vendor/product IDs and model does nothing; registering a known serial differently throws
    /// ``StoreError/Code/conflict``.
    func registerDevice(_ device: RegisteredDevice) async throws
    func device(serial: String) async throws -> RegisteredDevice?
    /// The registry, sorted by serial.
    func devices() async throws -> [RegisteredDevice]

    /// Enrolls a gateway. The same id with the same key again does nothing; another key throws
    /// ``StoreError/Code/conflict``.
    func enrollGateway(_ gateway: EnrolledGateway) async throws
    func gateway(id: String) async throws -> EnrolledGateway?
    /// All gateways with their devices and plan, sorted by id.
    func gateways() async throws -> [GatewaySummary]

    /// In one transaction: records that `gatewayID` announced the registered device `serial` (keeping the
    /// first time it was seen), then calls `issue` with the ``PlanInputs`` (all registered devices the
    /// gateway has announced, its previous plan, the current app releases), stores the plan `issue`
    /// returns in place of the previous one (which may be the previous one itself, unchanged) and returns
    /// what `issue` returned besides the plan.
    /// If `issue` throws, nothing is recorded. Serializing this per gateway is what keeps plan versions
    /// strictly increasing.
    func recordAnnouncement<Issued: Sendable>(
        gatewayID: String, serial: String, at: Date,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued

    /// As ``recordAnnouncement(gatewayID:serial:at:issue:)`` without a new device: re-composes the plan of
    /// a gateway that has one. Returns nil (and calls nothing) when the gateway has no plan yet.
    func reissuePlan<Issued: Sendable>(
        gatewayID: String,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued?

    func plan(gatewayID: String) async throws -> StoredPlan?
    /// Every gateway's plan, sorted by gateway id.
    func plans() async throws -> [StoredPlan]

    /// Records a release; returns it with its id.
    @discardableResult func addAppRelease(_ release: AppRelease) async throws -> AppRelease
    /// Every release, oldest first.
    func appReleases() async throws -> [AppRelease]

    func chefRegistration(gatewayID: String) async throws -> ChefRegistration?
    /// Stores a registration, replacing the gateway's previous one (a re-registration has a new key).
    func saveChefRegistration(_ registration: ChefRegistration) async throws
    /// Every registration, sorted by gateway id.
    func chefRegistrations() async throws -> [ChefRegistration]

    /// In one transaction: forgets the nonces that expired by `now`, then records `nonce` for `gatewayID`
    /// until `expiresAt`. Returns false (and records nothing) when the gateway used that nonce before and it
    /// has not expired: the request is a replay. Kept in the store, not in memory, so that replicas sharing a
    /// database share nonces, and a restart forgets none.
    func claimNonce(gatewayID: String, nonce: String, expiresAt: Date, now: Date) async throws -> Bool

    /// Stores a report; returns it with its id.
    @discardableResult func addReport(_ report: StoredReport) async throws -> StoredReport
    /// Reports, oldest first.
    func reports() async throws -> [StoredReport]

    // Fleet channel

    /// Keeps a verified status of an enrolled gateway when it supersedes the stored one (see
    /// `GatewayStatus.supersedes`); a will only marks the gateway offline. Returns whether it was kept.
    @discardableResult func saveStatus(_ status: GatewayStatus, receivedAt: Date) async throws -> Bool
    func statuses() async throws -> [GatewayStatusRecord]
    /// Stores a verified command result.
    func addCommandResult(_ result: StoredCommandResult) async throws
    func commandResults(gatewayID: String?) async throws -> [StoredCommandResult]
    /// Revokes an enrolled gateway: its signed requests are refused from now on.
    func revokeGateway(id: String, at: Date) async throws
}

/// Why the store refused an operation. Matchable by `code`.
public struct StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// The record exists with different content.
        public static let conflict = Code("conflict")
        /// A record the operation needs does not exist.
        public static let notFound = Code("notFound")
        /// The database file does not exist (and was not to be created).
        public static let missingDatabase = Code("missingDatabase")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
