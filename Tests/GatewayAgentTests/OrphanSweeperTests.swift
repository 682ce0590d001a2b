import Foundation
import Logging
import LXD
import Synchronization
import Testing
@testable import GatewayAgent

@Suite("Orphaned containers: stopped, deleted after the grace period, only ever by label")
struct OrphanSweeperTests {
    final class Clock: Sendable {
        let value = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
        var now: Date { value.withLock { $0 } }
        func advance(_ s: TimeInterval) { value.withLock { $0 = $0.addingTimeInterval(s) } }
    }

    /// LXD with: a running managed container of `gone` (not configured), one of `acme` (configured), a
    /// running container named like ours without the managed label, and a stopped managed one without a
    /// vendor label; and a managed one of another gateway, and one from before gateway labels.
    func setUp() async throws -> (FakeHost, OrphanSweeper, Clock) {
        let host = FakeHost()
        let clock = Clock()
        var config = Sample.config()
        config.orphans = .init(graceSeconds: 3600, checkSeconds: 60)
        for (name, labels, running) in [
            ("iotgw-gone", ["user.iotgw.managed": "true", "user.iotgw.gateway": "gw-me", "user.iotgw.vendor": "gone"], true),
            ("iotgw-acme", ["user.iotgw.managed": "true", "user.iotgw.gateway": "gw-me", "user.iotgw.vendor": "acme"], true),
            ("iotgw-lookalike", ["user.iotgw.gateway": "gw-me", "user.iotgw.vendor": "gone"], true),
            ("iotgw-nolabel", ["user.iotgw.managed": "true", "user.iotgw.gateway": "gw-me"], false),
            // Another gateway's (another gateway daemon on the same LXD): never ours to retire.
            ("iotgw-other", ["user.iotgw.managed": "true", "user.iotgw.gateway": "gw-other", "user.iotgw.vendor": "gone"], true),
            ("iotgw-old", ["user.iotgw.managed": "true", "user.iotgw.vendor": "gone"], true),
        ] {
            try await host.createInstance(InstancesPost(name: name, source: .image(alias: "iotgw-busybox"), config: labels), timeout: nil)
            if running { try await host.setState(name, .start, timeout: 30, force: false) }
        }
        var logger = Logger(label: "orphans")
        logger.logLevel = .critical
        return (host, OrphanSweeper(host: host, gatewayID: "gw-me", config: config, logger: logger, now: { clock.now }), clock)
    }

    @Test func orphansAreStoppedThenDeletedAfterTheGracePeriod() async throws {
        let (host, sweeper, clock) = try await setUp()
        #expect(try await sweeper.orphans().map(\.container) == ["iotgw-gone", "iotgw-nolabel"])

        let left = try await sweeper.sweep()
        #expect(left.map(\.container) == ["iotgw-gone", "iotgw-nolabel"])
        #expect(left.allSatisfy { $0.status == "Stopped" && $0.deleteAfter == clock.now.addingTimeInterval(3600) })
        #expect(host.instanceNow("iotgw-gone")?.isRunning == false)
        #expect(host.instanceNow("iotgw-gone")?.config[OrphanSweeper.orphanedAtKey] != nil)
        // Untouched: the configured vendor's container and the one without the managed label.
        #expect(host.instanceNow("iotgw-acme")?.isRunning == true)
        #expect(host.instanceNow("iotgw-lookalike")?.isRunning == true)
        #expect(host.instanceNow("iotgw-lookalike")?.config[OrphanSweeper.orphanedAtKey] == nil)

        // Started again by hand within the grace period: stopped again, the deadline kept.
        try await host.setState("iotgw-gone", .start, timeout: 30, force: false)
        clock.advance(1800)
        #expect(try await sweeper.sweep().first?.deleteAfter == clock.now.addingTimeInterval(1800))
        #expect(host.instanceNow("iotgw-gone")?.isRunning == false)

        clock.advance(1800)
        #expect(try await sweeper.sweep().isEmpty)
        #expect(host.instanceNow("iotgw-gone") == nil)
        #expect(host.instanceNow("iotgw-nolabel") == nil)
        #expect(host.instanceNow("iotgw-acme") != nil && host.instanceNow("iotgw-lookalike") != nil)
        #expect(host.instanceNow("iotgw-other")?.isRunning == true && host.instanceNow("iotgw-old")?.isRunning == true)
    }

    @Test func theOwnerRemovesAnOrphanNowButNeverAConfiguredVendor() async throws {
        let (host, sweeper, _) = try await setUp()
        #expect(try await sweeper.remove(vendor: "gone") == ["iotgw-gone"])
        #expect(host.instanceNow("iotgw-gone") == nil)
        #expect(host.instanceNow("iotgw-lookalike")?.isRunning == true, "a container without the managed label is never removed")
        await #expect(throws: GatewayError.self) { _ = try await sweeper.remove(vendor: "acme") }
        #expect(host.instanceNow("iotgw-acme")?.isRunning == true)
        #expect(try await sweeper.remove(vendor: "nobody").isEmpty)
    }

    @Test func aFailingContainerDoesNotStopTheOthers() async throws {
        let (host, sweeper, _) = try await setUp()
        host.failCalls(for: "iotgw-gone")
        let left = try await sweeper.sweep()
        #expect(left.map(\.container) == ["iotgw-gone", "iotgw-nolabel"])
        #expect(host.instanceNow("iotgw-nolabel")?.config[OrphanSweeper.orphanedAtKey] != nil)
    }
}
