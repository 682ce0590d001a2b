import Crypto
import Foundation
import GatewayProtocol
import Logging
import LXD
import Testing
@testable import GatewayAgent

/// The per-vendor state machines against fakes: no LXD, no network, no root.
@Suite struct VendorWorkerTests {
    @Test func plugAskApproveCreatesTheContainerWithTheDeviceFromTheGatewaysOwnNode() async throws {
        let rig = try Rig()
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1")
            try await until("an approval") { try await rig.pending().count == 1 }
            #expect(rig.host.instanceNow("iotgw-acme") == nil, "nothing is created before approval")
            try await rig.approvePending()
            try await rig.provisioned("acme", "ACME-1")
            let i = try #require(rig.host.instanceNow("iotgw-acme"))
            #expect(i.isRunning)
            #expect(i.devices["iotgw-ACME-1"]?["source"] == rig.nodePath("acme", "ACME-1"))
            #expect(rig.files.number(at: rig.nodePath("acme", "ACME-1")) == DeviceNumber(major: 188, minor: 0))
            try await until("an applied report") { rig.vendors.reported("acme").contains { $0.outcome == .applied } }
        }
    }

    /// An idle gateway's tick wakes no lane (their passes' code stays out of an idle daemon's memory), yet
    /// every retry still comes: a failed delivery's, and the plan sync when due.
    @Test func anIdleTickWakesNoLaneButEveryRetryComes() async throws {
        let clock = OrphanSweeperTests.Clock()
        clock.value.withLock { $0 = Date() }  // the plans the fake vendors sign are valid for a day from now
        let rig = try Rig(policy: .auto, apps: true, now: { clock.now }, tickInterval: .milliseconds(20))
        // The first delivery fails (deferred for want of disk space): only the tick brings its retry.
        rig.delivery.failNext.withLock { $0["acme"] = GatewayError(.diskSpace, "full, for now") }
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1")
            try await rig.provisioned("acme", "ACME-1")
            try await until("the failed delivery retried and done") {
                clock.advance(1)
                return try await rig.store.vendorState("acme")?.deliveredVersion == 1
            }
            #expect(rig.delivery.phases.withLock { $0.filter { $0 == "acme converging v1" }.count } == 2)
            let worker = try #require(rig.agent.worker("acme"))
            try await Task.sleep(for: .milliseconds(200))
            let settled = worker.passes.withLock { $0 }
            try await Task.sleep(for: .milliseconds(400))  // 20 ticks
            #expect(worker.passes.withLock { $0 } == settled, "idle: no lane ran")

            // The plan sync comes due: the exchange lane asks the vendor.
            let asked = rig.vendors.calls.withLock { $0.filter { $0 == "plan acme" }.count }
            #expect(asked == 0, "the answer to the announcement was the vendor's plan: it counts as the sync")
            clock.advance(rig.config.planSyncSeconds + 1)
            try await until("the plan synced") { rig.vendors.calls.withLock { $0.filter { $0 == "plan acme" }.count } > asked }
        }
    }

    @Test func aRedeliveryTheVendorAskedForIsRetriedAfterItFailsAndARestart() async throws {
        let clock = OrphanSweeperTests.Clock()
        clock.value.withLock { $0 = Date() }
        let rig = try Rig(policy: .auto, apps: true, now: { clock.now }, tickInterval: .milliseconds(20))
        let converges = { rig.delivery.phases.withLock { $0.filter { $0 == "acme converging v1" }.count } }
        let delivered = { rig.delivery.phases.withLock { $0.filter { $0 == "acme delivered v1" }.count } }
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1")
            try await rig.provisioned("acme", "ACME-1")
            try await until("v1 delivered") { try await rig.store.vendorState("acme")?.deliveredVersion == 1 }
            #expect(converges() == 1)
            // The vendor's command is answered "scheduled"; the delivery it brings fails.
            rig.delivery.failing.withLock { $0["acme"] = GatewayError(.diskSpace, "full, for now") }
            #expect(try await #require(rig.agent.worker("acme")).redeliver())
            try await until("the redelivery tried and its failure recorded") {
                guard converges() == 2 else { return false }
                return try await rig.store.vendorState("acme")?.deliveryAttempts == 1
            }
        }
        // The daemon restarts before the retry: the request is on disk, not in the old process.
        #expect(try await rig.store.vendorState("acme")?.redeliveryRequests == 1)
        rig.delivery.failing.withLock { $0["acme"] = nil }
        rig.restart()
        try await rig.running {
            // As the daemon starts: udev's devices enumerated, every vendor swept.
            try await rig.plug("acme", serial: "ACME-1")
            try await rig.agent.handle(.sweep(present: Set(try await rig.store.devices().filter(\.present).map(\.syspath))))
            try await until("the failed redelivery retried, done and recorded as the answer to the request") {
                clock.advance(1)
                guard delivered() == 2 else { return false }
                return try await rig.store.vendorState("acme")?.redeliveryRequests == 0
            }
            #expect(try await rig.store.vendorState("acme")?.deliveryAttempts == 0)
            try await Task.sleep(for: .milliseconds(200))
            #expect(delivered() == 2, "once")
        }
    }

    @Test func aContainerBusyWithAnotherOperationIsWaitedOutNotFailed() async throws {
        // As after a kill during a create: the restarted daemon finds the container, and LXD refuses its start
        // while the killed one's create still runs.
        let rig = try Rig(policy: .auto)
        rig.host.state.withLock { $0.busyStarts["iotgw-acme"] = 3 }
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1")
            try await rig.provisioned("acme", "ACME-1")
            #expect(rig.host.instanceNow("iotgw-acme")?.isRunning == true)
            #expect(rig.host.state.withLock { $0.busyStarts["iotgw-acme"] } == 0, "refused three times, then started")
            #expect(try await rig.store.vendorState("acme")?.reconcileAttempts == 0, "no failure recorded")
            #expect(!rig.vendors.reported("acme").contains { $0.outcome == .failed })
        }
    }

    @Test func aNewContainerGivenHostIdsAnotherContainerHoldsIsDeletedBeforeItRunsAndMadeAgain() async throws {
        // The owner's own isolated container, made with lxc at the same moment, got the map LXD then gave acme too.
        let rig = try Rig(policy: .auto)
        var owners = try FakeHost.makeInstance(InstancesPost(name: "owners-box", source: .image(alias: "iotgw-busybox"),
                                                             config: ["security.idmap.isolated": "true"]))
        owners.config["volatile.idmap.next"] = FakeHost.idmap(base: 1_065_536)
        owners.expandedConfig = owners.config
        rig.host.byHand("owners-box") { $0 = owners }
        rig.host.state.withLock { $0.idmapBases = [1_065_536, 1_131_072] }
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1")
            try await rig.provisioned("acme", "ACME-1")
            let acme = try #require(rig.host.instanceNow("iotgw-acme"))
            #expect(acme.config["volatile.idmap.next"] == FakeHost.idmap(base: 1_131_072), "made again with a map of its own")
            #expect(acme.isRunning)
            #expect(!acme.sharesHostIDs(with: owners))
            try await until("the failure reported") {
                rig.vendors.reported("acme").contains { $0.outcome == .failed && ($0.error ?? "").contains("owners-box") }
            }
        }
        // A create a crash left unstarted: its first start checks, and the container goes, never started.
        let executor = ContainerExecutor(host: rig.host, registry: rig.registry, store: rig.store, logger: Logger(label: "test"))
        rig.host.state.withLock { $0.idmapBases = [1_065_536] }
        try await rig.host.createInstance(InstancesPost(name: "iotgw-late", source: .image(alias: "iotgw-busybox"),
                                                        config: ["security.idmap.isolated": "true"]), timeout: nil)
        await #expect(throws: GatewayError.self) { try await executor.run([.start], vendor: "late", container: "iotgw-late") }
        #expect(rig.host.instanceNow("iotgw-late") == nil, "deleted, never started")
        // Not isolated: LXD maps it onto the host's whole range, of which it uses the first 65,536 ids.
        var plain = owners
        plain.config = ["volatile.idmap.next": "[{\"Isuid\":true,\"Isgid\":true,\"Hostid\":1000000,\"Nsid\":0,\"Maprange\":1000000000}]"]
        plain.expandedConfig = plain.config
        #expect(plain.hostIDRanges.map(\.ids) == [1_000_000..<1_065_536, 1_000_000..<1_065_536])
        #expect(!plain.sharesHostIDs(with: owners))
    }

    @Test func anUnplugRemovesTheNodeAtOnceAndAReusedKernelNameNeverReachesTheOldContainer() async throws {
        let rig = try Rig(policy: .auto)
        try await rig.running {
            let a = try await rig.plug("acme", serial: "ACME-1", tty: "ttyUSB0", minor: 0)
            try await until("acme's device inside") { rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] != nil }
            // Unplug, and at once globex's device gets the same kernel name and number.
            try await rig.agent.handle(.removed(syspath: a.tty))
            #expect(rig.files.number(at: rig.nodePath("acme", "ACME-1")) == nil, "the node went with the unplug, before any worker ran")
            try await rig.agent.handle(.removed(syspath: a.usb))
            try await rig.plug("globex", serial: "GLX-1", tty: "ttyUSB0", minor: 0)
            try await until("globex's device inside its own container") {
                rig.host.instanceNow("iotgw-globex")?.devices["iotgw-GLX-1"] != nil
            }
            try await until("acme's device detached") { rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] == nil }
            #expect(rig.files.paths == [rig.nodePath("globex", "GLX-1")])
            #expect(rig.host.instanceNow("iotgw-acme")?.devices.values.contains { $0["source"] == rig.nodePath("globex", "GLX-1") } == false)
        }
    }

    @Test func afterLXDRestartsOrComesBackEveryDeviceIsPassedInAfresh() async throws {
        let rig = try Rig(policy: .auto)
        rig.host.state.withLock { $0.pid = 100 }
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.provisioned("acme", "ACME-1")
            await rig.agent.watchLXD()
            try await Task.sleep(for: .milliseconds(100))
            #expect(!rig.host.deviceLog.contains("remove iotgw-ACME-1"), "the same LXD: nothing to refresh")
            // LXD restarted.
            rig.host.state.withLock { $0.pid = 200 }
            await rig.agent.watchLXD()
            try await until("re-added after a restart") { rig.host.deviceLog.suffix(2) == ["remove iotgw-ACME-1", "add iotgw-ACME-1"] }
            // LXD down, then back (even with the same pid).
            let before = rig.host.deviceLog.count
            rig.host.state.withLock { $0.pid = nil }
            await rig.agent.watchLXD()
            rig.host.state.withLock { $0.pid = 200 }
            // Probed again when the backoff says so (the agent's tick calls this), not in a busy loop.
            try await until("re-added after LXD came back") {
                await rig.agent.watchLXD()
                return rig.host.deviceLog.count >= before + 2
            }
            #expect(rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] != nil)
        }
    }

    @Test func whileLXDIsDownNothingIsRecordedAsFailedAndTheWorkFinishesWhenItIsBack() async throws {
        let rig = try Rig(policy: .auto)
        try await rig.running {
            rig.host.setDown(true)
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await until("LXD seen down") { rig.agent.environment.lxdAvailability.isDown }
            // Ticks go by: no retry loop against a dead LXD, nothing recorded as failed, nothing reported.
            let writes = rig.host.writes
            try await Task.sleep(for: .milliseconds(400))
            let s = try await rig.store.vendorState("acme")
            #expect(s?.lastError == nil && s?.reconcileAttempts == 0 && s?.appliedVersion == nil)
            #expect(rig.vendors.reported("acme").filter { $0.outcome == .failed }.isEmpty)
            #expect(rig.host.writes == writes)
            // LXD back (a new pid): the agent's probe wakes the worker, which finishes the work.
            rig.host.setDown(false)
            try await until("LXD seen back") {
                await rig.agent.watchLXD()
                return !rig.agent.environment.lxdAvailability.isDown
            }
            try await rig.provisioned("acme", "ACME-1")
            #expect(try await rig.store.vendorState("acme")?.lastError == nil)
        }
    }

    /// Found by scripts/soak: the owner denied a plan, then approved a later one listing the same device, and
    /// the device stayed out ("denied") although the approved plan grants it.
    @Test func aDeviceDeniedOnceIsAttachedWhenTheOwnerApprovesAPlanListingIt() async throws {
        let rig = try Rig()
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await until("an approval") { try await rig.pending().count == 1 }
            let first = try #require(try await rig.pending().first)
            try await rig.store.decide(planID: first.id!, approve: false, by: "owner")
            try await rig.agent.decided(planID: first.id!)
            try await until("denied") { try await rig.store.devices().filter { $0.serial == "ACME-1" }.allSatisfy { $0.state == .denied } }
            // Another device is plugged: the vendor's next plan lists both; this time the owner says yes.
            rig.vendors.update("acme") { v in v.plan = { _ in Rig.plan(vendor: "acme", version: 2, serials: ["ACME-1", "ACME-2"]) } }
            try await rig.plug("acme", serial: "ACME-2", tty: "ttyUSB1", minor: 1)
            try await rig.approvePending()
            try await rig.provisioned("acme", "ACME-2")
            try await rig.provisioned("acme", "ACME-1")
            try await until("shown attached") {
                try await rig.store.devices().filter { $0.serial == "ACME-1" && $0.present }.allSatisfy { $0.state == .attached }
            }
        }
    }

    @Test func oneVendorsHeldDeliveryDelaysNeitherAnotherVendorNorItsOwnUnplug() async throws {
        let rig = try Rig(policy: .auto, apps: true)
        let held = rig.delivery.hold("acme")
        try await rig.running {
            let a = try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await until("acme converging") { rig.delivery.phases.withLock { $0.contains("acme converging v1") } }
            // While acme's converge is held: globex's device arrives in globex's container...
            try await rig.plug("globex", serial: "GLX-1", minor: 1)
            try await until("globex provisioned and delivered") {
                rig.host.instanceNow("iotgw-globex")?.devices["iotgw-GLX-1"] != nil
                    && rig.delivery.phases.withLock { $0.contains("globex delivered v1") }
            }
            // ...and acme's own unplug leaves acme's container.
            try await rig.unplug(a)
            try await until("acme's device detached during its converge") { rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] == nil }
            #expect(try await rig.store.deliveryTransaction("acme")?.phase == .converging)
            held.open()
            try await until("acme delivered") { try await rig.store.vendorState("acme")?.deliveredVersion == 1 }
            #expect(try await rig.store.deliveryTransaction("acme") == nil)
        }
    }

    @Test func aPluggedDeviceIsAnnouncedAtOnceWhateverTheClocksSubMillisecondFraction() async throws {
        // Stored times round to the millisecond: 0.9 ms past comes back as 1 ms, later than the clock still reads.
        let frozen = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 * 1000).rounded(.down) / 1000 + 0.0009)
        // No tick to rescue a device left waiting: only the plug's own wake-up may announce it.
        let rig = try Rig(policy: .auto, now: { frozen }, tickInterval: .seconds(3600))
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.provisioned("acme", "ACME-1", timeout: .seconds(10))
        }
    }

    @Test func containersOfDifferentVendorsPickTheirIdMapsOneAtATime() async throws {
        // LXD 5.0 gave two isolated containers created at once id maps outside the host's range.
        let rig = try Rig(policy: .auto)
        try await rig.running {
            // Both workers reconcile at once (each in its own lanes).
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.plug("globex", serial: "GLX-1", minor: 1)
            try await rig.provisioned("acme", "ACME-1")
            try await rig.provisioned("globex", "GLX-1")
            #expect(rig.host.state.withLock { $0.maxAllocating } == 1)
        }
    }

    @Test func aVendorWhoseCreationIsSlowHoldsUpNoOtherVendorsCreation() async throws {
        // acme's image takes long to copy and shift into its id map (a large image, or LXD stuck on it).
        let rig = try Rig(policy: .auto)
        let slow = Gate()
        rig.host.state.withLock { $0.createGates["iotgw-acme"] = slow }
        try await rig.running {
            do {
                try await rig.plug("acme", serial: "ACME-1", minor: 0)
                try await until("acme's creation past its id map") {
                    rig.host.state.withLock { $0.creating == 1 && $0.allocating == 0 }
                }
                try await rig.plug("globex", serial: "GLX-1", minor: 1)
                try await rig.provisioned("globex", "GLX-1", timeout: .seconds(10))
                #expect(rig.host.instanceNow("iotgw-acme") == nil)
            } catch {
                slow.open()  // else the rig's shutdown would wait on acme's creation for ever
                throw error
            }
            slow.open()
            try await rig.provisioned("acme", "ACME-1")
            let (creating, allocating) = rig.host.state.withLock { ($0.maxCreating, $0.maxAllocating) }
            #expect(creating == 2 && allocating == 1)
        }
    }

    @Test func aVendorWhoseReconcileFailsDoesNotStopTheOthersAndIsRetriedWithBackoff() async throws {
        let rig = try Rig(policy: .auto)
        rig.host.failCalls(for: "iotgw-acme")
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.plug("globex", serial: "GLX-1", minor: 1)
            try await until("globex provisioned") { rig.host.instanceNow("iotgw-globex")?.devices["iotgw-GLX-1"] != nil }
            try await until("acme's failure recorded") { try await rig.store.vendorState("acme")?.lastError?.contains("fake LXD fails") == true }
            let s = try #require(try await rig.store.vendorState("acme"))
            #expect(s.reconcileAttempts >= 1)
            #expect(s.nextReconcileAt != nil)
            // One failure report, not one per retry.
            try await Task.sleep(for: .milliseconds(300))
            #expect(rig.vendors.reported("acme").filter { $0.outcome == .failed }.count == 1)
            rig.host.failCalls(for: "iotgw-acme", false)
            try await rig.provisioned("acme", "ACME-1")
            try await until("retries reset") { try await rig.store.vendorState("acme")?.reconcileAttempts == 0 }
        }
    }

    @Test func aSecondPassOverAnUnchangedVendorWritesNeitherLXDNorTheStoreAndANewApprovalStillLands() async throws {
        let rig = try Rig()
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.approvePending()
            try await rig.provisioned("acme", "ACME-1")
        }
        // The lanes are stopped: these passes are the only work.
        let worker = try #require(rig.agent.worker("acme"))
        try await worker.reconcilePass()
        let lxdWrites = rig.host.writes, storeChanges = try await rig.storeChanges()
        let before = try #require(try await rig.store.vendorState("acme"))
        try await worker.reconcilePass()
        #expect(rig.host.writes == lxdWrites, "no LXD write for a container that matches its plan")
        #expect(try await rig.storeChanges() == storeChanges, "no store write when nothing changed")
        #expect(try await rig.store.vendorState("acme")?.updatedAt == before.updatedAt)
        #expect(before.appliedVersion == 1 && before.lastError == nil && before.reconcileAttempts == 0)

        // The decoded plan is kept per approved plan id: a newer approval is applied on the next pass.
        rig.vendors.update("acme") { v in v.plan = { _ in Rig.plan(vendor: "acme", version: 2, serials: ["ACME-1"], path: "/dev/ttyACM0") } }
        await worker.requestSync()
        try await worker.exchangePass()
        let v2 = try #require(try await rig.store.plans().first { $0.version == 2 })
        if v2.decision == .pending { try await rig.store.decide(planID: v2.id!, approve: true, by: "owner") }
        try await worker.reconcilePass()
        #expect(try await rig.store.vendorState("acme")?.appliedVersion == 2)
        #expect(rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"]?["path"] == "/dev/ttyACM0")
        #expect(rig.host.instanceNow("iotgw-acme")?.config[ContainerPlanner.planVersionKey] == "2")
    }

    @Test func startUpSweepReconcilesEveryVendorEvenWhenOneThrows() async throws {
        let rig = try Rig(policy: .auto)
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.plug("globex", serial: "GLX-1", minor: 1)
            try await until("both provisioned") {
                rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] != nil
                    && rig.host.instanceNow("iotgw-globex")?.devices["iotgw-GLX-1"] != nil
            }
        }
        // Restart: LXD lost globex's device config, acme's container is unreachable; the sweep still fixes globex.
        try await rig.host.removeDevice("iotgw-globex", name: "iotgw-GLX-1")
        rig.host.failCalls(for: "iotgw-acme")
        rig.restart()
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.plug("globex", serial: "GLX-1", minor: 1)
            try await rig.agent.handle(.sweep(present: Set(try await rig.store.devices().filter(\.present).map(\.syspath))))
            try await until("globex repaired") { rig.host.instanceNow("iotgw-globex")?.devices["iotgw-GLX-1"] != nil }
        }
    }

    @Test func aPlanAskingForMoreWaitsForTheOwnerAndShowsWhatChanges() async throws {
        let rig = try Rig()
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.approvePending()
            // Applied: the device in the container, and the pass that put it there over (it records the version last).
            try await rig.provisioned("acme", "ACME-1")
            let before = try #require(rig.host.instanceNow("iotgw-acme"))
            // The vendor turns the approved serial into raw USB passthrough: a new approval, nothing applied.
            rig.vendors.update("acme") { v in
                v.plan = { _ in Rig.plan(vendor: "acme", version: 2, serials: ["ACME-1"], kind: .usb) }
            }
            await rig.agent.worker("acme")!.requestSync()
            try await until("a second approval") { try await rig.pending().first?.version == 2 }
            let view = try await ControlViews(agent: rig.agent).approval(try #require(try await rig.pending().first?.id))
            #expect(view?.changes == ["device ACME-1: USB 0403:6001 unix-char -> /dev/ttyUSB0 -> USB 0403:6001 usb"])
            #expect(view?.approvedPlanVersion == 1)
            #expect(rig.host.instanceNow("iotgw-acme")?.devices == before.devices)
            #expect(try await rig.store.vendorState("acme")?.appliedVersion == 1)
        }
    }

    @Test func appUpdatesGoThroughOnlyWhenTheOwnerLetsThem() async throws {
        for policy in [GatewayConfig.UpdatePolicy.auto, .ask] {
            let rig = try Rig(appUpdates: policy, apps: true)
            try await rig.running {
                try await rig.plug("acme", serial: "ACME-1", minor: 0)
                try await rig.approvePending()
                rig.vendors.update("acme") { v in
                    v.plan = { _ in
                        var p = Rig.plan(vendor: "acme", version: 2, serials: ["ACME-1"], apps: true)
                        p.apps[0].version = "1.1.0"
                        p.apps[0].runList = ["recipe[agent@1.1.0]"]
                        return p
                    }
                }
                await rig.agent.worker("acme")!.requestSync()
                try await until("v2 recorded") { try await rig.store.heldPlan("acme").version == 2 }
                if policy == .auto { try await until("v2 decided") { try await rig.store.plans().first { $0.version == 2 }?.decision == .approved } }
                try await Task.sleep(for: .milliseconds(100))
                let v2 = try #require(try await rig.store.plans().first { $0.version == 2 })
                #expect(v2.decision == (policy == .auto ? .approved : .pending))
                #expect(v2.decidedBy == (policy == .auto ? "covered:app-update" : nil))
            }
        }
    }

    @Test func plansGrantingDevicesTheGatewayDidNotSeeOrThatBelongToAnotherVendorAreRefused() async throws {
        let rig = try Rig(policy: .auto)
        try await rig.plug("globex", serial: "GLX-1", minor: 1)
        let cases: [(String, @Sendable (Announcement?) -> ProvisioningPlan, String)] = [
            ("globex's device", { a in
                var p = Rig.plan(vendor: "acme", serials: [a?.device.serial ?? "ACME-1"])
                p.devices.append(DeviceGrant(serial: "GLX-1", vendorID: "10c4", productID: "ea60", kind: .unixChar, path: "/dev/ttyUSB9"))
                return p
            }, "foreignDevice"),
            ("an unseen serial", { a in Rig.plan(vendor: "acme", serials: [a?.device.serial ?? "ACME-1", "NEVER-SEEN"]) }, "unknownDevice"),
            ("other USB IDs", { a in
                var p = Rig.plan(vendor: "acme", serials: [a?.device.serial ?? "ACME-1"])
                p.devices[0].productID = "6015"
                return p
            }, "unknownDevice"),
        ]
        try await rig.running {
            for (i, (what, plan, code)) in cases.enumerated() {
                rig.vendors.update("acme") { $0.plan = plan }
                let serial = "ACME-\(i)"
                try await rig.plug("acme", serial: serial, minor: UInt32(10 + i))
                try await until("\(what) refused") {
                    try await rig.store.devices().first { $0.serial == serial && $0.subsystem == "tty" }?.state == .rejected
                }
                #expect(try await rig.store.vendorState("acme")?.rejection?.contains(code) == true, "\(what)")
                #expect(try await rig.store.plans().filter { $0.vendor == "acme" }.isEmpty, "\(what): no plan recorded")
            }
            #expect(rig.host.instanceNow("iotgw-acme") == nil, "nothing was created for acme")
        }
    }

    @Test func aRepeatedVersionWithOtherContentIsRefused() async throws {
        let rig = try Rig(policy: .auto)
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.provisioned("acme", "ACME-1")
            let writes = rig.host.writes
            rig.vendors.update("acme") { v in
                v.plan = { _ in
                    var p = Rig.plan(vendor: "acme", version: 1, serials: ["ACME-1"])
                    p.container.limits.memoryMiB = 256
                    return p
                }
            }
            await rig.agent.worker("acme")!.requestSync()
            try await until("refused") { try await rig.store.vendorState("acme")?.rejection?.contains("versionReuse") == true }
            #expect(rig.host.writes == writes)
            #expect(try await rig.store.plans().count == 1)
        }
    }

    @Test func aCrashMidConvergeRestoresTheSnapshotAndRetries() async throws {
        let rig = try Rig(policy: .auto, apps: true)
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await until("delivered") { try await rig.store.vendorState("acme")?.deliveredVersion == 1 }
        }
        // As a crash leaves it: a v2 delivery recorded as converging.
        try await rig.store.saveDeliveryTransaction(DeliveryTransaction(vendor: "acme", planVersion: 2, snapshot: "iotgw-123", phase: .converging,
                                                                        startedAt: Date(), updatedAt: Date()))
        rig.restart()
        try await rig.running {
            rig.agent.worker("acme")!.kickDelivery()
            try await until("recovered") { !rig.delivery.recovered.withLock { $0.isEmpty } }
            #expect(rig.delivery.recovered.withLock { $0.map(\.snapshot) } == ["iotgw-123"])
            try await until("transaction dropped") { try await rig.store.deliveryTransaction("acme") == nil }
        }
    }

    @Test func failedDeliveriesBackOff() async throws {
        let rig = try Rig(policy: .auto, apps: true)
        // The first delivery is held until the vendor is down: once provisioned, it could otherwise have
        // been delivered before the failure was set, and there would be nothing left to fail.
        let firstBootstrap = Gate()
        rig.vendors.update("acme") { $0.failure = nil; $0.bootstrapGate = firstBootstrap }
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await until("provisioned") { rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] != nil }
            rig.vendors.update("acme") { $0.failure = VendorError(kind: .unreachable, message: "down"); $0.bootstrapGate = nil }
            firstBootstrap.open()
            try await until("three failed attempts") { (try await rig.store.vendorState("acme")?.deliveryAttempts ?? 0) >= 3 }
            let s = try #require(try await rig.store.vendorState("acme"))
            #expect(s.nextDeliveryAt != nil)
            let bootstraps = rig.vendors.calls.withLock { $0.filter { $0.hasPrefix("bootstrap acme") }.count }
            // Ticks come every 30 ms; with backoff from 50 ms doubling to 400 ms far fewer attempts are made.
            try await Task.sleep(for: .milliseconds(600))
            let later = rig.vendors.calls.withLock { $0.filter { $0.hasPrefix("bootstrap acme") }.count }
            #expect(later - bootstraps <= 3, "\(later - bootstraps) attempts in 600 ms")
        }
    }

    @Test func aBundleForAnotherPlanVersionOrGatewayIsRefused() async throws {
        let rig = try Rig(policy: .auto, apps: true)
        let key = rig.keys["acme"]!
        try await rig.running {
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await until("delivered") { try await rig.store.vendorState("acme")?.deliveredVersion == 1 }
        }
        // Directly: BundleValidator is what the lane uses.
        let validator = BundleValidator(vendor: "acme", vendorKey: key.publicKey, gatewayID: Rig.gateway.id)
        let bundle = BootstrapBundle(kind: .none, gatewayID: Rig.gateway.id, vendor: "acme", planVersion: 1, expiresAt: Date().addingTimeInterval(60))
        let raw = try WireJSON.encoder().encode(try PlanSigner(privateKey: key).sign(bundle))
        #expect(throws: ProtocolError.self) { try validator.validate(rawBody: raw, planVersion: 2, expectedNode: "n", now: Date()) }
        var other = bundle
        other.gatewayID = "gw-0000000000000000"
        let raw2 = try WireJSON.encoder().encode(try PlanSigner(privateKey: key).sign(other))
        #expect(throws: ProtocolError.self) { try validator.validate(rawBody: raw2, planVersion: 1, expectedNode: "n", now: Date()) }
    }
}

@Suite struct ApprovalPolicyTests {
    let vendor = GatewayConfig.VendorEntry(id: "acme", match: [.init(vendorID: "0403", productID: nil)], daemonURL: "https://a",
                                           publicKey: "", policy: .ask)
    func grant(_ mutate: (inout ProvisioningPlan) -> Void = { _ in }) -> ProvisioningPlan.Grant {
        var p = Rig.plan(vendor: "acme", serials: ["A", "B"], apps: true)
        mutate(&p)
        return p.grant
    }

    @Test func onlyNothingNewGoesThroughUnasked() {
        let approved = grant()
        #expect(ApprovalPolicy.decide(grant(), approved: approved, vendor: vendor) == .approve(by: "covered"))
        #expect(ApprovalPolicy.decide(grant { $0.devices.removeLast() }, approved: approved, vendor: vendor) == .approve(by: "covered:subset"))
        #expect(ApprovalPolicy.decide(grant { $0.apps[0].version = "2" }, approved: approved, vendor: vendor)
            == .approve(by: "covered:app-update"))
        var strict = vendor
        strict.appUpdates = .ask
        #expect(ApprovalPolicy.decide(grant { $0.apps[0].version = "2" }, approved: approved, vendor: strict)
            == .ask(changes: ["app agent: version 1.0.0 -> 2"]))
        #expect(ApprovalPolicy.decide(grant(), approved: nil, vendor: vendor) == .ask(changes: nil))
    }

    @Test(arguments: [
        "kind", "vendorID", "productID", "path", "memory", "image", "network", "new device", "new app", "profile",
    ])
    func everythingTheVendorGetsIsBound(_ what: String) {
        let approved = grant()
        let wider = grant { p in
            switch what {
            case "kind": p.devices[0].kind = .usb; p.devices[0].path = nil
            case "vendorID": p.devices[0].vendorID = "0404"
            case "productID": p.devices[0].productID = "6015"
            case "path": p.devices[0].path = "/dev/ttyS0"
            case "memory": p.container.limits.memoryMiB = 256
            case "image": p.container.image.fingerprint = String(repeating: "b", count: 64)
            case "network": p.container.network = .none
            case "new device": p.devices.append(DeviceGrant(serial: "C", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/x"))
            case "new app": p.apps.append(AppSpec(name: "extra", version: "1", runList: ["recipe[x]"]))
            default: p.apps[0].inspecProfile = "other"
            }
        }
        guard case .ask(let changes) = ApprovalPolicy.decide(wider, approved: approved, vendor: vendor) else {
            Issue.record("\(what) went through unasked")
            return
        }
        #expect(changes?.isEmpty == false)
    }

    @Test func policiesAutoAndDenyDecideAlone() {
        var v = vendor
        v.policy = .auto
        #expect(ApprovalPolicy.decide(grant(), approved: nil, vendor: v) == .approve(by: "policy:auto"))
        v.policy = .deny
        #expect(ApprovalPolicy.decide(grant(), approved: nil, vendor: v) == .deny(by: "policy:deny"))
    }
}

@Suite struct DeviceRegistryTests {
    let number = DeviceNumber(major: 188, minor: 0)

    @Test func nodesExistOnlyWhileTheirDeviceIsPluggedWithThatNumber() throws {
        let files = MemoryNodeFiles()
        let r = DeviceRegistry(directory: "/d", files: files)
        let node = ManagedNode(path: "/d/acme/iotgw-A", syspath: "/sys/tty0", number: number)
        #expect(throws: GatewayError.self) { try r.ensure(node) }
        r.plugged(syspath: "/sys/tty0", number: number)
        try r.ensure(node)
        #expect(files.number(at: node.path) == number)
        #expect(r.unplugged(syspath: "/sys/tty0") == [node.path])
        #expect(files.paths.isEmpty)
        // Plugged again with another number: the old node can never be made for it.
        r.plugged(syspath: "/sys/tty0", number: DeviceNumber(major: 188, minor: 1))
        #expect(throws: GatewayError.self) { try r.ensure(node) }
    }

    @Test func theStartUpSweepKeepsOnlyNodesThatStandForThePluggedDevice() throws {
        let files = MemoryNodeFiles()
        try files.make(path: "/d/acme/iotgw-A", number: number)
        try files.make(path: "/d/acme/iotgw-B", number: DeviceNumber(major: 188, minor: 1))
        try files.make(path: "/d/globex/iotgw-C", number: DeviceNumber(major: 188, minor: 2))
        let r = DeviceRegistry(directory: "/d", files: files)
        r.plugged(syspath: "/sys/a", number: number)
        r.plugged(syspath: "/sys/c", number: DeviceNumber(major: 188, minor: 9))  // C is back with another number
        r.sweep(expected: ["/d/acme/iotgw-A": ["/sys/a"], "/d/globex/iotgw-C": ["/sys/c"]])
        #expect(files.paths == ["/d/acme/iotgw-A"])
        #expect(r.unplugged(syspath: "/sys/a") == ["/d/acme/iotgw-A"])
    }
}

@Suite struct BackoffTests {
    @Test func doublesFromTheFirstDelayUpToTheCap() {
        let b = Backoff(first: 2, max: 60)
        #expect((0...7).map { b.delay(afterAttempts: $0) } == [0, 2, 4, 8, 16, 32, 60, 60])
        #expect(b.delay(afterAttempts: 10_000) == 60)
        #expect(b.next(afterAttempts: 1, now: Date(timeIntervalSince1970: 100)) == Date(timeIntervalSince1970: 102))
    }
}

@Suite struct IdentityTests {
    func dir() -> String { FileManager.default.temporaryDirectory.appendingPathComponent("id-\(UUID().uuidString)").path }

    @Test func createdOnceAndKept() throws {
        let d = dir()
        let a = try IdentityStore.loadOrCreate(stateDirectory: d)
        #expect(try IdentityStore.loadOrCreate(stateDirectory: d).id == a.id)
        let attrs = try FileManager.default.attributesOfItem(atPath: IdentityStore.path(stateDirectory: d))
        #expect((attrs[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    }

    @Test func anUnreadableOrCorruptKeyStopsAndIsNeverReplaced() throws {
        let d = dir()
        _ = try IdentityStore.loadOrCreate(stateDirectory: d)
        let path = IdentityStore.path(stateDirectory: d)
        try "not a key\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try IdentityStore.loadOrCreate(stateDirectory: d) } throws: { ($0 as? GatewayError)?.code == .identity }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "not a key\n", "the file is left for the owner to restore")
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)  // a directory where the key should be
        #expect { try IdentityStore.loadOrCreate(stateDirectory: d) } throws: { ($0 as? GatewayError)?.code == .identity }
    }
}

@Suite struct ProfileResolverTests {
    @Test func profilesResolveOnlyInsideTheOwnersDirectory() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("inspec-\(UUID().uuidString)").path
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/good", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: secret, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root + "/escape", withDestinationPath: secret)
        var delivery = GatewayConfig.Delivery.standard
        delivery.inspecDirectory = root
        delivery.hardening.enabled = false  // its profile: theOwnersHardeningIsValidatedWhateverThePlanNames
        let app = { (p: String?) in AppSpec(name: "a", version: "1", runList: ["recipe[a]"], inspecProfile: p) }
        let (ok, notes) = try ProfileResolver.resolve([app("good"), app("missing")], delivery: delivery)
        #expect(ok.count == 1 && ok[0].hasSuffix("/good"))
        #expect(notes.count == 1 && notes[0].contains("missing"))
        #expect { try ProfileResolver.resolve([app("escape")], delivery: delivery) } throws: { ($0 as? GatewayError)?.code == .delivery }
        #expect { try ProfileResolver.resolve([app("..")], delivery: delivery) } throws: { ($0 as? GatewayError)?.code == .delivery }
        // The owner's mapping wins over the vendor's name.
        delivery.profiles = ["a": "good"]
        #expect(try ProfileResolver.resolve([app("escape")], delivery: delivery).profiles.count == 1)
    }
}

@Suite struct HardeningSettingTests {
    func tempDir(_ name: String) -> String { FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path }

    @Test func theOwnersHardeningIsValidatedWhateverThePlanNames() throws {
        let root = tempDir("inspec")
        for d in ["good", "hardening"] { try FileManager.default.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true) }
        var delivery = GatewayConfig.Delivery.standard
        delivery.inspecDirectory = root
        let app = { (p: String?) in AppSpec(name: "a", version: "1", runList: ["recipe[a]"], inspecProfile: p) }
        let names = { (apps: [AppSpec]) in try ProfileResolver.resolve(apps, delivery: delivery).profiles.map { ($0 as NSString).lastPathComponent } }
        #expect(try names([app("good")]) == ["good", "hardening"])
        // A plan naming no profile, or naming the hardening itself, still gets it validated once.
        #expect(try names([app(nil)]) == ["hardening"])
        #expect(try names([app("hardening")]) == ["hardening"])
        #expect(try names([]) == [], "no apps, nothing converges, nothing to validate")
        delivery.hardening.enabled = false
        #expect(try names([app("good")]) == ["good"])
        // On, but its profile is not installed: refused rather than silently unvalidated.
        delivery.hardening.enabled = true
        try FileManager.default.removeItem(atPath: root + "/hardening")
        #expect { try names([app("good")]) } throws: { ($0 as? GatewayError)?.code == .delivery }
    }

    @Test func onByDefaultWithItsCookbooksBesideTheProfilesAndAMissingOneFailsTheDelivery() throws {
        let base = tempDir("share")
        var delivery = GatewayConfig.Delivery.standard
        delivery.inspecDirectory = base + "/inspec"
        #expect(delivery.hardening == .standard && delivery.hardening.enabled && delivery.hardening.packages)
        #expect(delivery.hardeningCookbookDirectory == base + "/cookbooks")
        #expect { try delivery.hardeningProvisioner(for: "ansible") } throws: { ($0 as? GatewayError)?.code == .delivery }
        #expect { try delivery.hardeningProvisioner(for: "chef") } throws: { ($0 as? GatewayError)?.code == .delivery }
        for d in ["cookbooks/iotgw_hardening", "cookbooks/ansible/hardening"] {
            try FileManager.default.createDirectory(atPath: base + "/" + d, withIntermediateDirectories: true)
        }
        let chef = try #require(try delivery.hardeningProvisioner(for: "chef") as? ChefLocalProvisioner)
        #expect(chef.cookbook == "iotgw_hardening" && chef.attributes.installPackages)
        #expect(chef.clientRB.contains("local_mode true") && !chef.clientRB.contains("chef_server_url"))
        let ansible = try #require(try delivery.hardeningProvisioner(for: "ansible") as? AnsibleProvisioner)
        #expect(ansible.extraVars == ["iotgw_hardening_install_packages": "true"])
        #expect(ansible.remoteDirectory != AnsibleProvisioner(playbookDirectory: "/x").remoteDirectory, "never where the vendor's playbook goes")
        delivery.hardening.enabled = false
        #expect(try delivery.hardeningProvisioner(for: "ansible") == nil)
    }

    /// What CI printed when a Debian point release overflowed a vendor's disk during the owner's hardening:
    /// the failed task and ansible's message reach the summary the owner reads.
    @Test func aFailedPlaybookNamesItsFailedTaskAndWhy() {
        let output = """
            TASK [iotgw_hardening : security updates of installed packages (PKGS-7392)] ****
            changed: [localhost]

            TASK [iotgw_hardening : audit, integrity and PAM hardening packages] ***********
            fatal: [localhost]: FAILED! => {"changed": false, "msg": "E:Write error - write (122: Disk quota exceeded)"}

            PLAY RECAP *********************************************************************
            localhost                  : ok=11   changed=11   unreachable=0    failed=1    skipped=0    rescued=0    ignored=0
            """
        #expect(AnsibleProvisioner.recap(output).failed == 1)
        #expect(AnsibleProvisioner.firstFailure(output)
                == "iotgw_hardening : audit, integrity and PAM hardening packages: E:Write error - write (122: Disk quota exceeded)")
        #expect(AnsibleProvisioner.firstFailure("TASK [x] ***\nok: [localhost]\n") == nil)
        #expect(AnsibleProvisioner.firstFailure("TASK [x] ***\nfatal: [localhost]: UNREACHABLE! => not json\n") == "x")
        // A vendor's task name cannot drive the owner's terminal.
        let hostile = AnsibleProvisioner.firstFailure("TASK [a\u{1B}]2;pwned\u{07}b] ***\nfatal: [localhost]: FAILED! => {\"msg\": \"x\\u001b[2Jy\"}\n")
        #expect(hostile.map { !$0.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F } } == true, "\(hostile ?? "nil")")
    }

    @Test func theDigestCoversTheOwnersFilesAndSettingsSoAnyChangeConvergesAgain() throws {
        let base = tempDir("share")
        try FileManager.default.createDirectory(atPath: base + "/cookbooks/ansible/hardening/roles", withIntermediateDirectories: true)
        try "- hosts: localhost\n".write(toFile: base + "/cookbooks/ansible/hardening/site.yml", atomically: true, encoding: .utf8)
        var delivery = GatewayConfig.Delivery.standard
        delivery.inspecDirectory = base + "/inspec"
        let first = try #require(try delivery.hardeningRun(for: "ansible", profile: "/p/hardening"))
        #expect(first.profile == "/p/hardening" && first.digest.count == 64)
        #expect(try delivery.hardeningRun(for: "ansible", profile: nil)?.digest == first.digest, "same files, same settings")
        delivery.hardening.packages = false
        let offline = try #require(try delivery.hardeningRun(for: "ansible", profile: nil))
        #expect(offline.digest != first.digest, "a setting changed")
        try "- hosts: localhost\n  roles: [x]\n".write(toFile: base + "/cookbooks/ansible/hardening/site.yml", atomically: true, encoding: .utf8)
        #expect(try delivery.hardeningRun(for: "ansible", profile: nil)?.digest != offline.digest, "a file changed")
    }

    @Test func theOwnerConfiguresItInGatewayYAML() throws {
        let yaml = """
            stateDirectory: /var/lib/x
            controlSocket: /run/x/control.sock
            vendors: []
            delivery: {inspecDirectory: /srv/inspec, hardening: {packages: false, cookbookDirectory: /srv/owner-cookbooks}}
            """
        let path = tempDir("gw") + ".yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        let c = try GatewayConfig.load(path: path)
        #expect(c.delivery.hardening.enabled && !c.delivery.hardening.packages && c.delivery.hardening.profile == "hardening")
        #expect(c.delivery.hardeningCookbookDirectory == "/srv/owner-cookbooks")
        try yaml.replacingOccurrences(of: "cookbookDirectory: /srv/owner-cookbooks", with: "profile: ../escape")
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try GatewayConfig.load(path: path) } throws: { "\($0)".contains("delivery.hardening.profile") }
    }
}

/// A plan with another image: the container is rebuilt beside the old one and switched only after the
/// apps went in; a failure leaves the old one as it was and is retried with backoff.
@Suite struct RebuildWorkerTests {
    static let newImage = String(repeating: "b", count: 64)

    func newImagePlan(_ rig: Rig, version: Int) async throws {
        rig.host.state.withLock { $0.image = ("iotgw-busybox", Self.newImage) }
        rig.vendors.update("acme") { v in
            v.plan = { _ in
                var p = Rig.plan(vendor: "acme", version: version, serials: ["ACME-1"], apps: true)
                p.container.image = ImageRef(alias: "iotgw-busybox", fingerprint: Self.newImage)
                return p
            }
        }
        await rig.agent.worker("acme")!.requestSync()
    }

    /// Acme's device plugged and its apps delivered on the old image, then plan v2 on the new image, whose
    /// rebuild fails (the apps fail in the candidate) until `rig.delivery.failing` is cleared.
    func failingRebuild(_ rig: Rig) async throws {
        try await rig.plug("acme", serial: "ACME-1", minor: 0)
        try await until("delivered") { try await rig.store.vendorState("acme")?.deliveredVersion == 1 }
        rig.delivery.failing.withLock { $0["acme"] = GatewayError(.delivery, "converge failed") }
        try await newImagePlan(rig, version: 2)
        try await until("rebuild failed") { try await rig.store.rebuildTransaction("acme")?.phase == .failed }
    }

    @Test func aFailedRebuildLeavesTheOldContainerAndAGoodOneSwitchesWithTheDevice() async throws {
        let rig = try Rig(policy: .auto, apps: true)
        try await rig.running {
            // The apps fail in the candidate: it goes, the old container runs on with its device; retried with backoff.
            try await failingRebuild(rig)
            try await until("rebuild failed twice") { (try await rig.store.rebuildTransaction("acme")?.attempts ?? 0) >= 2 }
            let txn = try #require(try await rig.store.rebuildTransaction("acme"))
            #expect(txn.phase == .failed && txn.nextAttemptAt != nil)
            let s = try #require(try await rig.store.vendorState("acme"))
            #expect(s.lastError?.contains("rebuild on image bbbbbbbbbbbb") == true, "\(s.lastError ?? "")")
            #expect(s.appliedVersion == 1)
            let old = try #require(rig.host.instanceNow("iotgw-acme"))
            #expect(old.isRunning)
            #expect(old.config["volatile.base_image"] == String(repeating: "a", count: 64))
            #expect(old.devices["iotgw-ACME-1"] != nil)
            #expect(rig.host.instanceNow("iotgw-acme-next") == nil)
            let tries = rig.delivery.phases.withLock { $0.filter { $0 == "acme converging v2" }.count }
            try await Task.sleep(for: .milliseconds(600))
            let later = rig.delivery.phases.withLock { $0.filter { $0 == "acme converging v2" }.count }
            // Ticks come every 30 ms; with backoff from 50 ms doubling to 400 ms far fewer rebuilds are tried.
            #expect(later - tries <= 3, "\(later - tries) rebuilds in 600 ms")

            // The retry (after the backoff) succeeds: one container, on the new image, with the device.
            rig.delivery.failing.withLock { $0["acme"] = nil }
            try await until("switched") { try await rig.store.vendorState("acme")?.appliedVersion == 2 }
            let new = try #require(rig.host.instanceNow("iotgw-acme"))
            #expect(new.config["volatile.base_image"] == Self.newImage)
            #expect(new.isRunning)
            #expect(new.devices["iotgw-ACME-1"] != nil)
            #expect(rig.host.instanceNow("iotgw-acme-next") == nil)
            #expect(rig.host.instanceNow("iotgw-acme-prev") == nil)
            #expect(try await rig.store.vendorState("acme")?.deliveredVersion == 2, "delivered in the candidate, not again")
            #expect(try await rig.store.rebuildTransaction("acme") == nil)
            #expect(rig.delivery.phases.withLock { $0.filter { $0 == "acme delivered v2" }.count } == 1)
        }
    }

    @Test func aCrashMidSwitchIsFinishedOnRestart() async throws {
        let rig = try Rig(policy: .auto, apps: true)
        try await rig.running {
            // v2 approved (its first rebuild failed, so nothing moved yet).
            try await failingRebuild(rig)
        }
        rig.delivery.failing.withLock { $0["acme"] = nil }
        // As a crash leaves it: the candidate built, the old container already renamed, the switch recorded.
        var plan2 = Rig.plan(vendor: "acme", version: 2, serials: ["ACME-1"], apps: true)
        plan2.container.image = ImageRef(alias: "iotgw-busybox", fingerprint: Self.newImage)
        let steps = ContainerPlanner.candidateSteps(plan: plan2, config: rig.config)
        guard case .create(let c) = steps[1] else { Issue.record("no create"); return }
        try await rig.host.createInstance(c.post, timeout: nil)
        try await rig.host.setState("iotgw-acme", .stop, timeout: 1, force: true)
        try await rig.host.removeDevice("iotgw-acme", name: "iotgw-ACME-1")
        try await rig.host.renameInstance("iotgw-acme", to: "iotgw-acme-prev")
        try await rig.store.saveRebuildTransaction(RebuildTransaction(vendor: "acme", planVersion: 2, fingerprint: Self.newImage, phase: .switching,
                                                                      updatedAt: Date()))
        rig.restart()
        try await rig.running {
            // udev's devices enumerated and swept, as after any restart.
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.agent.handle(.sweep(present: Set(try await rig.store.devices().filter(\.present).map(\.syspath))))
            try await until("switch finished") { try await rig.store.rebuildTransaction("acme") == nil }
            try await until("device in the new container") { rig.host.instanceNow("iotgw-acme")?.devices["iotgw-ACME-1"] != nil }
            let new = try #require(rig.host.instanceNow("iotgw-acme"))
            #expect(new.config["volatile.base_image"] == Self.newImage)
            #expect(new.isRunning)
            #expect(rig.host.instanceNow("iotgw-acme-prev") == nil)
            #expect(rig.host.instanceNow("iotgw-acme-next") == nil)
            // The delivery report died with the process: the apps are delivered again, in the new container.
            try await until("delivered again") { try await rig.store.vendorState("acme")?.deliveredVersion == 2 }
        }
    }
}
