import Foundation
import Synchronization
import Testing
@testable import VendorService

/// Group commit of nonce claims, against a commit that only records its batches.
@Suite("Nonce claims committed in groups")
struct NonceClaimsTests {
    /// A commit that blocks its first batch until opened, recording every batch; a nonce is fresh when no
    /// earlier batch had it.
    final class Recorder: Sendable {
        let batches = Mutex<[[String]]>([])
        let started = Mutex(0)
        let gate: AsyncStream<Void>
        let open: AsyncStream<Void>.Continuation

        init() { (gate, open) = AsyncStream.makeStream() }

        func commit(_ claims: [NonceClaim]) async throws -> [Bool] {
            let first = started.withLock { n -> Bool in n += 1; return n == 1 }
            if first { for await _ in gate { break } }
            return batches.withLock { batches in
                let seen = Set(batches.joined())
                batches.append(claims.map(\.nonce))
                return claims.map { !seen.contains($0.nonce) }
            }
        }
    }

    static func claim(_ nonce: String, gateway: String = "gw-1") -> NonceClaim {
        NonceClaim(gatewayID: gateway, nonce: nonce, expiresAt: Harness.now.addingTimeInterval(600), now: Harness.now)
    }

    @Test func claimsArrivingDuringACommitGoTogetherInTheNextOneEachLearningItsOwnAnswer() async throws {
        let recorder = Recorder()
        let claims = NonceClaims { try await recorder.commit($0) }
        try await withThrowingTaskGroup(of: (String, Bool).self) { group in
            group.addTask { ("first", try await claims.claim(Self.claim("n-0"))) }
            // The first claim leads and commits alone; everything after it waits for its commit.
            while recorder.started.withLock({ $0 }) == 0 { await Task.yield() }
            let nonces = ["n-1", "n-2", "n-1", "n-0", "n-3", "n-2"]
            for (i, nonce) in nonces.enumerated() {
                group.addTask { ("\(i):\(nonce)", try await claims.claim(Self.claim(nonce))) }
            }
            while claims.waiting < nonces.count { await Task.yield() }
            recorder.open.yield()
            var answers: [String: Bool] = [:]
            for try await (name, fresh) in group { answers[name] = fresh }
            #expect(answers["first"] == true)
            // n-0 was committed by the first batch: a replay. Each duplicate within the batch: once.
            #expect(answers["3:n-0"] == false)
            #expect(answers["4:n-3"] == true)
            #expect([answers["0:n-1"], answers["2:n-1"]].compactMap { $0 }.filter { $0 }.count == 1)
            #expect([answers["1:n-2"], answers["5:n-2"]].compactMap { $0 }.filter { $0 }.count == 1)
            #expect(answers.count == 7)
        }
        let batches = recorder.batches.withLock { $0 }
        #expect(batches.count == 2)
        #expect(batches.first == ["n-0"])
        // The second batch names each nonce once.
        #expect(batches.last.map { Set($0) } == ["n-0", "n-1", "n-2", "n-3"])
        #expect(batches.last?.count == 4)
    }

    @Test func aFailedCommitFailsEveryClaimOfItsBatchAndTheNextBatchStillCommits() async throws {
        struct Broken: Error {}
        let calls = Mutex(0)
        let claims = NonceClaims { batch in
            let n = calls.withLock { n -> Int in n += 1; return n }
            if n == 1 { throw Broken() }
            return batch.map { _ in true }
        }
        await #expect(throws: Broken.self) { try await claims.claim(Self.claim("n-0")) }
        #expect(try await claims.claim(Self.claim("n-1")))
        #expect(claims.waiting == 0)
    }

    @Test func theSameNonceOfTwoGatewaysIsTwoClaims() async throws {
        let claims = NonceClaims { batch in batch.map { _ in true } }
        #expect(try await claims.commitBatch([Self.claim("n-0", gateway: "gw-1"), Self.claim("n-0", gateway: "gw-2")]) == [true, true])
    }
}
