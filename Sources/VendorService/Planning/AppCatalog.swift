import GatewayProtocol

/// The app catalog plans are composed from: the configuration's `apps` (the baseline) with the newest
/// release of each app applied. Pure, like ``PlanComposer``.
public enum AppCatalog {
    /// The baseline with each app's version and run list replaced by its newest release (highest id,
    /// then latest `publishedAt`). The baseline decides which apps exist and their InSpec profile: a
    /// release of an app no longer in the configuration is ignored.
    public static func effective(baseline: [AppSpec], releases: [AppRelease]) -> [AppSpec] {
        var newest: [String: AppRelease] = [:]
        for release in releases {
            if let current = newest[release.app], Self.isOlder(release, than: current) { continue }
            newest[release.app] = release
        }
        return baseline.map { app in
            guard let release = newest[app.name] else { return app }
            return AppSpec(name: app.name, version: release.version, runList: release.runList, inspecProfile: app.inspecProfile)
        }
    }

    private static func isOlder(_ a: AppRelease, than b: AppRelease) -> Bool {
        switch (a.id, b.id) {
        case let (x?, y?): x < y
        default: a.publishedAt < b.publishedAt
        }
    }

    /// The run list a plan's apps converge with: their run lists concatenated in the plan's app order
    /// (sorted by name), each entry once (its first occurrence). This is the node's run list on the
    /// Chef server and the `runList` of every bootstrap answer.
    public static func runList(of apps: [AppSpec]) -> [String] {
        var seen = Set<String>()
        return apps.flatMap(\.runList).filter { seen.insert($0).inserted }
    }
}

extension PlanComposer {
    /// This composer with the releases applied to its catalog (``AppCatalog/effective(baseline:releases:)``).
    public func applying(_ releases: [AppRelease]) -> PlanComposer {
        var copy = self
        copy.apps = AppCatalog.effective(baseline: apps, releases: releases)
        return copy
    }
}
