import Foundation
import GatewayProtocol
import Logging

/// What publishing a release did.
public struct Publication: Sendable, Equatable, Encodable {
    public var release: AppRelease
    /// The app as the catalog had it before.
    public var previous: AppSpec
    /// Every gateway whose plan carries the app.
    public var gateways: [PlanRefresh]
}

/// One gateway's plan after a release was published.
public struct PlanRefresh: Sendable, Equatable, Encodable {
    public var gatewayID: String
    public var previousVersion: Int
    /// The stored plan's version now (the previous one + 1 when the release changed its content).
    public var version: Int
    /// The run list of the plan's apps (what the gateway's Chef node must have).
    public var runList: [String]
    /// The gateway's Chef node, if it is registered.
    public var node: String?
    /// Whether the provisioner changed the node (its run list) right away.
    public var nodeUpdated: Bool
    /// Why the provisioner could not bring the node in line (the server is down, say); the gateway's next
    /// bootstrap, or publishing again, retries.
    public var error: String?
}

extension ProvisioningService {
    /// Publishes a release of a catalog app (`iot-daemon publish-app`): records it in `app_releases`, so
    /// every plan composed from now on carries the new version and run list; composes the plan of every
    /// gateway whose plan carries the app again (its version goes up when the content changed); and lets
    /// the provisioner follow each of those plans right away (Chef: sets the registered node's run list,
    /// which is how app updates are delivered).
    ///
    /// Running it again with the same release changes no plan and retries the nodes that failed.
    ///
    /// - Parameter runList: the app's run list from this release on; nil keeps the current one.
    /// - Throws: ``ConfigurationError`` when the app is not in the configuration's catalog or the version
    ///   or run list are not acceptable (nothing is recorded then).
    public func publish(app name: String, version: String, runList: [String]?, logger: Logger) async throws -> Publication {
        let baseline = try checkRelease(app: name, version: version, runList: runList)
        if let active = try await store.rollouts().first(where: { $0.app == name && $0.state.isActive }) {
            throw StoreError(.conflict, "rollout \(active.id ?? 0) of \(name) is \(active.state.rawValue): "
                + "let it finish or abort it (`iot-daemon rollout abort \(active.id ?? 0)`) before publishing")
        }
        let before = AppCatalog.effective(baseline: composer.apps, releases: try await store.appReleases().filter { !$0.staged })
        let previous = before.first { $0.name == name } ?? baseline
        let release = try await store.addAppRelease(AppRelease(app: name, version: version, runList: runList ?? previous.runList,
                                                               publishedAt: now()))
        logger.info("app release published", metadata: [
            "app.name": "\(name)", "app.version": "\(version)", "app.previousVersion": "\(previous.version)",
        ])

        var refreshed: [PlanRefresh] = []
        for stored in try await store.plans() {
            var logger = logger
            logger[metadataKey: "gateway.id"] = "\(stored.gatewayID)"
            let carriesApp: Bool
            do { carriesApp = try stored.decodedPlan().apps.contains { $0.name == name } } catch {
                logger.error("stored plan cannot be decoded", metadata: ["error.message": "\(error)"])
                continue
            }
            guard carriesApp, let (composed, _) = try await reissue(gatewayID: stored.gatewayID, gatewayVersion: 0) else { continue }
            if composed.isNewVersion { metrics.planSigned() }
            var entry = PlanRefresh(gatewayID: stored.gatewayID, previousVersion: stored.version, version: composed.plan.version,
                                    runList: AppCatalog.runList(of: composed.plan.apps), node: nil, nodeUpdated: false, error: nil)
            do {
                let change = try await provisioner.planIssued(composed.plan, isNewVersion: composed.isNewVersion, logger: logger)
                entry.nodeUpdated = change != nil
                entry.node = try await store.chefRegistration(gatewayID: stored.gatewayID)?.nodeName
            } catch {
                logger.warning("provisioner did not follow the plan", metadata: ["error.message": "\(error)"])
                entry.node = try? await store.chefRegistration(gatewayID: stored.gatewayID)?.nodeName
                entry.error = "\(error)"
            }
            logger.info("plan refreshed", metadata: [
                "plan.version": "\(composed.plan.version)", "plan.new": "\(composed.isNewVersion)", "chef.nodeUpdated": "\(entry.nodeUpdated)",
            ])
            refreshed.append(entry)
        }
        return Publication(release: release, previous: previous, gateways: refreshed)
    }

    /// Checks a release the way gateways check plans (a release they would refuse is never recorded): the
    /// app is in the configuration's catalog, the version is `Fields.version`, the run list has 1 to
    /// `PlanValidator.maxRunListItems` valid entries.
    /// - Returns: the app as the configuration's catalog has it.
    /// - Throws: ``ConfigurationError`` naming the field.
    func checkRelease(app name: String, version: String, runList: [String]?) throws -> AppSpec {
        guard let baseline = composer.apps.first(where: { $0.name == name }) else {
            let known = composer.apps.map(\.name).joined(separator: ", ")
            throw ConfigurationError(.invalidField, field: "app", "\"\(name)\" is not in the catalog (apps: \(known.isEmpty ? "none" : known))")
        }
        guard Fields.version.isValid(version) else {
            throw ConfigurationError(.invalidField, field: "version", "\(Fields.quote(version)) must be \(Fields.version.form)")
        }
        if let runList {
            guard (1...PlanValidator.maxRunListItems).contains(runList.count) else {
                throw ConfigurationError(.invalidField, field: "runList", "must name 1-\(PlanValidator.maxRunListItems) recipes or roles")
            }
            for entry in runList where !Fields.runListItem.isValid(entry) {
                throw ConfigurationError(.invalidField, field: "runList", "\(Fields.quote(entry)) is not a run-list entry like recipe[name@1.2.3] or role[name]")
            }
        }
        return baseline
    }
}

/// What withdrawing from (or giving back to) one gateway did to its plan.
public struct Withdrawal: Sendable, Equatable, Encodable {
    public var gatewayID: String
    public var withdrawn: Bool
    /// The plan's version before and now; nil when the gateway has no plan yet (it gets one, empty while
    /// withdrawn, when it next announces).
    public var previousVersion: Int?
    public var version: Int?
}

extension ProvisioningService {
    /// Withdraws everything from a gateway (`iot-daemon withdraw`), or gives it back (`--undo`): records it,
    /// then composes the gateway's plan again, signed like any other. While withdrawn the plan grants no
    /// device and no app; the gateway takes that signed empty plan as decommissioning this vendor's
    /// container (it stops it, detaches its devices, and deletes it after the owner's grace period).
    /// Given back, the plan grants the gateway's devices again, which the owner approves anew.
    ///
    /// - Throws: ``StoreError`` `notFound` when the gateway is not enrolled (or was revoked).
    public func setWithdrawn(gatewayID: String, _ withdrawn: Bool, logger: Logger) async throws -> Withdrawal {
        let before = try await store.plan(gatewayID: gatewayID)
        try await store.setWithdrawn(gatewayID: gatewayID, at: withdrawn ? now() : nil)
        var logger = logger
        logger[metadataKey: "gateway.id"] = "\(gatewayID)"
        logger.notice(withdrawn ? "gateway withdrawn" : "gateway given back")
        let reissued = try await reissue(gatewayID: gatewayID, gatewayVersion: 0)
        if let (composed, _) = reissued { await issued(composed, logger: logger) }
        return Withdrawal(gatewayID: gatewayID, withdrawn: withdrawn, previousVersion: before?.version, version: reissued?.0.plan.version)
    }
}
