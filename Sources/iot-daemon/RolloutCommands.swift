import ArgumentParser
import Foundation
import GatewayProtocol
import Logging
import VendorService

// MARK: Groups

/// `iot-daemon group create|add|remove|list`: gateways a vendor targets together.
struct GroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "Manage groups of gateways (targets of rollouts).",
        subcommands: [Create.self, Add.self, Remove.self, List.self], defaultSubcommand: List.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a group (creating one that exists does nothing).")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The group's name.") var name: String

        func validate() throws { try GroupCommand.check(name) }

        func run() async throws {
            let configuration = try options.load()
            try await options.withStore(configuration) { try await $0.createGroup(name: name, at: Date()) }
            printError("group \(name) exists")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add enrolled gateways to a group.")
        @OptionGroup var members: Members

        func run() async throws {
            try await members.change("added", "to") { try await $0.addToGroup(name: $1, gatewayIDs: $2) }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove gateways from a group.")
        @OptionGroup var members: Members

        func run() async throws {
            try await members.change("removed", "from") { try await $0.removeFromGroup(name: $1, gatewayIDs: $2) }
        }
    }

    /// A group and gateways, as `add` and `remove` take them.
    struct Members: ParsableArguments {
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The group's name.") var name: String
        @Argument(help: "Gateway ids (gw-<16 hex digits>).") var gateways: [String]

        func validate() throws { try GroupCommand.check(name, gateways) }

        func change(_ done: String, _ preposition: String,
                    _ body: @Sendable (any VendorStore, String, [String]) async throws -> Void) async throws {
            let configuration = try options.load()
            try await GroupCommand.refusingStoreErrors {
                try await options.withStore(configuration) { try await body($0, name, gateways) }
            }
            printError("\(done) \(gateways.count) gateway(s) \(preposition) \(name)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List groups and their members.")
        @OptionGroup var options: ConfigOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let configuration = try options.load()
            let groups = try await options.withStore(configuration) { try await $0.groups() }
            if output.json { return try printJSON(groups) }
            printTable(["GROUP", "GATEWAYS", "MEMBERS"], groups.map { [$0.name, "\($0.members.count)", $0.members.joined(separator: ",")] })
        }
    }

    static func check(_ name: String, _ gateways: [String] = []) throws {
        guard Fields.name.isValid(name) else { throw ValidationError("group name must be \(Fields.name.form)") }
        for id in gateways where !Fields.gatewayID.isValid(id) {
            throw ValidationError("\(Fields.quote(id)) is not a gateway id (\(Fields.gatewayID.form))")
        }
    }

    /// A missing group or gateway, an active rollout: the operator's mistake, said without a stack of types.
    static func refusingStoreErrors<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as StoreError where error.code == .notFound || error.code == .conflict {
            throw refusal(error.message)
        } catch let error as ConfigurationError {
            throw refusal(error.description)
        }
    }
}

// MARK: Rollouts

/// `iot-daemon rollout start|status|pause|resume|abort`: staged rollouts of an app release.
struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout", abstract: "Roll an app release out in stages, halting by itself when a stage fails.",
        discussion: """
            A rollout changes the plans of one stage's gateways at a time and waits for their delivery reports \
            (delivered, rolled-back, failed). A stage passes when all its gateways reported (or, after \
            --stage-timeout, when --min-reports did) with at most --max-failure-rate failures; it fails as \
            soon as more failed. A failed stage halts the rollout and puts every gateway it reached back on the \
            previous release (--on-failure pause stops instead). `iot-daemon serve` drives rollouts (every \
            replica may); the commands here act at once as well.
            """,
        subcommands: [Start.self, Status.self, Pause.self, Resume.self, Abort.self], defaultSubcommand: Status.self)

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a rollout; prints its id on standard output.")
        @OptionGroup var options: ConfigOptions
        @OptionGroup var output: OutputOptions

        @Option(help: "An app name from the configuration's catalog.") var app: String
        @Option(help: "The release's version, e.g. 1.1.0.") var version: String
        @Option(name: .customLong("run-list"), parsing: .upToNextOption, help: "The release's run list (default: the current one).")
        var runList: [String] = []
        @Option(help: "Stages, in order: canary (the group of that name), @GROUP, N% or a count; the last must reach every target.")
        var stages: String = "canary,25%,100%"
        @Option(name: .customLong("max-failure-rate"), help: "Failures a stage may have, e.g. 10%.") var maxFailureRate: String = "10%"
        @Option(name: .customLong("min-reports"), help: "Reports a stage needs before it is judged.") var minReports: Int = 5
        @Option(name: .customLong("stage-timeout"), help: "Seconds a stage may wait for its reports before the rollout pauses.")
        var stageTimeout: Int = 3600
        @Option(name: .customLong("on-failure"), help: "revert (default) or pause.") var onFailure: String = "revert"
        @Option(help: "Only this group's gateways.") var group: String?

        func validate() throws {
            guard Fields.version.isValid(version) else { throw ValidationError("--version must be \(Fields.version.form)") }
            for entry in runList where !Fields.runListItem.isValid(entry) {
                throw ValidationError("--run-list \(Fields.quote(entry)) is not a run-list entry like 'recipe[name@1.2.3]' or 'role[name]'")
            }
            _ = try rate()
            guard Rollout.OnFailure(rawValue: onFailure) != nil else { throw ValidationError("--on-failure must be revert or pause") }
            guard minReports >= 1 else { throw ValidationError("--min-reports must be at least 1") }
        }

        func rate() throws -> Double {
            let text = maxFailureRate.hasSuffix("%") ? String(maxFailureRate.dropLast()) : maxFailureRate
            guard let value = Double(text), (0...100).contains(value) else {
                throw ValidationError("--max-failure-rate must be a percentage 0%-100%, e.g. 10%")
            }
            return maxFailureRate.hasSuffix("%") || value > 1 ? value / 100 : value
        }

        func run() async throws {
            let request = RolloutService.Request(
                app: app, version: version, runList: runList.isEmpty ? nil : runList,
                stages: stages.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }, maxFailureRate: try rate(),
                minReports: minReports, stageTimeoutSeconds: stageTimeout, onFailure: Rollout.OnFailure(rawValue: onFailure)!, group: group)
            let status = try await RolloutCommand.withService(options) { service, logger in try await service.start(request, logger: logger) }
            if output.json { return try printJSON(status) }
            print(status.rollout.id ?? 0)
            RolloutCommand.describe(status)
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one rollout's stages, or list every rollout.")
        @OptionGroup var options: ConfigOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "A rollout id (default: every rollout).") var id: Int64?

        func run() async throws {
            let statuses = try await RolloutCommand.withService(options) { service, _ in
                if let id { return [try await service.status(id: id)] }
                return try await service.statuses()
            }
            if output.json { return try id == nil ? printJSON(statuses) : printJSON(statuses[0]) }
            if id == nil {
                printTable(["ID", "APP", "VERSION", "STATE", "STAGE", "REPORTED", "FAILED", "MESSAGE"], statuses.map { s in
                    let r = s.rollout
                    let all = s.stages.map(\.health)
                    return ["\(r.id ?? 0)", r.app, r.version, r.state.rawValue, "\(r.stage + 1)/\(r.stages.count) \(r.stages[r.stage])",
                            "\(all.map(\.reported).reduce(0, +))/\(all.map(\.gateways).reduce(0, +))", "\(all.map(\.failed).reduce(0, +))",
                            Fields.displayText(r.message, max: 120)]
                })
            } else {
                RolloutCommand.describe(statuses[0], toStandardOutput: true)
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pause a running rollout (gateways reached keep the release).")
        @OptionGroup var target: Target
        func run() async throws { try await target.act { try await $0.pause(id: $1, logger: $2) } }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a paused rollout.")
        @OptionGroup var target: Target
        func run() async throws { try await target.act { try await $0.resume(id: $1, logger: $2) } }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Abort a rollout: every gateway it reached goes back to the previous release.")
        @OptionGroup var target: Target
        func run() async throws { try await target.act { try await $0.abort(id: $1, logger: $2) } }
    }

    /// The rollout `pause`, `resume` and `abort` act on; each prints the rollout as it is afterwards.
    struct Target: ParsableArguments {
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The rollout's id.") var id: Int64

        func act(_ action: (RolloutService, Int64, Logger) async throws -> RolloutService.Status) async throws {
            RolloutCommand.describe(try await RolloutCommand.withService(options) { service, logger in try await action(service, id, logger) })
        }
    }

    /// Calls `body` with the configured rollout service; warnings go to standard error; a bad request, a
    /// missing rollout or a conflicting state is refused with its message.
    static func withService<T: Sendable>(_ options: ConfigOptions,
                                         _ body: (RolloutService, Logger) async throws -> T) async throws -> T {
        let configuration = try options.load()
        let logger = warningsToStandardError()
        return try await GroupCommand.refusingStoreErrors {
            try await options.withStore(configuration, logger: logger) { store in
                let provisioning = try ProvisioningService.configured(by: configuration, store: store, logger: logger)
                return try await body(RolloutService(provisioning: provisioning), logger)
            }
        }
    }

    /// The rollout's state and a table of its stages.
    static func describe(_ status: RolloutService.Status, toStandardOutput: Bool = false) {
        let r = status.rollout
        let line = "rollout \(r.id ?? 0): \(r.app) \(r.version) \(r.state.rawValue), stage \(r.stage + 1) of \(r.stages.count)"
            + (r.message.isEmpty ? "" : " (\(Fields.displayText(r.message, max: 200)))")
        if toStandardOutput { print(line) } else { printError(line) }
        let rows = status.stages.enumerated().map { i, s in
            [i == r.stage && r.state.isActive ? "> \(s.name)" : "  \(s.name)", "\(s.health.gateways)", "\(s.health.reached)",
             "\(s.health.reported)", "\(s.health.failed)", "\(s.health.reverted)"]
        }
        if toStandardOutput {
            printTable(["STAGE", "GATEWAYS", "REACHED", "REPORTED", "FAILED", "REVERTED"], rows)
        } else {
            for row in [["STAGE", "GATEWAYS", "REACHED", "REPORTED", "FAILED", "REVERTED"]] + rows { printError(row.joined(separator: "\t")) }
        }
    }
}
