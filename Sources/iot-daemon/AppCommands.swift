import ArgumentParser
import Foundation
import GatewayProtocol
import Logging
import VendorService

/// Publishes an app update: the next plans carry it, registered Chef nodes get the new run list now.
struct PublishAppCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish-app",
        abstract: "Publish a new version of a catalog app to every gateway that runs it.",
        discussion: """
            Records the release (it overrides the app's version and run list in the configuration's catalog), \
            composes the plan of every gateway running the app again (its version goes up), and sets the run \
            list of every registered Chef node right away. Prints one line per gateway. Running it again \
            with the same release changes no plan and retries the nodes that failed.
            """
    )

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .long, help: "An app name from the configuration's catalog.")
    var app: String

    @Option(name: .long, help: "The new version, e.g. 1.1.0.")
    var version: String

    @Option(name: .customLong("run-list"), parsing: .upToNextOption,
            help: "The new version's run list, in order, e.g. 'recipe[thermo_agent@1.1.0]' (default: the current run list).")
    var runList: [String] = []

    func validate() throws {
        guard Fields.version.isValid(version) else { throw ValidationError("--version must be \(Fields.version.form)") }
        for entry in runList where !Fields.runListItem.isValid(entry) {
            throw ValidationError("--run-list \(Fields.quote(entry)) is not a run-list entry like 'recipe[name@1.2.3]' or 'role[name]'")
        }
    }

    func run() async throws {
        let configuration = try options.load()
        guard configuration.app(named: app) != nil else {
            let known = configuration.apps.map(\.name).joined(separator: ", ")
            throw refusal("app \"\(app)\" is not in \(options.config) (apps: \(known.isEmpty ? "none" : known))")
        }
        // Warnings (a node that could not be updated, say) go to standard error with the status lines.
        let logger = warningsToStandardError()
        let publication = try await options.withStore(configuration, logger: logger) { store in
            let service = try ProvisioningService.configured(by: configuration, store: store, logger: logger)
            let publication = try await service.publish(app: app, version: version, runList: runList.isEmpty ? nil : runList, logger: logger)

            // Connected gateways get their new plans pushed now (`serve` would within its check interval).
            if let fleet = configuration.fleet {
                let changed = Set(publication.gateways.filter { $0.version != $0.previousVersion }.map(\.gatewayID))
                let plans = try await store.plans().filter { changed.contains($0.gatewayID) }
                do { try await VendorFleet.pushPlans(plans, settings: fleet, logger: logger) } catch {
                    printError("warning: plans not pushed to the broker now (\(error)); `serve` pushes them when it reaches it")
                }
            }
            return publication
        }
        let release = publication.release
        printError("published \(release.app) \(release.version) (was \(publication.previous.version)), run list: "
            + release.runList.joined(separator: ","))
        if output.json {
            try printJSON(publication)
        } else if publication.gateways.isEmpty {
            printError("no gateway runs \(release.app) yet")
        } else {
            printTable(["GATEWAY", "PLAN", "NODE", "RESULT"], publication.gateways.map { g in
                let plan = g.version == g.previousVersion ? "v\(g.version) (unchanged)" : "v\(g.previousVersion) -> v\(g.version)"
                let result: String
                if let error = g.error {
                    result = "node not updated: \(error)"
                } else if g.node == nil {
                    result = configuration.chef == nil ? "plan only (no Chef server configured)" : "plan only (not bootstrapped yet)"
                } else {
                    result = (g.nodeUpdated ? "run list set: " : "run list already current: ") + g.runList.joined(separator: ",")
                }
                return [g.gatewayID, plan, g.node ?? "-", result]
            })
        }
        let failed = publication.gateways.filter { $0.error != nil }.count
        if failed > 0 {
            printError("Error: \(failed) node(s) not updated; their gateways' next bootstrap updates them, or publish again")
            throw ExitCode.failure
        }
    }
}

/// The catalog as plans are composed from it: the configuration's apps with the newest releases applied.
struct AppsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apps", abstract: "List the app catalog with published releases applied.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    /// An app as listed: its effective spec and the release it comes from, if any.
    struct Entry: Encodable {
        var app: AppSpec
        var release: AppRelease?
    }

    func run() async throws {
        let configuration = try options.load()
        // A rollout's staged release is not current until the rollout completes (`rollout status` shows it).
        let releases = try await options.withStore(configuration) { try await $0.appReleases() }.filter { !$0.staged }
        let effective = AppCatalog.effective(baseline: configuration.apps, releases: releases)
        let entries = effective.map { app in Entry(app: app, release: releases.last { $0.app == app.name }) }
        if output.json { return try printJSON(entries) }
        printTable(["APP", "VERSION", "SOURCE", "RUN LIST"], entries.map { e in
            [e.app.name, e.app.version, e.release.map { "published \($0.publishedAt.iso8601)" } ?? "configuration",
             e.app.runList.joined(separator: ",")]
        })
    }
}
