import ArgumentParser
import Foundation
import GatewayProtocol
import Logging
import MQTT
import VendorService

/// Sends one signed command to a gateway over the fleet channel and prints its result.
struct CommandCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "command",
        abstract: "Send a signed command to a gateway over the vendor's broker and wait for its result.",
        discussion: "Commands: \(FleetCommand.Kind.allCases.map(\.rawValue).joined(separator: ", ")). The gateway's owner decides which it accepts.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The gateway's id (gw-<16 hex digits>).")
    var gatewayID: String

    @Argument(help: "The command.")
    var command: String

    @Option(help: "logs-start: how many seconds to relay.")
    var seconds: Int?

    @Option(help: "How long to wait for the gateway's result, in seconds (a command stays valid for 10 minutes).")
    var wait: Int = 30

    func validate() throws {
        guard Fields.gatewayID.isValid(gatewayID) else { throw ValidationError("gateway id must be \(Fields.gatewayID.form)") }
        guard let kind = FleetCommand.Kind(rawValue: command) else {
            throw ValidationError("unknown command \(Fields.quote(command)); one of \(FleetCommand.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if kind == .logsStart { guard let s = seconds, (1...86_400).contains(s) else { throw ValidationError("logs-start needs --seconds 1-86400") } }
    }

    func run() async throws {
        let (configuration, fleet) = try FleetCLI.load(options)
        let kind = FleetCommand.Kind(rawValue: command)!
        let result = try await FleetCLI.send(kind, to: gatewayID, seconds: seconds, configuration: configuration, fleet: fleet,
                                            wait: .seconds(wait)) { _ in nil }
        if output.json { return try printJSON(result) }
        print("\(result.outcome.rawValue): \(result.message)")
        if result.outcome != .done { throw ExitCode.failure }
    }
}

/// Relays a gateway's container journal (the owner must allow it) until it ends.
struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Follow the journal of this vendor's container on a gateway.")

    @OptionGroup var options: ConfigOptions

    @Argument(help: "The gateway's id.")
    var gatewayID: String

    @Option(help: "How long to relay, in seconds (the owner's cap applies).")
    var seconds: Int = 60

    func validate() throws {
        guard Fields.gatewayID.isValid(gatewayID) else { throw ValidationError("gateway id must be \(Fields.gatewayID.form)") }
        guard (1...86_400).contains(seconds) else { throw ValidationError("--seconds must be 1-86400") }
    }

    func run() async throws {
        let (configuration, fleet) = try FleetCLI.load(options)
        let result = try await FleetCLI.send(.logsStart, to: gatewayID, seconds: seconds, configuration: configuration, fleet: fleet,
                                            wait: .seconds(seconds + 30)) { batch in
            for line in batch.lines { print(line) }
            if batch.dropped > 0 { printError("(\(batch.dropped) lines dropped by the gateway's rate limit)") }
            if batch.final { printError("relay ended: \(batch.reason ?? "-")") }
            return batch.final
        }
        if result.outcome != .done {
            printError("Error: \(result.outcome.rawValue): \(result.message)")
            throw ExitCode.failure
        }
    }
}

/// Shared by the fleet commands: the broker settings, and one command's round trip.
enum FleetCLI {
    static func load(_ options: ConfigOptions) throws -> (VendorConfiguration, VendorConfiguration.FleetSettings) {
        let configuration = try options.load()
        guard let fleet = configuration.fleet else { throw refusal("\(options.config) has no fleet section (the vendor's MQTT broker)") }
        return (configuration, fleet)
    }

    static let logger: Logger = {
        var l = Logger(label: "iot-daemon")
        l.logLevel = .warning
        return l
    }()

    /// Publishes the signed command and waits for its result; with `onLogs`, also for log batches until
    /// one says it was the last (the result alone ends a command without logs).
    static func send(_ kind: FleetCommand.Kind, to gatewayID: String, seconds: Int?, configuration: VendorConfiguration,
                     fleet: VendorConfiguration.FleetSettings, wait: Duration,
                     onLogs: @escaping @Sendable (LogBatch) -> Bool?) async throws -> CommandResult {
        let gateway = try await withVendorStore(configuration, create: false, logger: logger) { try await $0.gateway(id: gatewayID) }
        guard let gateway else { throw refusal("gateway \(gatewayID) is not enrolled (or was revoked)") }
        let signer = try SigningKeyFile.load(path: configuration.signingKey)
        let (cmd, payload) = try VendorFleet.command(kind, gatewayID: gatewayID, vendor: configuration.vendor, seconds: seconds,
                                                     lifetime: 600, signer: signer)
        let client = try VendorFleet.client(fleet, clientID: "iotgw-vendor-cli-\(UInt32.random(in: 0...UInt32.max))", cleanSession: true,
                                            logger: logger)
        try client.subscribe(FleetTopics.results(gatewayID), qos: .atLeastOnce)
        if kind == .logsStart { try client.subscribe(FleetTopics.logs(gatewayID), qos: .atLeastOnce) }
        try client.start()
        do {
            let r = try await roundTrip(client, cmd: cmd, payload: payload, publicKey: gateway.publicKey, gatewayID: gatewayID, kind: kind, wait: wait, onLogs: onLogs)
            await client.stop()
            return r
        } catch {
            await client.stop()
            throw error
        }
    }

    static func roundTrip(_ client: MQTTClient, cmd: FleetCommand, payload: Data, publicKey: String, gatewayID: String,
                          kind: FleetCommand.Kind, wait: Duration, onLogs: @escaping @Sendable (LogBatch) -> Bool?) async throws -> CommandResult {
        _ = try Keys.decodePublic(publicKey)
        try await client.waitUntilConnected(timeout: .seconds(10))
        try await client.publish(MQTTMessage(topic: FleetTopics.commands(gatewayID), payload: Array(payload), qos: .atLeastOnce, retain: false),
                                 timeout: .seconds(10))
        let deadline = ContinuousClock.now + wait
        return try await withThrowingTaskGroup(of: CommandResult?.self) { group in
            group.addTask {
                try await Task.sleep(until: deadline)
                return nil
            }
            group.addTask {
                guard let key = try? Keys.decodePublic(publicKey) else { return nil }
                var result: CommandResult?
                var logsDone = kind != .logsStart
                for await event in client.events {
                    guard case .message(let m) = event, let (gw, leaf) = FleetTopics.parse(m.topic), gw == gatewayID else { continue }
                    if leaf == "results", let r = try? SignedDocument.open(m.payload, as: CommandResult.self, domain: Envelope.resultDomain,
                                                                           key: key, what: "result"), r.id == cmd.id {
                        result = r
                        if r.outcome != .done { logsDone = true }
                    } else if leaf == "logs", let b = try? SignedDocument.open(m.payload, as: LogBatch.self, domain: Envelope.logsDomain,
                                                                              key: key, what: "logs"), b.session == cmd.id {
                        if onLogs(b) == true { logsDone = true }
                    }
                    if let result, logsDone { return result }
                }
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            guard let first else { throw refusal("no result from \(gatewayID) within \(wait) (is it online? `iot-daemon gateways`)") }
            return first
        }
    }
}

/// Revokes a gateway: its HTTP requests and its broker connection are refused from now on.
struct RevokeGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke-gateway",
                                                    abstract: "Revoke an enrolled gateway (HTTP requests and the broker refuse it from now on).")

    @OptionGroup var options: ConfigOptions

    @Option(name: .customLong("gateway-id"), help: "The gateway's id.")
    var gatewayID: String

    func validate() throws {
        guard Fields.gatewayID.isValid(gatewayID) else { throw ValidationError("gateway id must be \(Fields.gatewayID.form)") }
    }

    func run() async throws {
        let configuration = try options.load()
        do { try await options.withStore(configuration) { try await $0.revokeGateway(id: gatewayID, at: Date()) } } catch let e as StoreError
            where e.code == .notFound {
            throw refusal(e.message)
        }
        printError("revoked gateway \(gatewayID) (its signed requests are refused)")
        if let argv = configuration.fleet?.revokeCommand {
            try GatewayCertificates.run(argv.map { $0.replacingOccurrences(of: "{gateway}", with: gatewayID) }, what: "revokeCommand")
            printError("the broker refuses \(gatewayID) from now on")
        }
    }
}

struct WithdrawCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "withdraw",
        abstract: "Withdraw everything from a gateway: its next plan grants no device and no app (the gateway decommissions your container).",
        discussion: """
            The plan is signed like any other and reaches the gateway at its next poll (or at once over the \
            fleet channel). The gateway stops your container, detaches its devices and deletes it after its \
            owner's grace period. --undo gives the gateway its devices and apps back (its owner approves them again).
            """
    )

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .customLong("gateway-id"), help: "The gateway's id.")
    var gatewayID: String

    @Flag(name: .long, help: "Give the gateway its devices and apps back.")
    var undo = false

    func validate() throws {
        guard Fields.gatewayID.isValid(gatewayID) else { throw ValidationError("gateway id must be \(Fields.gatewayID.form)") }
    }

    func run() async throws {
        let configuration = try options.load()
        let logger = warningsToStandardError()
        let withdrawal: Withdrawal
        do {
            withdrawal = try await options.withStore(configuration, logger: logger) { store in
                let service = try ProvisioningService.configured(by: configuration, store: store, logger: logger)
                let withdrawal = try await service.setWithdrawn(gatewayID: gatewayID, !undo, logger: logger)
                if let fleet = configuration.fleet, withdrawal.version != withdrawal.previousVersion {
                    do { try await VendorFleet.pushPlans(try await store.plans().filter { $0.gatewayID == gatewayID }, settings: fleet, logger: logger) } catch {
                        printError("warning: plan not pushed to the broker now (\(error)); `serve` pushes it when it reaches it")
                    }
                }
                return withdrawal
            }
        } catch let e as StoreError where e.code == .notFound {
            throw refusal(e.message)
        }
        if output.json { return try printJSON(withdrawal) }
        let plan = withdrawal.version.map { "plan v\($0)" } ?? "no plan yet"
        printError(undo ? "gave \(gatewayID) its devices and apps back (\(plan))"
                        : "withdrew everything from \(gatewayID) (\(plan) grants nothing; the gateway decommissions the container)")
    }
}
