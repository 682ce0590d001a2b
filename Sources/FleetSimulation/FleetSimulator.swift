import AsyncHTTPClient
import Crypto
import Foundation
import GatewayProtocol
import Logging
import MQTT
import NIOCore
import Synchronization

/// How a run behaves.
public struct FleetRunOptions: Sendable {
    public enum Stop: Sendable, Equatable {
        /// Every gateway polls its plan this many times after its announcement.
        case rounds(Int)
        /// Gateways poll until this much time has passed since the start.
        case duration(Duration)
        /// Gateways poll until the signal is given (each finishes the exchange it is in).
        case signal(StopSignal)
    }

    /// Ends a run from outside (a test, after the changes it makes have had time to reach every gateway).
    public final class StopSignal: Sendable, Equatable {
        private let stopped = Mutex(false)
        public init() {}
        public func stop() { stopped.withLock { $0 = true } }
        public var isStopped: Bool { stopped.withLock { $0 } }
        public static func == (a: StopSignal, b: StopSignal) -> Bool { a === b }
    }

    /// An app release whose plans fail (`--fail-app NAME@VERSION`).
    public struct AppRelease: Sendable, Equatable {
        public var name: String
        public var version: String

        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }

        /// `NAME@VERSION`.
        public init(parsing text: String) throws {
            let parts = text.split(separator: "@", maxSplits: 1).map(String.init)
            guard parts.count == 2, Fields.name.isValid(parts[0]), Fields.version.isValid(parts[1]) else {
                throw FleetError(.badOption, "\(Fields.quote(text)) is not NAME@VERSION")
            }
            self.init(name: parts[0], version: parts[1])
        }
    }

    public var stop: Stop
    /// Time between two polls of one gateway; each wait is jittered by ±20 %.
    public var pollInterval: Duration
    /// Gateways start spread over this much time (a fleet never announces all at once).
    public var ramp: Duration
    /// The share of gateways whose deliveries are reported `failed` or `rolled-back` instead of `delivered`,
    /// spread evenly over the fleet's order: of any run of gateways, within one of that share fails. Drawn at
    /// random per delivery, a 5 % rate put 6 failures (12 %) in a canary of 50 about one run in 25, and a
    /// staged rollout the benchmark expects to complete halted.
    public var failureRate: Double
    /// When set, only plans carrying this release fail (at `failureRate`); the others are delivered.
    public var failApp: AppRelease?
    /// Requests in flight at once, over all gateways.
    public var concurrency: Int
    /// When set, every gateway also keeps a fleet channel to the vendor's broker, as a gateway with `fleet` in its
    /// configuration does: plans pushed there are verified and delivered at once (the polls go on at `pollInterval`,
    /// which a gateway lengthens to its `fleet.pollSeconds` while connected), and it publishes signed statuses.
    public var broker: FleetBroker?

    public init(stop: Stop, pollInterval: Duration, ramp: Duration? = nil, failureRate: Double = 0, failApp: AppRelease? = nil,
                concurrency: Int = 64, broker: FleetBroker? = nil) {
        self.stop = stop
        self.pollInterval = pollInterval
        self.ramp = ramp ?? pollInterval
        self.failureRate = failureRate
        self.failApp = failApp
        self.concurrency = concurrency
        self.broker = broker
    }
}

/// What one simulated gateway saw and did, in order (for tests and `--json`).
public struct GatewayTrace: Sendable, Codable, Equatable {
    public struct PlanSeen: Sendable, Codable, Equatable {
        public var version: Int
        public var payloadSHA256: String
        /// `name@version` of every app the plan carries.
        public var apps: [String]
        /// How it came: `announce`, `poll` or `push` (the fleet channel).
        public var via: String?
    }

    public struct ReportSent: Sendable, Codable, Equatable {
        public var planVersion: Int
        public var outcome: String
    }

    public var gatewayID: String
    public var url: String
    /// Every plan that verified, in the order received.
    public var plans: [PlanSeen] = []
    /// Every report the vendor accepted.
    public var reports: [ReportSent] = []
}

public struct FleetRunResult: Sendable {
    public var summary: FleetSummary
    public var traces: [GatewayTrace]
}

/// Which route `load` hammers.
public enum LoadRoute: String, Sendable, CaseIterable {
    /// `POST /v1/plan` as gateways poll: in a session each (`RequestSession`), opened before the clock starts.
    case plan
    /// `GET /v1/health`.
    case hello
}

/// Simulated gateways against one or more replicas of a vendor's `iot-daemon`, over one shared HTTP client.
public struct FleetSimulator: Sendable {
    public let state: FleetState
    public let client: FleetClient
    public let endpoints: [VendorEndpoint]
    let vendorKey: Data
    let logger: Logger

    /// - Parameters:
    ///   - vendorKey: base64 Ed25519 key plans and bundles must verify with (the state's when nil).
    ///   - endpoints: gateway `i` talks to `endpoints[i % count]`.
    public init(state: FleetState, client: FleetClient, endpoints: [VendorEndpoint], vendorKey: String? = nil, logger: Logger) throws {
        guard !endpoints.isEmpty else { throw FleetError(.badOption, "no vendor URL") }
        guard !state.gateways.isEmpty else { throw FleetError(.badState, "the fleet has no gateways: run iotgw-fleetsim enroll") }
        self.state = state
        self.client = client
        self.endpoints = endpoints
        self.vendorKey = try Keys.decodePublic(vendorKey ?? state.vendorKey).rawRepresentation
        self.logger = logger
    }

    func endpoint(forGateway index: Int) -> VendorEndpoint { endpoints[index % endpoints.count] }

    // MARK: run

    /// Every gateway announces its device, verifies the signed plan, bootstraps, reports, then polls its
    /// plan and delivers each new version, until `options.stop`.
    public func run(_ options: FleetRunOptions) async throws -> FleetRunResult {
        let recorder = FleetRecorder()
        let sessions = SessionBook()
        let limiter = Limiter(options.concurrency)
        let key = try Curve25519.Signing.PublicKey(rawRepresentation: vendorKey)
        let clock = ContinuousClock()
        let start = clock.now
        let deadline: ContinuousClock.Instant? = if case .duration(let d) = options.stop { start + d } else { nil }
        if let broker = options.broker { try FileManager.default.createDirectory(atPath: broker.keyDirectory, withIntermediateDirectories: true) }
        let traces = try await withThrowingTaskGroup(of: GatewayTrace.self) { group in
            for (index, gateway) in state.gateways.enumerated() {
                let identity = try gateway.identity()
                let channel = try options.broker.map {
                    try SimulatedFleetChannel(identity: identity, vendor: state.vendor, broker: $0, recorder: recorder, logger: logger)
                }
                let run = GatewayRun(index: index, gateway: gateway, identity: identity, endpoint: endpoint(forGateway: index), vendor: state.vendor,
                                     plans: PlanValidator(vendor: state.vendor, vendorKey: key, gatewayID: gateway.id),
                                     bundles: BundleValidator(vendor: state.vendor, vendorKey: key, gatewayID: gateway.id),
                                     client: client, sessions: sessions, limiter: limiter, recorder: recorder, options: options,
                                     deadline: deadline, channel: channel)
                group.addTask { await run.run() }
            }
            var traces: [GatewayTrace] = []
            for try await trace in group { traces.append(trace) }
            return traces.sorted { $0.gatewayID < $1.gatewayID }
        }
        return FleetRunResult(summary: recorder.summary(gateways: state.gateways.count, elapsed: clock.now - start, fleetChannel: options.broker != nil),
                              traces: traces)
    }

    // MARK: load

    /// `requests` requests on `route`, `concurrency` at a time, spread over the gateways and replicas. For the
    /// plan route every gateway used announces its device first (not counted), so that it has a plan.
    public func load(route: LoadRoute, requests: Int, concurrency: Int) async throws -> FleetSummary {
        let identities = try state.gateways.map { try $0.identity() }
        let sessions = SessionBook()
        let used = min(identities.count, requests)
        if route == .plan {
            let warmUp = FleetRecorder()
            try await forEach(0..<used, concurrency: concurrency) { i in
                let announcement = Announcement(gatewayID: identities[i].id, device: state.gateways[i].device, currentPlanVersion: 0)
                let exchange = try await client.post(.announce, body: try WireJSON.encoder().encode(announcement), as: identities[i],
                                                     to: endpoint(forGateway: i))
                if exchange.status != 200 { warmUp.error(.announce, exchange.errorCode) }
            }
            try await forEach(0..<used, concurrency: concurrency) { i in
                let exchange = try await client.openSession(as: identities[i], to: endpoint(forGateway: i), in: sessions)
                if exchange.status != 200 { warmUp.error(.session, exchange.errorCode) }
            }
            let errors = warmUp.counts.withLock { $0.errors }
            guard errors.isEmpty else { throw FleetError(.badState, "announcing the load's gateways or opening their sessions failed: \(errors)") }
        }
        // What each simulated gateway does on its own processor is kept out of the measured window, which
        // measures the vendor's server: every plan request's MAC is made (its sequence number each) before the
        // clock starts, and every answer is verified after it stops, with all the checks a gateway makes. On a real
        // fleet that work runs on a thousand gateways, not on the server's cores as it would here.
        let key = try Curve25519.Signing.PublicKey(rawRepresentation: vendorKey)
        let validators = identities.prefix(used).map { PlanValidator(vendor: state.vendor, vendorKey: key, gatewayID: $0.id) }
        let bodies = try identities.prefix(used).map { try WireJSON.encoder().encode(PlanRequest(gatewayID: $0.id, currentPlanVersion: 0)) }
        let signed: [SignedPost] = route == .plan ? try (0..<requests).map { i in
            let g = i % used
            guard let post = client.inSession(.plan, body: bodies[g], as: identities[g], to: endpoint(forGateway: g), in: sessions) else {
                throw FleetError(.badState, "gateway \(identities[g].id) holds no session")
            }
            return post
        } : []
        let answers = Answers(count: route == .plan ? requests : 0)
        let recorder = FleetRecorder()
        let clock = ContinuousClock()
        let start = clock.now
        try await forEach(0..<requests, concurrency: concurrency) { i in
            let g = i % used
            let exchange: Exchange
            let r: Route = route == .plan ? .plan : .health
            do {
                switch route {
                case .plan: exchange = try await client.post(signed[i])
                case .hello: exchange = try await client.health(at: endpoint(forGateway: g))
                }
            } catch {
                recorder.error(r, Self.kind(of: error))
                return
            }
            recorder.answered(r, latency: exchange.latency)
            guard exchange.status == 200 else { return recorder.error(r, exchange.errorCode) }
            if route == .plan { answers.set(i, exchange.body) }
        }
        let elapsed = clock.now - start
        // The signed plans verify with the vendor's key and pass every check a gateway makes.
        for (i, body) in answers.all() {
            do {
                _ = try validators[i % used].validate(rawBody: body, held: .none, now: Date())
                recorder.update { $0.plansVerified += 1 }
            } catch let error as ProtocolError {
                recorder.error(.plan, "verify.\(error.code)")
            } catch {
                recorder.error(.plan, "verify.other")
            }
        }
        return recorder.summary(gateways: used, elapsed: elapsed)
    }

    /// Runs `body` for every index, at most `concurrency` at once.
    func forEach(_ indices: Range<Int>, concurrency: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        let next = Counter(indices.lowerBound)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, min(concurrency, indices.count)) {
                group.addTask {
                    while true {
                        let i = next.take()
                        guard i < indices.upperBound else { return }
                        try await body(i)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// A transport failure's kind, for the error table.
    static func kind(of error: any Error) -> String {
        if let e = error as? HTTPClientError { return "transport." + String(describing: e).replacingOccurrences(of: "HTTPClientError.", with: "") }
        if let e = error as? MQTTError { return "mqtt.\(e.code)" }
        if error is NIOTooManyBytesError { return "tooLarge" }
        return "transport." + String(describing: type(of: error))
    }
}

/// The answers' bodies by request index, kept to be verified after the measured window.
final class Answers: Sendable {
    private let bodies: Mutex<[Data?]>
    init(count: Int) { bodies = Mutex(Array(repeating: nil, count: count)) }
    func set(_ i: Int, _ body: Data) { bodies.withLock { $0[i] = body } }
    func all() -> [(Int, Data)] { bodies.withLock { b in b.indices.compactMap { i in b[i].map { (i, $0) } } } }
}

/// Hands out consecutive numbers to concurrent workers.
final class Counter: Sendable {
    private let value: Mutex<Int>
    init(_ first: Int) { value = Mutex(first) }
    func take() -> Int { value.withLock { n in defer { n += 1 }; return n } }
}

/// One simulated gateway's life during a run.
struct GatewayRun: Sendable {
    /// The gateway's place in the fleet's order (which gateways fail, see ``FleetRunOptions/failureRate``).
    let index: Int
    let gateway: SimulatedGateway
    let identity: GatewayIdentity
    let endpoint: VendorEndpoint
    let vendor: String
    let plans: PlanValidator
    let bundles: BundleValidator
    let client: FleetClient
    /// Plans are polled in a session, as a gateway does (`RequestSession`); everything else is signed.
    let sessions: SessionBook
    let limiter: Limiter
    let recorder: FleetRecorder
    let options: FleetRunOptions
    let deadline: ContinuousClock.Instant?
    /// The gateway's fleet channel, when the run uses the broker.
    let channel: SimulatedFleetChannel?

    func run() async -> GatewayTrace {
        var trace = GatewayTrace(gatewayID: gateway.id, url: endpoint.baseURL)
        var held = PlanHeld.none
        if await !sleep(options.ramp * Double.random(in: 0..<1)) { return trace }
        guard let channel else {
            await cycle(trace: &trace, held: &held)
            return trace
        }
        do { try channel.start() } catch {
            recorder.error("mqtt.connect", FleetSimulator.kind(of: error))
            return trace
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await channel.follow() }
            await cycle(trace: &trace, held: &held)
            await channel.stop()  // ends the events, and with them `follow`
        }
        return trace
    }

    /// Announces, then polls every `pollInterval` until the run's end; with a fleet channel, a plan pushed in
    /// between is verified and delivered at once.
    func cycle(trace: inout GatewayTrace, held: inout PlanHeld) async {
        var announced = false
        var polls = 0
        while true {
            // Until the announcement went through, the gateway announces again instead of polling.
            let route: Route = announced ? .plan : .announce
            let body: Data?
            if announced {
                body = try? WireJSON.encoder().encode(PlanRequest(gatewayID: gateway.id, currentPlanVersion: held.version))
            } else {
                body = try? WireJSON.encoder().encode(Announcement(gatewayID: gateway.id, device: gateway.device, currentPlanVersion: held.version))
            }
            if let body, let answer = await call(route, body) {
                announced = true
                if let plan = verify(answer, via: route == .plan ? "poll" : "announce", held: &held, trace: &trace) {
                    await deliver(plan, trace: &trace)
                }
            }
            if announced { polls += 1 }
            if case .rounds(let rounds) = options.stop, polls > rounds { break }
            if await !waitForPoll(options.pollInterval * Double.random(in: 0.8...1.2), held: &held, trace: &trace) { break }
        }
    }

    /// Waits until the next poll is due, taking the plans pushed meanwhile; false when the run is over.
    func waitForPoll(_ interval: Duration, held: inout PlanHeld, trace: inout GatewayTrace) async -> Bool {
        guard let channel else { return await sleep(interval) }
        let clock = ContinuousClock()
        let due = clock.now + interval
        while true {
            if let pushed = channel.takePushed(), let plan = verify(pushed, via: "push", held: &held, trace: &trace) {
                await deliver(plan, trace: &trace)
            }
            let left = due - clock.now
            if left <= .zero { return await sleep(.zero) }
            // At most a second at a time, so that the run's end (deadline or signal) is seen.
            let step = min(left, deadline.map { $0 - clock.now } ?? left, .seconds(1))
            if step <= .zero { return false }
            await channel.waitForPush(upTo: step)
            if Task.isCancelled { return false }
            if case .signal(let signal) = options.stop, signal.isStopped { return false }
        }
    }

    /// Waits `duration`, cut short at the deadline; false when the run is over.
    func sleep(_ duration: Duration) async -> Bool {
        let clock = ContinuousClock()
        var until = clock.now + duration
        if let deadline {
            if clock.now >= deadline { return false }
            until = min(until, deadline)
        }
        repeat {
            // At most a second at a time, so that a stop signal is seen within one.
            try? await Task.sleep(until: min(until, clock.now + .seconds(1)), clock: clock)
            if Task.isCancelled { return false }
            if case .signal(let signal) = options.stop, signal.isStopped { return false }
        } while clock.now < until
        return deadline.map { clock.now < $0 } ?? true
    }

    /// A request within the run's concurrency bound, a plan poll in the gateway's session (opened first when
    /// it holds none, dropped when refused), anything else signed; nil (and counted) unless answered 2xx.
    func call(_ route: Route, _ body: Data) async -> Data? {
        if route == .plan, !sessions.holds(identity.id) {
            await limiter.acquire()
            let opened: Result<Exchange, any Error>
            do { opened = .success(try await client.openSession(as: identity, to: endpoint, in: sessions)) } catch { opened = .failure(error) }
            limiter.release()
            switch opened {
            case .failure(let error): recorder.error(.session, FleetSimulator.kind(of: error))
            case .success(let exchange) where exchange.status != 200: recorder.error(.session, exchange.errorCode)
            case .success(let exchange): recorder.answered(.session, latency: exchange.latency)
            }
        }
        await limiter.acquire()
        let result: Result<Exchange, any Error>
        do {
            if route == .plan, let post = client.inSession(.plan, body: body, as: identity, to: endpoint, in: sessions) {
                result = .success(try await client.post(post))
            } else {
                result = .success(try await client.post(route, body: body, as: identity, to: endpoint))
            }
        } catch { result = .failure(error) }
        limiter.release()
        if route == .plan, case .success(let exchange) = result, exchange.status == 401 { sessions.drop(identity.id) }
        switch result {
        case .failure(let error):
            recorder.error(route, FleetSimulator.kind(of: error))
            return nil
        case .success(let exchange):
            recorder.answered(route, latency: exchange.latency)
            guard (200..<300).contains(exchange.status) else {
                let code = exchange.errorCode
                if route == .bootstrap, code == "planVersionMismatch" {
                    recorder.update { $0.bootstrapsSuperseded += 1 }
                } else {
                    recorder.error(route, code)
                }
                return nil
            }
            return exchange.body
        }
    }

    /// The plan if it verifies and is newer than the one held (which it then becomes).
    func verify(_ answer: Data, via: String, held: inout PlanHeld, trace: inout GatewayTrace) -> ProvisioningPlan? {
        let verified: (plan: ProvisioningPlan, payload: Data)
        do { verified = try plans.validate(rawBody: answer, held: held, now: Date()) } catch let error as ProtocolError {
            if via == "push", error.code == .versionRollback {
                // The retained plan on the broker lags the store by up to the vendor's check interval: a gateway that
                // polled the newer one meanwhile refuses it, as the gateway does, and that is no fault of the vendor.
                recorder.update { $0.fleet.stalePushes += 1 }
                return nil
            }
            if error.code == .versionRollback || error.code == .versionReuse {
                recorder.update { $0.versionRegressions += 1 }
            }
            recorder.error(.plan, "verify.\(error.code)")
            return nil
        } catch {
            recorder.error(.plan, "verify.other")
            return nil
        }
        let sha = Keys.sha256Hex(verified.payload)
        let isNew = verified.plan.version > held.version
        recorder.update {
            $0.plansVerified += 1
            if isNew { $0.newVersions += 1 }
            if via == "push" {
                $0.fleet.plansPushed += 1
                if isNew { $0.fleet.newVersionsPushed += 1 }
            }
        }
        trace.plans.append(.init(version: verified.plan.version, payloadSHA256: sha, apps: verified.plan.apps.map { "\($0.name)@\($0.version)" },
                                 via: via))
        held = PlanHeld(version: verified.plan.version, payloadSHA256: sha)
        return isNew ? verified.plan : nil
    }

    /// Bootstraps the plan's version (verifying the signed bundle) and reports an outcome.
    func deliver(_ plan: ProvisioningPlan, trace: inout GatewayTrace) async {
        guard let body = try? WireJSON.encoder().encode(BootstrapRequest(gatewayID: gateway.id, planVersion: plan.version)),
              let answer = await call(.bootstrap, body) else { return }
        let bundle: VerifiedBootstrap
        do {
            bundle = try bundles.validate(rawBody: answer, planVersion: plan.version, expectedNode: "\(gateway.id)-\(vendor)", now: Date())
        } catch let error as ProtocolError {
            recorder.error(.bootstrap, "verify.\(error.code)")
            return
        } catch {
            recorder.error(.bootstrap, "verify.other")
            return
        }
        recorder.update { $0.bootstrapsVerified += 1 }
        let outcome = outcome(for: plan)
        let delivery: DeliverySummary? = outcome == .failed ? nil : DeliverySummary(
            result: outcome.rawValue, provisioner: bundle.bundle.kind.rawValue, convergeSummary: nil, controls: [:], failingControls: [],
            restoredSnapshot: outcome == .rolledBack ? "iotgw-pre-v\(plan.version)" : nil,
            message: outcome == .delivered ? "simulated delivery" : "simulated converge failure")
        let report = ProvisioningReport(gatewayID: gateway.id, vendor: vendor, planVersion: plan.version, outcome: outcome,
                                        container: plan.container.name, attachedDevices: plan.devices.map(\.serial),
                                        error: outcome == .failed ? "simulated failure" : nil, delivery: delivery)
        guard let reportBody = try? WireJSON.encoder().encode(report), await call(.report, reportBody) != nil else { return }
        recorder.update { $0.reports[outcome.rawValue, default: 0] += 1 }
        trace.reports.append(.init(planVersion: plan.version, outcome: outcome.rawValue))
        await channel?.update {
            $0.received = plan.version
            if outcome == .delivered { $0.delivered = plan.version }
            let result = switch outcome { case .delivered: "applied"; case .rolledBack: "rolledBack"; default: "failed" }
            $0.lastDelivery = .init(planVersion: plan.version, result: result, failingControls: [], at: Date())
        }
    }

    /// Whether gateway `index` (in the fleet's order) is one of the `rate` share that fail: one wherever the
    /// running count of failures, `index × rate`, reaches a whole number.
    static func fails(index: Int, rate: Double) -> Bool {
        (Double(index + 1) * rate).rounded(.down) > (Double(index) * rate).rounded(.down)
    }

    /// `delivered`, or for the gateways ``FleetRunOptions/failureRate`` picks (only for plans carrying `failApp`
    /// when it is set) `failed` or `rolled-back`, half and half.
    func outcome(for plan: ProvisioningPlan) -> ProvisioningReport.Outcome {
        if let failApp = options.failApp, !plan.apps.contains(where: { $0.name == failApp.name && $0.version == failApp.version }) {
            return .delivered
        }
        guard Self.fails(index: index, rate: options.failureRate) else { return .delivered }
        return Bool.random() ? .failed : .rolledBack
    }
}
