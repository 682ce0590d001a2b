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
    /// As ``gateway(id:)``, with the row's generation read in the same statement.
    func gatewayRecord(id: String) async throws -> GatewayRecord?
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

    /// The gateway's ``PlanGeneration`` now, read without writing anything (a plan poll made in a session,
    /// which claims no nonce); nil when no such gateway was ever enrolled. A revoked gateway's row is still
    /// read: revoking raises its generation, so the caller reads the row again and finds it revoked.
    func generation(gatewayID: String) async throws -> PlanGeneration?

    /// What the gateway's plan would be composed from now, with the generation, read in one snapshot
    /// without locking anything (the fast path of a poll: most find their plan unchanged and write nothing).
    func planInputs(gatewayID: String) async throws -> PlanInputs

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
    ///
    /// - Returns: the gateway's ``PlanGeneration`` read in the same transaction; nil for a replay.
    func claimNonceReadingGeneration(gatewayID: String, nonce: String, expiresAt: Date, now: Date) async throws -> PlanGeneration?

    /// Stores a report; returns it with its id. In the same transaction, a delivery outcome
    /// (`RolloutTarget.judgedOutcomes`) is recorded on every target of an active rollout that the report
    /// answers: reached at the report's plan version or before, not reverted, no outcome yet.
    @discardableResult func addReport(_ report: StoredReport) async throws -> StoredReport
    /// Reports, oldest first.
    func reports() async throws -> [StoredReport]

    // Fleet channel

    /// Keeps verified statuses in one transaction, each as ``saveStatus(_:receivedAt:)`` would, in
    /// the order given for each gateway (gateways are locked in id order, so replicas saving the same
    /// statuses never deadlock). Per status: whether it was kept, nil when its gateway is not enrolled.
    func saveStatuses(_ statuses: [ReceivedStatus]) async throws -> [Bool?]
    func statuses() async throws -> [GatewayStatusRecord]
    /// Stores a verified command result.
    func addCommandResult(_ result: StoredCommandResult) async throws
    func commandResults(gatewayID: String?) async throws -> [StoredCommandResult]
    /// Revokes an enrolled gateway: its signed requests are refused from now on.
    func revokeGateway(id: String, at: Date) async throws
    /// Withdraws everything from an enrolled gateway (`at`), or gives it back (nil): while withdrawn, its
    /// plans grant no device and no app, which the gateway takes as decommissioning the vendor's container.
    /// Throws ``StoreError/Code/notFound`` for a gateway not enrolled (or revoked).
    func setWithdrawn(gatewayID: String, at: Date?) async throws

    // Groups

    /// Creates a group; creating one that exists does nothing.
    func createGroup(name: String, at: Date) async throws
    /// Adds enrolled gateways to a group (members already in it stay). Throws ``StoreError/Code/notFound``
    /// for a group or a gateway that does not exist, adding none.
    func addToGroup(name: String, gatewayIDs: [String]) async throws
    /// Removes gateways from a group (ids not in it are ignored). Throws ``StoreError/Code/notFound`` for
    /// a group that does not exist.
    func removeFromGroup(name: String, gatewayIDs: [String]) async throws
    /// Every group with its members, sorted by name.
    func groups() async throws -> [GatewayGroup]

    // Staged rollouts (see `RolloutService`)

    /// In one transaction: records `release` as a *staged* release (plans carry it only where a rollout
    /// pins it), the rollout, and its targets (their `rolloutID` is set here). Throws
    /// ``StoreError/Code/conflict`` when another rollout of the same app is active, recording nothing.
    /// - Returns: the rollout with its id and release id.
    func createRollout(_ rollout: Rollout, release: AppRelease, targets: [RolloutTarget]) async throws -> Rollout
    /// Every rollout, oldest first.
    func rollouts() async throws -> [Rollout]
    func rollout(id: Int64) async throws -> Rollout?
    /// The rollout's targets, by stage then gateway id.
    func rolloutTargets(rolloutID: Int64) async throws -> [RolloutTarget]
    /// Moves a rollout from one of `from` (and, when given, stage `stage`) to `update`'s state, stage and
    /// message, setting `updatedAt` (and `stageStartedAt` when the stage changes or it resumes).
    /// Returns false, changing nothing, when the rollout is not in such a state: another replica, or the
    /// operator, moved it first.
    func transitionRollout(id: Int64, from: Set<Rollout.State>, stage: Int?, to state: Rollout.State, newStage: Int, message: String,
                           at: Date) async throws -> Bool
    /// In one transaction, for one target of a running rollout (`pin: true`) or of one putting gateways
    /// back (`pin: false`, state `halting` or `aborting`): pins the rollout's release of its app to the
    /// gateway, or removes that pin; then calls `issue` with the gateway's plan inputs, which now carry
    /// the pinned release (or the app's current one again), stores the plan it returns, and records the
    /// plan's version on the target (and, unpinning, marks it reverted).
    /// Returns nil, changing nothing, when the rollout is no longer in such a state or the gateway has no
    /// plan.
    func stageTarget<Issued: Sendable>(
        rolloutID: Int64, gatewayID: String, pin: Bool,
        issue: @Sendable (_ inputs: PlanInputs) throws -> (plan: StoredPlan, issued: Issued)
    ) async throws -> Issued?
    /// Completes a running rollout at its last stage `stage`: `promote` makes its release the app's current
    /// release and drops the rollout's pins (plans then carry the same content without them). Returns
    /// false when another replica completed or moved it first.
    func completeRollout(id: Int64, stage: Int, promote: Bool, message: String, at: Date) async throws -> Bool
}

/// A verified status and when it arrived.
public struct ReceivedStatus: Sendable {
    public var status: GatewayStatus
    public var receivedAt: Date

    public init(_ status: GatewayStatus, receivedAt: Date) {
        self.status = status
        self.receivedAt = receivedAt
    }

    /// `statuses` by gateway id, each gateway's in the order given (the index breaks ties).
    static func lockOrder(_ statuses: [ReceivedStatus]) -> [Int] {
        statuses.indices.sorted { (statuses[$0].status.gatewayID, $0) < (statuses[$1].status.gatewayID, $1) }
    }
}

extension VendorStore {
    /// Keeps a verified status of an enrolled gateway when it supersedes the stored one (see
    /// `GatewayStatus.supersedes`); a will only marks the gateway offline. Returns whether it was kept.
    @discardableResult public func saveStatus(_ status: GatewayStatus, receivedAt: Date) async throws -> Bool {
        guard let kept = try await saveStatuses([ReceivedStatus(status, receivedAt: receivedAt)]).first, let kept else {
            throw StoreError(.notFound, "gateway \(status.gatewayID) is not enrolled")
        }
        return kept
    }

    /// ``claimNonceReadingGeneration(gatewayID:nonce:expiresAt:now:)``: whether the nonce was fresh.
    public func claimNonce(gatewayID: String, nonce: String, expiresAt: Date, now: Date) async throws -> Bool {
        try await claimNonceReadingGeneration(gatewayID: gatewayID, nonce: nonce, expiresAt: expiresAt, now: now) != nil
    }
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
