import Foundation
import GatewayProtocol
import Synchronization

/// Remembers, per gateway, the plan inputs for which ``PlanComposer`` last found the stored plan unchanged,
/// so that a poll reading the very same inputs again skips composing, hashing the content and decoding the
/// stored plan: it is answered with the stored signed bytes at once.
///
/// Keyed on what the store returned, never on local events: an entry is used only when the inputs read for
/// this poll (devices, releases, and the stored plan itself with its version, content hash and signed bytes)
/// equal the ones the entry was made from, so a change made by this replica, another replica or the CLI
/// (a new release, a rollout pin, a new plan version) misses it and the plan is composed again. The time
/// and version rules (``PlanComposer/answersAgain(_:gatewayVersion:now:)``) are checked on every poll, so an
/// entry never serves a plan nearing its expiry or one below the version the gateway holds.
final class UnchangedPlans: Sendable {
    struct Entry: Sendable {
        /// The inputs the composer found the stored plan unchanged for (`previous` is that plan).
        var inputs: PlanInputs
        /// The stored plan, decoded (its expiry and version decide whether it may be answered again).
        var plan: ProvisioningPlan
        var omitted: [String]
    }

    private let entries: BoundedCache<Entry>

    /// - Parameter capacity: at most this many gateways are remembered (a few KiB each).
    init(capacity: Int = 10_000) { entries = BoundedCache(capacity: capacity) }

    /// The entry for exactly these inputs, if any, whatever generation either was read at (a raised count
    /// may come from a change that left this gateway's inputs as they were: another gateway's release pin,
    /// a device registered for someone else). A match is remembered under the new generation.
    func entry(for inputs: PlanInputs, gatewayID: String) -> Entry? {
        guard var entry = entries.value(for: gatewayID) else { return nil }
        var known = entry.inputs
        known.generation = inputs.generation
        guard known == inputs else { return nil }
        if entry.inputs.generation != inputs.generation {
            entry.inputs = inputs
            entries.set(entry, for: gatewayID)
        }
        return entry
    }

    /// The entry whose inputs were read at `generation`, if any: no input changed since (``PlanGeneration``),
    /// so the inputs read now would be the entry's own.
    func entry(for generation: PlanGeneration, gatewayID: String) -> Entry? {
        guard let entry = entries.value(for: gatewayID), entry.inputs.generation == generation else { return nil }
        return entry
    }

    func remember(_ entry: Entry, gatewayID: String) { entries.set(entry, for: gatewayID) }

    var count: Int { entries.count }
}

/// A dictionary of at most `capacity` entries shared between tasks; past it an arbitrary entry is forgotten.
final class BoundedCache<Value: Sendable>: Sendable {
    private let entries = Mutex<[String: Value]>([:])
    let capacity: Int

    init(capacity: Int = 10_000) { self.capacity = max(1, capacity) }

    func value(for key: String) -> Value? { entries.withLock { $0[key] } }

    func set(_ value: Value, for key: String) {
        entries.withLock { entries in
            if entries[key] == nil, entries.count >= capacity, let any = entries.keys.first { entries[any] = nil }
            entries[key] = value
        }
    }

    func remove(_ key: String) { _ = entries.withLock { $0.removeValue(forKey: key) } }

    var count: Int { entries.withLock { $0.count } }
}
