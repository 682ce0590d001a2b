extension InSpecReport {
    /// The profiles named on the command line: those without `parent_profile`, plus any whose
    /// `parent_profile` names no profile in the report (counted rather than silently dropped).
    public var topLevelProfiles: [Profile] {
        let names = Set(profiles.compactMap(\.name))
        return profiles.filter { p in p.parentProfile.map { !names.contains($0) } ?? true }
    }

    /// One verdict per control, de-duplicated across wrapper and dependency profiles.
    ///
    /// A wrapper profile that includes controls from a dependency (`include_controls`,
    /// `require_controls`) lists them itself, and the dependency appears again as a separate
    /// profile with `parent_profile` set, so the same control ID can show up twice. The rule
    /// follows InSpec's own `json-merged` reporter (`lib/inspec/reporters/json_merged.rb`), except
    /// that the wrapper's title and impact are kept where json-merged copies the dependency's:
    ///
    /// - Controls are counted under their top-level profile only, in report order; each
    ///   dependency is attached to its top-level ancestor by following `parent_profile`.
    /// - The top-level profile's view wins: its `title` and `impact` (the wrapper's overrides)
    ///   and its results. Only when the top-level entry has no results and a dependency entry
    ///   with the same ID has some (older InSpec attached results to the defining profile) are
    ///   the dependency's results used.
    /// - Controls that appear only in a dependency are not counted: the wrapper did not include
    ///   them (`require_controls` picks a subset). json-merged drops them too.
    /// - A profile whose `parent_profile` names no profile in the report is treated as top-level
    ///   rather than silently dropped.
    public func controlVerdicts() -> [ControlVerdict] {
        let byName = Dictionary(profiles.compactMap { p in p.name.map { ($0, p) } }, uniquingKeysWith: { a, _ in a })

        // The top-level ancestor of `profile`; nil when `parent_profile` links form a cycle.
        func root(of profile: Profile) -> Profile? {
            var current = profile
            var seen: Set<String> = []
            while let parent = current.parentProfile, let next = byName[parent] {
                guard seen.insert(parent).inserted else { return nil }
                current = next
            }
            return current
        }

        let roots = topLevelProfiles

        // Results per (root, control ID) found in dependency entries, first non-empty wins.
        var dependencyResults: [Key: [ControlResult]] = [:]
        for p in profiles where p.isDependency {
            guard let r = root(of: p) else { continue }
            for c in p.controls where !c.results.isEmpty {
                let key = Key(profile: r.name, id: c.id)
                if dependencyResults[key] == nil { dependencyResults[key] = c.results }
            }
        }

        var seen: Set<Key> = []
        var verdicts: [ControlVerdict] = []
        for p in roots {
            for c in p.controls {
                let key = Key(profile: p.name, id: c.id)
                guard seen.insert(key).inserted else { continue }
                let results = c.results.isEmpty ? (dependencyResults[key] ?? []) : c.results
                verdicts.append(ControlVerdict(id: c.id, profile: p.name, title: c.title, impact: c.impact,
                                               results: results))
            }
        }
        return verdicts
    }

    /// Profiles that could not be loaded (`status: failed`), with their status message.
    public var failedProfiles: [Profile] { profiles.filter { $0.status == Profile.LoadStatus.failed } }

    /// Profiles skipped as a whole (`status: skipped`, e.g. unsupported platform).
    public var skippedProfiles: [Profile] { profiles.filter { $0.status == Profile.LoadStatus.skipped } }

    private struct Key: Hashable {
        var profile: String?
        var id: String
    }
}

extension InSpecMinReport {
    /// One verdict per control: json-min's per-result entries grouped by (`profile_id`, `id`),
    /// in order of first appearance. json-min has no titles or impacts, so those are nil.
    public func controlVerdicts() -> [ControlVerdict] {
        var order: [Key] = []
        var grouped: [Key: [InSpecReport.ControlResult]] = [:]
        for entry in controls {
            let key = Key(profile: entry.profileID, id: entry.id)
            if grouped[key] == nil { order.append(key) }
            grouped[key, default: []].append(entry.asResult)
        }
        return order.map { key in
            ControlVerdict(id: key.id, profile: key.profile, title: nil, impact: nil, results: grouped[key] ?? [])
        }
    }

    private struct Key: Hashable {
        var profile: String?
        var id: String
    }
}
