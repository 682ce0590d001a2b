import Foundation
import LXD
import Testing
@testable import GatewayAgent

@Suite("LXD availability: outages are waited out with backoff, and noticed when LXD is back")
struct LXDAvailabilityTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func outageErrorsAreTheOnesWithoutAnLXDVerdict() {
        #expect(LXDError(code: .unreachable, message: "connection refused").isOutage)
        #expect(LXDError(code: .operationLost, status: 404, message: "not found").isOutage)
        #expect(LXDError(code: .serverError, status: 503, message: "not ready").isOutage)
        #expect(!LXDError(code: .serverError, status: 500, message: "boom").isOutage)
        #expect(!LXDError(code: .operationFailed, status: 400, message: "exec failed").isOutage)
        #expect(!LXDError(code: .notFound, status: 404, message: "no such instance").isOutage)
    }

    @Test func probesBackOffWhileDownAndNeverBusyLoop() {
        let a = LXDAvailability(backoff: Backoff(first: 1, max: 8))
        #expect(a.probeDue(at: t0), "up: probed every tick")
        #expect(a.probeSucceeded(pid: 10, at: t0) == .steady)
        #expect(a.markDown("connection refused", at: t0))
        #expect(!a.markDown("again", at: t0), "only the first marks it down")
        #expect(a.downSince == t0 && a.reason == "connection refused")
        #expect(!a.probeDue(at: t0.addingTimeInterval(0.5)))
        #expect(a.probeDue(at: t0.addingTimeInterval(1)))
        // Failed probes double the wait up to the cap.
        var at = t0.addingTimeInterval(1)
        var waits: [TimeInterval] = []
        for _ in 0..<5 {
            a.probeFailed("refused", at: at)
            var next = at
            while !a.probeDue(at: next) { next = next.addingTimeInterval(0.5) }
            waits.append(next.timeIntervalSince(at))
            at = next
        }
        #expect(waits == [1, 2, 4, 8, 8])
        #expect(a.downSince == t0, "down since the first failure")
        #expect(a.describe { _ in "T" } == "down since T (connection refused)")
        #expect(a.probeSucceeded(pid: 11, at: t0.addingTimeInterval(30)) == .back(downFor: 30))
        #expect(!a.isDown && a.describe() == nil)
    }

    @Test func whileLXDsEventsAreFollowedItIsProbedOnlyWhenAsked() {
        let a = LXDAvailability(backoff: Backoff(first: 1, max: 8))
        #expect(a.probeDue(at: t0, eventsLive: true), "never answered yet")
        #expect(a.probeSucceeded(pid: 10, at: t0) == .steady)
        #expect(a.probeDue(at: t0.addingTimeInterval(2)), "no events followed: every tick")
        #expect(!a.probeDue(at: t0.addingTimeInterval(2), eventsLive: true))
        #expect(!a.probeDue(at: t0.addingTimeInterval(3600), eventsLive: true), "no probe in case: the stream ends when LXD does")
        // The stream was followed again (it ended: LXD may have restarted): the next tick asks.
        a.requestProbe()
        #expect(a.probeDue(at: t0.addingTimeInterval(2), eventsLive: true))
        #expect(a.probeSucceeded(pid: 11, at: t0.addingTimeInterval(2)) == .back(downFor: nil))
        #expect(!a.probeDue(at: t0.addingTimeInterval(3), eventsLive: true), "answered: quiet again")
        // Down: the backoff decides, stream or not.
        #expect(a.markDown("connection refused", at: t0.addingTimeInterval(3)))
        #expect(!a.probeDue(at: t0.addingTimeInterval(3.5), eventsLive: true))
        #expect(a.probeDue(at: t0.addingTimeInterval(4), eventsLive: true))
    }

    @Test func aNewPidIsARestartEvenIfNoOutageWasSeen() {
        let a = LXDAvailability(backoff: Backoff(first: 1, max: 8))
        #expect(a.probeSucceeded(pid: 10, at: t0) == .steady)
        #expect(a.probeSucceeded(pid: 10, at: t0) == .steady)
        #expect(a.probeSucceeded(pid: 12, at: t0) == .back(downFor: nil))
    }
}
