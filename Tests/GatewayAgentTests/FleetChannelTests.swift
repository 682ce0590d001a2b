import Crypto
import Foundation
import GatewayProtocol
import Synchronization
import Testing
@testable import GatewayAgent

/// A broker connection in memory: the test says when it connects and what arrives; it records what
/// the channel published.
final class FakeFleetLink: FleetLink, Sendable {
    let will: (topic: String, payload: Data)
    let stream: AsyncStream<FleetLinkEvent>
    let input: AsyncStream<FleetLinkEvent>.Continuation
    let published = Mutex<[(topic: String, payload: Data, retain: Bool)]>([])
    let subscriptions = Mutex<[String]>([])

    init(will: (topic: String, payload: Data)) {
        self.will = will
        (stream, input) = AsyncStream.makeStream()
    }

    var events: AsyncStream<FleetLinkEvent> { stream }
    func start() throws {}
    func subscribe(_ topic: String) throws { subscriptions.withLock { $0.append(topic) } }
    func publish(topic: String, payload: Data, retain: Bool) async throws { published.withLock { $0.append((topic, payload, retain)) } }
    func stop() async { input.finish() }

    func on(_ topic: String) -> [Data] { published.withLock { $0.filter { $0.topic == topic }.map(\.payload) } }
}

/// The gateway's end of the fleet channel against a fake broker and the fake vendors.
@Suite struct FleetChannelTests {
    /// A rig whose acme has a broker; runs the channel beside the workers while `body` runs.
    static func withChannel(policy: GatewayConfig.Policy = .auto, commands: [String] = GatewayConfig.Fleet.defaultCommands,
                            logs: Bool = false, commandsPerMinute: Int = 30,
                            _ body: (Rig, FakeFleetLink, FleetChannel) async throws -> Void) async throws {
        let rig = try Rig(policy: policy, apps: true)
        var fleet = GatewayConfig.Fleet(host: "127.0.0.1", port: 8883, caFile: "/ca.crt", certificateFile: "/gw.crt", pollSeconds: 3600,
                                        statusSeconds: 300, commands: commands, commandsPerMinute: commandsPerMinute)
        fleet.logs.allowed = logs
        let worker = try #require(rig.agent.worker("acme"))
        let links = Mutex<[FakeFleetLink]>([])
        let channel = try FleetChannel(worker: worker, fleet: fleet, environment: rig.agent.environment, journal: nil, makeLink: { _, will in
            let l = FakeFleetLink(will: will)
            links.withLock { $0.append(l) }
            return l
        }, checkInterval: .milliseconds(20))
        let link = try #require(links.withLock { $0.first })
        try await rig.running {
            let run = Task { await channel.run() }
            defer { run.cancel() }
            try await body(rig, link, channel)
            await link.stop()
            await run.value
        }
    }

    static func status(_ data: Data) throws -> GatewayStatus {
        try SignedDocument.open(data, as: GatewayStatus.self, domain: Envelope.statusDomain, key: Rig.gateway.key.publicKey, what: "status")
    }

    static func result(_ data: Data) throws -> CommandResult {
        try SignedDocument.open(data, as: CommandResult.self, domain: Envelope.resultDomain, key: Rig.gateway.key.publicKey, what: "result")
    }

    static func command(_ rig: Rig, _ kind: FleetCommand.Kind, gateway: String = Rig.gateway.id, vendor: String = "acme", key: String = "acme",
                        issuedAt: Date = Date(), lifetime: TimeInterval = 60) throws -> Data {
        let c = FleetCommand(gatewayID: gateway, vendor: vendor, command: kind, issuedAt: issuedAt, expiresAt: issuedAt.addingTimeInterval(lifetime))
        return try PlanSigner(privateKey: rig.keys[key]!).signDocument(c, domain: Envelope.commandDomain)
    }

    @Test func aPushedPlanIsCheckedAndAppliedWithoutAPollAndARepeatChangesNothing() async throws {
        try await Self.withChannel { rig, link, _ in
            link.input.yield(.connected)
            try await rig.plug("acme", serial: "ACME-1")
            try await rig.provisioned("acme", "ACME-1")
            try await until("v1 delivered") { try await rig.store.vendorState("acme")?.deliveredVersion == 1 }
            let polls = rig.vendors.calls.withLock { $0.filter { $0 == "plan acme" }.count }
            // v2 carries a new app version: pushed, admitted, delivered.
            var v2 = Rig.plan(vendor: "acme", version: 2, serials: ["ACME-1"], apps: true)
            v2.apps[0].version = "1.1.0"
            let body = try WireJSON.encoder().encode(try PlanSigner(privateKey: rig.keys["acme"]!).sign(v2))
            link.input.yield(.message(topic: FleetTopics.plan(Rig.gateway.id), payload: body))
            try await until("v2 delivered by push") { try await rig.store.vendorState("acme")?.deliveredVersion == 2 }
            #expect(rig.vendors.calls.withLock { $0.filter { $0 == "plan acme" }.count } == polls, "no poll was needed")
            // The broker hands the retained plan again after a reconnect: nothing new is recorded.
            let plans = try await rig.store.plans().count
            link.input.yield(.message(topic: FleetTopics.plan(Rig.gateway.id), payload: body))
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await rig.store.plans().count == plans)
            #expect(try await rig.store.vendorState("acme")?.rejection == nil)
            // A tampered push is refused with the reason and changes nothing.
            var tampered = try WireJSON.decoder().decode(SignedPlan.self, from: body)
            tampered.signature = Data(repeating: 1, count: 64).base64EncodedString()
            link.input.yield(.message(topic: FleetTopics.plan(Rig.gateway.id), payload: try WireJSON.encoder().encode(tampered)))
            try await until("tampered plan refused") { try await rig.store.vendorState("acme")?.rejection?.contains("signature") == true }
            #expect(try await rig.store.plans().count == plans)
        }
    }

    /// A broker pushing plan after plan (each signed, each newer): the gateway checks at most one a
    /// second, the newest waiting in between, and the newest lands. (The store holds the approved v1 and
    /// what was checked: about one plan a second and the first.)
    @Test func aBrokerPushingPlanAfterPlanGetsOneCheckedASecondAndTheNewestLands() async throws {
        try await Self.withChannel { rig, link, _ in
            link.input.yield(.connected)
            try await rig.plug("acme", serial: "ACME-1")
            try await rig.provisioned("acme", "ACME-1")
            let start = ContinuousClock.now
            for v in 2...41 {
                let p = Rig.plan(vendor: "acme", version: v, serials: ["ACME-1"])
                link.input.yield(.message(topic: FleetTopics.plan(Rig.gateway.id),
                                          payload: try WireJSON.encoder().encode(try PlanSigner(privateKey: rig.keys["acme"]!).sign(p))))
            }
            try await until("the newest pushed plan recorded") { try await rig.store.heldPlan("acme").version == 41 }
            let seconds = start.duration(to: .now).components.seconds
            let checked = try await rig.store.plans().filter { $0.vendor == "acme" }.map(\.version)
            #expect(checked.count <= Int(seconds) + 3, "\(checked.count) of 40 pushes checked in \(seconds) s: \(checked)")
            #expect(checked.last == 41)
            print("pushes: 40 plans pushed at once, \(checked.count - 1) checked in \(start.duration(to: .now)): versions \(checked)")
        }
    }

    @Test func statusIsSignedCoversOnlyTheVendorsOwnSliceAndFollowsChanges() async throws {
        try await Self.withChannel { rig, link, _ in
            link.input.yield(.connected)
            try await until("status on connect") { !link.on(FleetTopics.status(Rig.gateway.id)).isEmpty }
            try await rig.plug("acme", serial: "ACME-1", minor: 0)
            try await rig.plug("globex", serial: "GLX-1", minor: 1)
            try await rig.provisioned("acme", "ACME-1")
            try await rig.provisioned("globex", "GLX-1")
            try await until("a status with acme's device delivered") {
                guard let last = link.on(FleetTopics.status(Rig.gateway.id)).last, let s = try? Self.status(last) else { return false }
                return s.devices == ["ACME-1"] && s.plan.delivered == 1
            }
            let s = try Self.status(try #require(link.on(FleetTopics.status(Rig.gateway.id)).last))
            #expect(s.vendor == "acme" && s.online && s.container?.name == "iotgw-acme" && s.container?.state == "Running")
            #expect(s.plan.approved == 1 && s.plan.applied == 1 && s.lastDelivery?.result == "applied")
            #expect(s.container?.memoryBytes == 8_388_608 && s.container?.diskBytes == 1_048_576 && s.container?.cpuSeconds == 1.5)
            #expect(!String(decoding: try WireJSON.encoder().encode(s), as: UTF8.self).contains("GLX"), "nothing of globex")
            // Published retained; sequences rise.
            #expect(link.published.withLock { $0.filter { $0.topic.hasSuffix("/status") }.allSatisfy(\.retain) })
            let all = try link.on(FleetTopics.status(Rig.gateway.id)).map(Self.status)
            #expect(all.map(\.sequence) == all.map(\.sequence).sorted() && Set(all.map(\.sequence)).count == all.count)
            // The will is a signed "offline" of the same session.
            let will = try Self.status(link.will.payload)
            #expect(!will.online && will.session == s.session && link.will.topic == FleetTopics.status(Rig.gateway.id))
            #expect(will.supersedes(s) && !s.supersedes(GatewayStatus?.some(s)))
        }
    }

    @Test func aCleanStopPublishesTheSignedOfflineStatusItself() async throws {
        let captured = Mutex<FakeFleetLink?>(nil)
        try await Self.withChannel { _, link, _ in
            captured.withLock { $0 = link }
            link.input.yield(.connected)
            try await until("status on connect") { !link.on(FleetTopics.status(Rig.gateway.id)).isEmpty }
        }
        // withChannel stops the link and waits for the channel's run to end: the last status is the offline one.
        let link = try #require(captured.withLock { $0 })
        let last = try Self.status(try #require(link.on(FleetTopics.status(Rig.gateway.id)).last))
        #expect(!last.online)
    }

    /// A vendor's broker flooding commands (garbage or signed, it makes no difference) gets the owner's
    /// budget read and no more: each one read costs a signature check, a signed result and a log line.
    @Test func commandsBeyondTheOwnersBudgetAreDroppedUnread() async throws {
        try await Self.withChannel(commandsPerMinute: 3) { rig, link, _ in
            link.input.yield(.connected)
            let results = FleetTopics.results(Rig.gateway.id)
            for _ in 0..<50 { link.input.yield(.message(topic: FleetTopics.commands(Rig.gateway.id), payload: Data("not json".utf8))) }
            let key = GatewayMetricsTests.key("iotgw_fleet_messages_received_total", ["vendor": "acme", "kind": "over-budget"])
            try await until("the flood read") {
                GatewayMetricsTests.series(String(decoding: rig.agent.environment.metrics.exposition(), as: UTF8.self))[key] == 47
            }
            #expect(link.on(results).count == 3, "three refusals signed and published, for the three commands read")
            #expect(try link.on(results).map(Self.result).allSatisfy { $0.outcome == .refused })
        }
    }

    @Test func aTokenBucketGivesItsCapacityAtOnceThenItsRate() {
        let t = Date(timeIntervalSince1970: 1_000_000)
        var bucket = TokenBucket(capacity: 3, perSecond: 0.5, now: t)
        func take(at seconds: TimeInterval, _ n: Int = 1) -> [Bool] { (0..<n).map { _ in bucket.take(now: t.addingTimeInterval(seconds)) } }
        #expect(take(at: 0, 5) == [true, true, true, false, false])
        #expect(take(at: 1.9) == [false])
        #expect(take(at: 2) == [true])
        #expect(take(at: -60) == [false], "a clock that goes back gives nothing")
        #expect(take(at: 600, 4) == [true, true, true, false], "never more than its capacity")
    }

    @Test func commandsRunOnceOnlyWhenSignedForThisGatewayInTimeAndAcceptedByTheOwner() async throws {
        try await Self.withChannel(commands: ["status", "resync"]) { rig, link, _ in
            link.input.yield(.connected)
            let results = FleetTopics.results(Rig.gateway.id)
            func send(_ data: Data) { link.input.yield(.message(topic: FleetTopics.commands(Rig.gateway.id), payload: data)) }
            func last(_ n: Int) async throws -> CommandResult {
                try await until("result \(n)") { link.on(results).count >= n }
                return try Self.result(link.on(results)[n - 1])
            }
            let ok = try Self.command(rig, .status)
            send(ok)
            #expect(try await last(1).outcome == .done)
            send(ok)  // the same bytes again
            let replay = try await last(2)
            #expect(replay.outcome == .refused && replay.message.contains("replay"))
            send(try Self.command(rig, .restartContainer))
            let denied = try await last(3)
            #expect(denied.outcome == .refused && denied.message.contains("does not accept restart-container"))
            send(try Self.command(rig, .status, gateway: "gw-0000000000000000"))
            #expect(try await last(4).message.contains("wrongGateway"))
            send(try Self.command(rig, .status, vendor: "globex", key: "globex"))
            #expect(try await last(5).outcome == .refused, "globex's key signs nothing for acme")
            send(try Self.command(rig, .status, issuedAt: Date().addingTimeInterval(-120), lifetime: 60))
            #expect(try await last(6).message.contains("expired"))
            send(try Self.command(rig, .status, lifetime: 7200))
            #expect(try await last(7).outcome == .refused)
            var doc = try WireJSON.decoder().decode(SignedDocument.self, from: try Self.command(rig, .resync))
            let tamperedPayload = Data(base64Encoded: doc.payload)!.map { $0 }
            doc.payload = Data(String(decoding: tamperedPayload, as: UTF8.self).replacingOccurrences(of: "resync", with: "status").utf8)
                .base64EncodedString()
            send(try WireJSON.encoder().encode(doc))
            #expect(try await last(8).message.contains("signature"))
            send(Data("not json".utf8))
            #expect(try await last(9).outcome == .refused)
            // None of the refused ones ran: only the first status command did.
            #expect(try link.on(results).map(Self.result).filter { $0.outcome == .done }.count == 1)
        }
    }
}
