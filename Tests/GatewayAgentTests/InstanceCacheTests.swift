import Foundation
import GatewayProtocol
import Logging
import LXD
import Synchronization
import Testing
@testable import GatewayAgent

@Suite struct InstanceCacheTests {
    static func instance(_ name: String, vendor: String = "acme") throws -> InstancesPost {
        InstancesPost(name: name, source: .image(alias: "iotgw-busybox"), profiles: ["default"],
                      config: [ContainerPlanner.vendorKey: vendor, "limits.memory": "128MiB"], devices: [:], description: "")
    }

    /// A cache following `events`, with what it reported changed; `body` runs while it follows.
    static func following(_ cache: InstanceCache, _ body: (Changes) async throws -> Void) async throws {
        let changes = Changes()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await cache.follow { changes.add($0) } }
            defer { group.cancelAll() }
            try await until("LXD's events followed and everyone told to look") { cache.isLive && changes.all.contains(nil) }
            try await body(changes)
        }
    }

    final class Changes: Sendable {
        let seen = Mutex<[String?]>([])
        func add(_ name: String?) { seen.withLock { $0.append(name) } }
        var all: [String?] { seen.withLock { $0 } }
    }

    @Test func readsAreServedFromTheCopyUntilLXDReportsAChangeOrTheGatewayWrites() async throws {
        let host = FakeHost(), events = FakeEvents()
        try await host.createInstance(try Self.instance("iotgw-acme"), timeout: nil)
        let cache = InstanceCache(host: host, events: events, logger: Logger(label: "test"), settle: .zero)

        // Not following LXD's events yet: every read goes to LXD.
        _ = try await cache.instance("iotgw-acme")
        _ = try await cache.instance("iotgw-acme")
        #expect(host.reads == 2)

        try await Self.following(cache) { changes in
            #expect(changes.all == [nil], "subscribing says anything may have changed unseen")
            // Every instance was listed on subscribing: no read of its own.
            _ = try await cache.instance("iotgw-acme")
            _ = try await cache.instance("iotgw-acme")
            #expect(host.reads == 2)

            // Changed by hand: the copy stays until LXD's event says so, then the change is read.
            host.byHand("iotgw-acme") { $0?.config["limits.memory"] = "1GiB" }
            events.send("iotgw-acme", "instance-updated")
            try await until("the change reported") { changes.all.contains("iotgw-acme") }
            #expect(try await cache.instance("iotgw-acme").instance.config["limits.memory"] == "1GiB")
            _ = try await cache.instance("iotgw-acme")
            #expect(host.reads == 3)

            // Exec and file events (delivery) change nothing the copy holds.
            events.send("iotgw-acme", "instance-exec")
            events.send("iotgw-acme", "instance-file-pushed")
            events.send("iotgw-other", "instance-updated")
            try await until("the other's change reported") { changes.all.contains("iotgw-other") }
            _ = try await cache.instance("iotgw-acme")
            #expect(host.reads == 3)
            #expect(changes.all.filter { $0 == "iotgw-acme" }.count == 1, "exec and file events wake no one")

            // The gateway's own write drops the copy at once, before LXD's event comes.
            try await cache.setState("iotgw-acme", .start, timeout: 30, force: false)
            #expect(try await cache.instance("iotgw-acme").instance.isRunning)
            #expect(host.reads == 4)

            // An instance the listing did not have is known absent, until something about it happens.
            await #expect(throws: LXDError.self) { _ = try await cache.instance("iotgw-globex") }
            #expect(host.reads == 4)
            try await cache.createInstance(try Self.instance("iotgw-globex", vendor: "globex"), timeout: nil)
            #expect(try await cache.instance("iotgw-globex").instance.name == "iotgw-globex")
            #expect(host.reads == 5)

            // An image check that passed holds until LXD reports an image event.
            let fingerprint = String(repeating: "a", count: 64)
            try await cache.verifyImage(alias: "iotgw-busybox", fingerprint: fingerprint)
            try await cache.verifyImage(alias: "iotgw-busybox", fingerprint: fingerprint)
            #expect(host.state.withLock { $0.imageChecks } == 1)
            await #expect(throws: LXDError.self) { try await cache.verifyImage(alias: "iotgw-busybox", fingerprint: "b") }
            await #expect(throws: LXDError.self) { try await cache.verifyImage(alias: "iotgw-busybox", fingerprint: "b") }
            #expect(host.state.withLock { $0.imageChecks } == 3, "a failed check is never kept")
            host.state.withLock { $0.image.fingerprint = "c" }
            events.send(.images)
            try await until("the image event seen") {
                (try? await cache.verifyImage(alias: "iotgw-busybox", fingerprint: fingerprint)) == nil
            }
        }
    }

    @Test func aGapInTheEventsDropsEveryCopyAndReadsGoThroughUntilFollowedAgain() async throws {
        let host = FakeHost(), events = FakeEvents()
        try await host.createInstance(try Self.instance("iotgw-acme"), timeout: nil)
        let cache = InstanceCache(host: host, events: events, logger: Logger(label: "test"), settle: .zero)
        try await Self.following(cache) { changes in
            _ = try await cache.instance("iotgw-acme")
            #expect(host.reads == 0)
            // LXD goes away (kill -9): whatever happens meanwhile is not reported.
            events.fail()
            host.byHand("iotgw-acme") { $0 = nil }
            try await until("copies no longer served") { !cache.isLive }
            await #expect(throws: LXDError.self) { _ = try await cache.instance("iotgw-acme") }
            #expect(host.reads == 1)
            // Back: a new subscription lists everything again, and every vendor is told to look again.
            try await until("followed again") { cache.isLive && events.subscriptions == 2 }
            try await until("everyone told to look again") { changes.all.filter { $0 == nil }.count == 2 }
            await #expect(throws: LXDError.self) { _ = try await cache.instance("iotgw-acme") }
            #expect(host.reads == 1)
        }
    }

    @Test func aReadUnderWayWhenLXDReportsAChangeIsReturnedButNotKept() async throws {
        let host = FakeHost(), events = FakeEvents()
        try await host.createInstance(try Self.instance("iotgw-acme"), timeout: nil)
        let cache = InstanceCache(host: host, events: events, logger: Logger(label: "test"), settle: .zero)
        try await Self.following(cache) { changes in
            // Something happened to it: the next read goes to LXD, which is slow to answer.
            events.send("iotgw-acme", "instance-started")
            try await until("the start reported") { changes.all.count == 2 }
            let gate = Gate()
            host.state.withLock { $0.readGate = gate }
            async let slow = cache.instance("iotgw-acme")
            try await until("the read is under way") { host.reads == 1 }
            // LXD changes the instance after it answered the read, and says so before the read returns.
            host.byHand("iotgw-acme") { $0?.config["limits.memory"] = "1GiB" }
            events.send("iotgw-acme", "instance-updated")
            try await until("the change reported") { changes.all.count == 3 }
            host.state.withLock { $0.readGate = nil }
            gate.open()
            #expect(try await slow.instance.config["limits.memory"] == "128MiB")
            #expect(try await cache.instance("iotgw-acme").instance.config["limits.memory"] == "1GiB", "the stale read was not kept")
            #expect(host.reads == 2)
        }
    }

    @Test func eventSourcesNameTheirInstance() {
        #expect(InstanceEvent.instanceName(source: "/1.0/instances/iotgw-acme") == "iotgw-acme")
        #expect(InstanceEvent.instanceName(source: "/1.0/instances/iotgw-acme/snapshots/s1") == "iotgw-acme")
        #expect(InstanceEvent.instanceName(source: "/1.0/instances/iotgw-acme?project=p") == "iotgw-acme")
        #expect(InstanceEvent.instanceName(source: "/1.0/profiles/default") == nil)
        #expect(InstanceEvent.instanceName(source: "/1.0/instances/") == nil)
        #expect(InstanceEvent(name: "c", action: "instance-updated").changesInstance)
        #expect(InstanceEvent(name: "c", action: "instance-restored").changesInstance)
        #expect(!InstanceEvent(name: "c", action: "instance-exec").changesInstance)
    }

    @Test func aNoOpPassReadsNothingFromLXDAndDriftByHandIsRepairedAsSoonAsLXDReportsIt() async throws {
        let rig = try Rig(cached: true)
        let events = try #require(rig.events)
        let container = "iotgw-acme", device = ContainerPlanner.deviceName(serial: "ACME-1")
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.approvePending()
            try await rig.provisioned("acme", "ACME-1")
            let worker = try #require(rig.agent.worker("acme"))
            try await until("a pass reads nothing from LXD") {
                let reads = rig.host.reads, writes = rig.host.writes
                try await worker.reconcilePass()
                return rig.host.reads == reads && rig.host.writes == writes
            }

            // A device removed by hand comes back, with nothing else waking the vendor's reconcile.
            rig.host.byHand(container) { $0?.devices[device] = nil }
            events.send(container, "instance-updated")
            try await rig.provisioned("acme", "ACME-1")

            // Config changed by hand is put back.
            rig.host.byHand(container) { $0?.config["limits.memory"] = "4GiB" }
            events.send(container, "instance-updated")
            try await until("the memory cap put back") { rig.host.instanceNow(container)?.config["limits.memory"] == "128MiB" }

            // Stopped by hand: started again.
            rig.host.byHand(container) { $0?.statusCode = 102 }
            events.send(container, "instance-stopped")
            try await until("started again") { rig.host.instanceNow(container)?.isRunning == true }

            // Deleted by hand: created again, device inside.
            rig.host.byHand(container) { $0 = nil }
            events.send(container, "instance-deleted")
            try await rig.provisioned("acme", "ACME-1")

            // Changed while the events stream was broken: seen once it is followed again.
            events.fail()
            rig.host.byHand(container) { $0?.devices[device] = nil }
            try await rig.provisioned("acme", "ACME-1")
        }
    }
}
