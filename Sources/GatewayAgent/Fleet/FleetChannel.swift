import Foundation
import GatewayProtocol
import Logging

/// One vendor's fleet channel on the gateway: a single outbound connection to the vendor's broker
/// (gateways sit behind NAT) that
/// - takes the retained, signed plan and hands it to the vendor's worker, which checks it exactly
///   like a polled one (a repeat changes nothing);
/// - publishes the vendor's slice of the gateway as a signed, retained status on every change and
///   every `statusSeconds` (a signed last will marks the gateway offline);
/// - runs the vendor's signed commands that the owner accepts, once each, and publishes signed results;
/// - relays the vendor's own container journal when the owner allows it, rate-limited and capped.
///
/// Nothing here waits on another vendor: each channel runs beside its own worker's lanes.
public actor FleetChannel {
    let worker: VendorWorker
    let vendor: GatewayConfig.VendorEntry
    let fleet: GatewayConfig.Fleet
    let env: AgentEnvironment
    let link: any FleetLink
    let journal: (any ContainerJournal)?
    let logger: Logger
    /// This connection's session (ms since 1970 when the channel was made): orders statuses and wills.
    let session: Int64
    let started: Date
    /// The signed "offline" status: the broker publishes it as the last will when the connection drops,
    /// and the channel publishes it itself when the gateway stops cleanly (no will is sent then).
    let offline: Data

    var connected = false
    /// Held around each status publication (see ``publishStatus(force:)``).
    let statusLock = AsyncMutex()
    var sequence: Int64 = 0
    var lastFacts: GatewayStatus?
    var lastPublishedAt: Date?
    var relay: (id: String, task: Task<Void, Never>)?
    /// How often the status facts are compared (a change is published within this).
    let checkInterval: Duration
    /// The owner's budget for this vendor's commands: the broker is the vendor's, and a flood of commands,
    /// signed or not, must not take the gateway's processor, its log or its uplink from the owner and the
    /// other vendors. Over it, a command is dropped unread; one line a minute says how many were.
    /// (Pushed plans have their own: only the newest waits, the exchange lane checks at most one a second,
    /// and the store keeps of a vendor's plans only the approved one and the newest `GatewayStore.keptPlans`.)
    var commandBudget: TokenBucket
    var overBudget = 0
    var overBudgetToldAt: Date?

    public init(worker: VendorWorker, fleet: GatewayConfig.Fleet, environment env: AgentEnvironment, journal: (any ContainerJournal)?,
                makeLink: FleetLinkFactory, checkInterval: Duration = .seconds(1)) throws {
        self.worker = worker
        vendor = worker.vendor
        self.fleet = fleet
        self.env = env
        self.journal = journal
        self.checkInterval = checkInterval
        commandBudget = TokenBucket(capacity: Double(fleet.commandsPerMinute), perSecond: Double(fleet.commandsPerMinute) / 60, now: env.now())
        var l = env.logger
        l[metadataKey: "iotgw.vendor"] = "\(worker.vendor.id)"
        logger = l
        started = env.now()
        session = Int64(started.timeIntervalSince1970 * 1000)
        let will = GatewayStatus(gatewayID: env.identity.id, vendor: worker.vendor.id, online: false, session: session, sequence: 0,
                                 publishedAt: started, agentVersion: GatewayAgent.version, uptimeSeconds: 0, container: nil, devices: [],
                                 plan: .init(), lastDelivery: nil, rejection: nil)
        offline = try SignedDocument.sign(will, domain: Envelope.statusDomain, key: env.identity.key)
        link = try makeLink(worker.vendor, (FleetTopics.status(env.identity.id), offline))
    }

    var gatewayID: String { env.identity.id }

    /// Runs until cancelled: connects, follows the broker, publishes status. The connection is stopped cleanly on the way out.
    public func run() async {
        do {
            try link.subscribe(FleetTopics.plan(gatewayID))
            try link.subscribe(FleetTopics.commands(gatewayID))
            try link.start()
        } catch {
            logger.error("fleet channel cannot start; plans are polled over HTTP only", metadata: ["iotgw.error": "\(error.safeDescription)"])
            return
        }
        logger.info("fleet channel started", metadata: ["mqtt.broker": "\(fleet.host):\(fleet.port)"])
        let events = link.events
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                for await event in events { await handle(event) }
            }
            group.addTask { [self] in
                while !Task.isCancelled {
                    do { try await Task.sleep(for: checkInterval) } catch { break }
                    await publishStatusIfDue()
                }
            }
            await group.next()
            group.cancelAll()
        }
        stopRelay(reason: "gateway stopping")
        if connected {
            // Run already cancelled (the gateway is stopping): the last publish must not be cancelled with it.
            let (link, topic, offline, logger) = (link, FleetTopics.status(gatewayID), offline, logger)
            await Task {
                do { try await link.publish(topic: topic, payload: offline, retain: true) } catch {
                    logger.warning("offline status not published", metadata: ["iotgw.error": "\(error.safeDescription)"])
                }
            }.value
        }
        await link.stop()
    }

    /// Stops the connection (the events loop then ends `run`).
    public func stop() async { await link.stop() }

    func handle(_ event: FleetLinkEvent) async {
        switch event {
        case .connected:
            connected = true
            await worker.fleetConnection(true)
            logger.notice("fleet channel connected")
            // After every reconnect the latest status goes out, whether or not it changed.
            await publishStatus(force: true)
        case .disconnected(let reason):
            if connected { logger.warning("fleet channel disconnected", metadata: ["iotgw.reason": "\(Fields.displayText(reason, max: 200))"]) }
            connected = false
            await worker.fleetConnection(false)
            stopRelay(reason: "disconnected")
        case .message(let topic, let payload):
            if topic == FleetTopics.plan(gatewayID) {
                env.metrics.fleetReceived(vendor: vendor.id, .plan)
                await worker.planPushed(payload)
            } else if topic == FleetTopics.commands(gatewayID) {
                guard commandBudget.take(now: env.now()) else { return commandOverBudget() }
                env.metrics.fleetReceived(vendor: vendor.id, .command)
                await command(payload)
            } else {
                env.metrics.fleetReceived(vendor: vendor.id, .unexpected)
                logger.warning("message on an unexpected topic ignored", metadata: ["mqtt.topic": "\(Fields.displayText(topic, max: 200))"])
            }
        }
    }

    func commandOverBudget() {
        env.metrics.fleetReceived(vendor: vendor.id, .overBudget)
        overBudget += 1
        let t = env.now()
        guard overBudgetToldAt.map({ t.timeIntervalSince($0) >= 60 }) ?? true else { return }
        logger.warning("vendor commands dropped unread: over the owner's budget", metadata: [
            "iotgw.dropped": "\(overBudget)", "iotgw.commandsPerMinute": "\(fleet.commandsPerMinute)",
        ])
        overBudget = 0
        overBudgetToldAt = t
    }

    // MARK: - Status

    func publishStatusIfDue() async {
        guard connected else { return }
        let overdue = lastPublishedAt.map { env.now().timeIntervalSince($0) >= fleet.statusSeconds } ?? true
        await publishStatus(force: overdue)
    }

    /// Publishes the status when its facts changed since the last one published, or when forced.
    /// One at a time: a publication suspends (the container's state, the publish itself), and a second one
    /// running beside it could reach the broker first, leaving the older status retained there.
    func publishStatus(force: Bool) async {
        _ = try? await statusLock.withLock { await self.publishStatusNow(force: force) }
    }

    private func publishStatusNow(force: Bool) async {
        guard connected else { return }
        do {
            var status = try await worker.statusFacts()
            if !force, status == lastFacts { return }
            let facts = status
            sequence += 1
            let t = env.now()
            status.session = session
            status.sequence = sequence
            status.publishedAt = t
            status.uptimeSeconds = Int64(t.timeIntervalSince(started))
            status.container = await worker.containerStatus()
            let payload = try SignedDocument.sign(status, domain: Envelope.statusDomain, key: env.identity.key)
            try await link.publish(topic: FleetTopics.status(gatewayID), payload: payload, retain: true)
            env.metrics.fleetPublished(vendor: vendor.id, .status)
            lastFacts = facts
            lastPublishedAt = t
        } catch {
            logger.warning("status not published", metadata: ["iotgw.error": "\(error.safeDescription)"])
        }
    }

    // MARK: - Commands

    func command(_ payload: Data) async {
        let validator: CommandValidator
        do {
            validator = CommandValidator(vendor: vendor.id, vendorKey: try Keys.decodePublic(vendor.publicKey), gatewayID: gatewayID)
        } catch { return }
        let cmd: FleetCommand
        do { cmd = try validator.validate(payload, now: env.now()) } catch {
            logger.warning("command refused", metadata: ["iotgw.error": "\(error.safeDescription)"])
            return await result(id: "-", command: "-", .refused, error.safeDescription)
        }
        guard fleet.accepts(cmd.command) else {
            let why = cmd.command == .logsStart && fleet.commands.contains(cmd.command.rawValue)
                ? "the owner has not allowed log relay for this vendor" : "the owner does not accept \(cmd.command.rawValue) from this vendor"
            logger.warning("command refused", metadata: ["iotgw.command": "\(cmd.command.rawValue)", "iotgw.error": "\(why)"])
            return await result(id: cmd.id, command: cmd.command.rawValue, .refused, why)
        }
        do {
            guard try await env.store.claimCommand(id: cmd.id, vendor: vendor.id, expiresAt: cmd.expiresAt, now: env.now()) else {
                logger.warning("replayed command refused", metadata: ["iotgw.command": "\(cmd.command.rawValue)"])
                return await result(id: cmd.id, command: cmd.command.rawValue, .refused, "command \(cmd.id) was seen before (replay)")
            }
        } catch {
            return await result(id: cmd.id, command: cmd.command.rawValue, .failed, error.safeDescription)
        }
        logger.notice("vendor command", metadata: ["iotgw.command": "\(cmd.command.rawValue)", "iotgw.commandID": "\(cmd.id)"])
        do {
            let message = try await perform(cmd)
            await result(id: cmd.id, command: cmd.command.rawValue, .done, message)
        } catch {
            await result(id: cmd.id, command: cmd.command.rawValue, .failed, error.safeDescription)
        }
    }

    func perform(_ cmd: FleetCommand) async throws -> String {
        switch cmd.command {
        case .status:
            await publishStatus(force: true)
            return "status published"
        case .resync:
            await worker.resync()
            return "plan sync requested"
        case .redeliver:
            return try await worker.redeliver() ? "delivery of the current plan scheduled" : "nothing to deliver: no approved plan with apps"
        case .restartContainer:
            try await worker.restartContainer()
            return "container \(worker.container) restarted"
        case .logsStart:
            let seconds = min(cmd.seconds ?? fleet.logs.maxSeconds, fleet.logs.maxSeconds)
            try startRelay(id: cmd.id, seconds: seconds)
            return "relaying the journal of \(worker.container) for \(seconds) s"
        case .logsStop:
            return stopRelay(reason: "stopped by the vendor") ? "log relay stopped" : "no log relay was running"
        }
    }

    func result(id: String, command: String, _ outcome: CommandResult.Outcome, _ message: String) async {
        let r = CommandResult(id: id, gatewayID: gatewayID, vendor: vendor.id, command: command, outcome: outcome,
                              message: Fields.displayText(message, max: 1024), at: env.now())
        do {
            let payload = try SignedDocument.sign(r, domain: Envelope.resultDomain, key: env.identity.key)
            try await link.publish(topic: FleetTopics.results(gatewayID), payload: payload, retain: false)
            env.metrics.fleetPublished(vendor: vendor.id, .result)
        } catch {
            logger.warning("command result not published", metadata: ["iotgw.error": "\(error.safeDescription)"])
        }
    }

    // MARK: - Log relay

    func startRelay(id: String, seconds: Int) throws {
        guard let journal else { throw GatewayError(.fleet, "this gateway has no journal reader") }
        stopRelay(reason: "replaced by a new logs-start")
        let limits = fleet.logs
        let task = Task { [self] in
            await runRelay(id: id, seconds: seconds, limits: limits, journal: journal)
        }
        relay = (id, task)
    }

    /// Ends the running relay, if any; its final batch says why.
    @discardableResult
    func stopRelay(reason: String) -> Bool {
        guard let r = relay else { return false }
        relay = nil
        stoppedReason[r.id] = reason
        r.task.cancel()
        return true
    }

    /// Why a cancelled relay stopped, for its final batch.
    var stoppedReason: [String: String] = [:]

    /// Every second: the journal's new lines, up to the owner's lines and bytes per second (the rest are
    /// counted as dropped), until the time is up or the relay is stopped.
    func runRelay(id: String, seconds: Int, limits: GatewayConfig.Fleet.Logs, journal: any ContainerJournal) async {
        let deadline = env.now().addingTimeInterval(TimeInterval(seconds))
        var cursor: String?
        var sequence = 0
        var dropped = 0
        var reason = "time is up"
        logger.notice("log relay started", metadata: ["iotgw.seconds": "\(seconds)"])
        while env.now() < deadline {
            if Task.isCancelled { break }
            do {
                // Up to four seconds' worth per read: what is over the limit is counted as dropped, and a
                // flood beyond that waits for the next read (the cursor moves only past what was read).
                let (lines, next) = try await journal.read(container: worker.container, after: cursor,
                                                           limit: cursor == nil ? min(20, limits.linesPerSecond) : limits.linesPerSecond * 4)
                cursor = next ?? cursor
                var out: [String] = []
                var bytes = 0
                for line in lines {
                    let text = Fields.displayText(line, max: 1024)
                    if out.count < limits.linesPerSecond, bytes + text.utf8.count <= limits.bytesPerSecond {
                        out.append(text)
                        bytes += text.utf8.count
                    } else {
                        dropped += 1
                    }
                }
                if !out.isEmpty || dropped > 0 {
                    sequence += 1
                    await publishLogs(LogBatch(gatewayID: gatewayID, vendor: vendor.id, session: id, sequence: sequence, lines: out,
                                               dropped: dropped, final: false, at: env.now()))
                    dropped = 0
                }
            } catch {
                reason = "journal unreadable: \(error.safeDescription)"
                break
            }
            do { try await Task.sleep(for: .seconds(1)) } catch { break }
        }
        if Task.isCancelled { reason = stoppedReason.removeValue(forKey: id) ?? "stopped" }
        sequence += 1
        await publishLogs(LogBatch(gatewayID: gatewayID, vendor: vendor.id, session: id, sequence: sequence, lines: [], dropped: dropped,
                                   final: true, reason: reason, at: env.now()))
        if relay?.id == id { relay = nil }
        logger.notice("log relay ended", metadata: ["iotgw.reason": "\(reason)"])
    }

    func publishLogs(_ batch: LogBatch) async {
        guard connected else { return }
        do {
            let payload = try SignedDocument.sign(batch, domain: Envelope.logsDomain, key: env.identity.key)
            try await link.publish(topic: FleetTopics.logs(gatewayID), payload: payload, retain: false)
            env.metrics.fleetPublished(vendor: vendor.id, .logs)
        } catch {
            logger.warning("log batch not published", metadata: ["iotgw.error": "\(error.safeDescription)"])
        }
    }

    public var isConnected: Bool { connected }
    public var isRelaying: Bool { relay != nil }

    /// The owner stops a relay (`iot-gateway logs-stop VENDOR`).
    public func ownerStopsRelay() -> Bool { stopRelay(reason: "stopped by the gateway owner") }
}
