import Foundation
import Synchronization

/// One nonce a signed request claims (see ``VendorStore/claimNonce(gatewayID:nonce:expiresAt:now:)``).
struct NonceClaim: Sendable, Equatable {
    var gatewayID: String
    var nonce: String
    var expiresAt: Date
    var now: Date

    /// Which gateway's nonce: a nonce is used once per gateway.
    struct Key: Hashable {
        var gatewayID: String
        var nonce: String
    }

    var key: Key { Key(gatewayID: gatewayID, nonce: nonce) }
}

/// Group commit of nonce claims: every signed request claims its nonce in the database, and a transaction
/// each (a commit, on PostgreSQL a WAL flush) capped the daemon far below what it can verify. Claims that
/// arrive while a batch commits wait and go together in the next one (``Grouped``): one transaction, after
/// which each learns whether its own nonce was fresh.
///
/// Within one batch a nonce claimed twice by the same gateway is fresh only for its first claim (the
/// later ones are replays); `commit` gets each (gateway, nonce) at most once. Across batches and across
/// replicas the database decides, as before: the nonces stay in the shared store.
///
/// `Answer` is what a claim learns: whether its nonce was fresh (`Bool`), or the store's ``PlanGeneration``
/// read in the same transaction, nil for a replay.
final class NonceClaims<Answer: Sendable>: Sendable {
    /// Commits the claims in one transaction; answers each claim in order (`replayed` for a replay).
    typealias Commit = @Sendable (_ claims: [NonceClaim]) async throws -> [Answer]

    private let batches: Grouped<NonceClaim, Answer>
    private let commit: Commit
    /// The answer of a claim repeating an earlier one of its batch.
    let replayed: Answer

    init(maxBatch: Int = 256, replayed: Answer, commit: @escaping Commit) {
        self.replayed = replayed
        self.commit = commit
        batches = Grouped(maxBatch: maxBatch) { claims in try await Self.commitOnce(claims, replayed: replayed, commit) }
    }

    /// Claims `claim` in the next batch.
    func claim(_ claim: NonceClaim) async throws -> Answer { try await batches.call(claim) }

    /// Commits `claims` as one batch now, bypassing the queue (tests).
    func commitBatch(_ claims: [NonceClaim]) async throws -> [Answer] { try await Self.commitOnce(claims, replayed: replayed, commit) }

    /// Claims waiting for the next batch (tests).
    var waiting: Int { batches.waiting }

    /// Commits each (gateway, nonce) once: a repeat within the batch is a replay of its first claim.
    static func commitOnce(_ claims: [NonceClaim], replayed: Answer, _ commit: Commit) async throws -> [Answer] {
        var first: [NonceClaim.Key: Int] = [:]
        var unique: [NonceClaim] = []
        var slot: [Int?] = []
        for claim in claims {
            let key = claim.key
            if first[key] == nil {
                first[key] = unique.count
                slot.append(unique.count)
                unique.append(claim)
            } else {
                slot.append(nil)
            }
        }
        let fresh = try await commit(unique)
        guard fresh.count == unique.count else {
            throw StoreError(.conflict, "nonce batch answered \(fresh.count) claims for \(unique.count)")
        }
        return slot.map { $0.map { fresh[$0] } ?? replayed }
    }
}

extension NonceClaims where Answer == Bool {
    /// Claims that learn whether their nonce was fresh.
    convenience init(maxBatch: Int = 256, commit: @escaping Commit) {
        self.init(maxBatch: maxBatch, replayed: false, commit: commit)
    }
}

/// Calls that go to the database together: a call that finds none running leads, runs everything pending in
/// one go, answers the others, then hands the lead to the first call that arrived meanwhile (which runs the
/// next batch, its own among them), so no call waits for more than its own batch. Nothing waits for a timer:
/// a call on an idle store runs at once, alone, and batches grow only with the load.
final class Grouped<Input: Sendable, Answer: Sendable>: Sendable {
    /// Runs the inputs in one go; answers each in order.
    typealias Run = @Sendable (_ inputs: [Input]) async throws -> [Answer]

    private enum Wake: Sendable {
        case answered(Answer)
        case failed(any Error)
        case lead
    }

    private struct Waiter {
        var ticket: UInt64
        var input: Input
        var continuation: CheckedContinuation<Wake, Never>
    }

    private struct State {
        var pending: [Waiter] = []
        /// Whether a leader is running a batch; while it is not, `pending` is empty.
        var running = false
        var nextTicket: UInt64 = 0
    }

    private let state = Mutex(State())
    private let run: Run
    /// The most inputs one batch carries.
    let maxBatch: Int

    init(maxBatch: Int = 256, run: @escaping Run) {
        self.maxBatch = max(1, maxBatch)
        self.run = run
    }

    /// `input`'s answer, from the next batch.
    func call(_ input: Input) async throws -> Answer {
        let ticket = state.withLock { s -> UInt64 in
            defer { s.nextTicket &+= 1 }
            return s.nextTicket
        }
        let wake = await withCheckedContinuation { (continuation: CheckedContinuation<Wake, Never>) in
            let lead = state.withLock { s -> Bool in
                s.pending.append(Waiter(ticket: ticket, input: input, continuation: continuation))
                guard !s.running else { return false }
                s.running = true
                return true
            }
            if lead { continuation.resume(returning: .lead) }
        }
        switch wake {
        case .answered(let answer): return answer
        case .failed(let error): throw error
        case .lead: return try await lead(ticket: ticket)
        }
    }

    /// Runs the pending inputs (the leader's own first among them), answers the others, passes the lead on.
    private func lead(ticket: UInt64) async throws -> Answer {
        let batch = state.withLock { s -> [Waiter] in
            let n = min(s.pending.count, maxBatch)
            defer { s.pending.removeFirst(n) }
            return Array(s.pending.prefix(n))
        }
        let outcome: Result<[Answer], any Error>
        do {
            let answers = try await run(batch.map(\.input))
            guard answers.count == batch.count else {
                throw StoreError(.conflict, "a batch of \(batch.count) was answered \(answers.count) times")
            }
            outcome = .success(answers)
        } catch {
            outcome = .failure(error)
        }
        var own: Result<Answer, any Error>?
        for (i, waiter) in batch.enumerated() {
            let answer: Result<Answer, any Error> = outcome.map { $0[i] }
            if waiter.ticket == ticket {
                own = answer
                continue
            }
            switch answer {
            case .success(let value): waiter.continuation.resume(returning: .answered(value))
            case .failure(let error): waiter.continuation.resume(returning: .failed(error))
            }
        }
        let next = state.withLock { s -> Waiter? in
            guard let first = s.pending.first else {
                s.running = false
                return nil
            }
            return first
        }
        next?.continuation.resume(returning: .lead)
        // The leader's own input is the first pending when it took the lead, so always in its batch.
        guard let own else { throw StoreError(.conflict, "a batch's leader was left out of its batch") }
        return try own.get()
    }

    /// Calls waiting for the next batch (tests).
    var waiting: Int { state.withLock { $0.pending.count } }
}
