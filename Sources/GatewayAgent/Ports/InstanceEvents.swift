import Foundation
import LXD

/// One lifecycle event about an instance, as LXD's `/1.0/events` reports it.
public struct InstanceEvent: Sendable, Equatable {
    /// The instance the event is about (for `instance-renamed`, the new name).
    public var name: String
    /// LXD's lifecycle action, e.g. `instance-updated`.
    public var action: String

    public init(name: String, action: String) {
        self.name = name
        self.action = action
    }

    /// Actions that never change what an instance is (its config, devices, profiles, run state), so a
    /// copy read before them is still true after. Delivery causes most of them (exec, file pushes): they
    /// must not throw away what reconcile read. `instance-ready` is one a vendor's container sends itself
    /// through /dev/lxd, as often as it likes: were it a change, a vendor could keep its reconcile reading
    /// LXD in a loop. Any other action about an instance counts as a change.
    public static let unchanging: Set<String> = [
        "instance-ready",
        "instance-exec", "instance-file-pushed", "instance-file-retrieved", "instance-file-deleted",
        "instance-log-retrieved", "instance-log-deleted", "instance-console", "instance-console-reset",
        "instance-console-retrieved", "instance-metadata-retrieved", "instance-metadata-template-retrieved",
        "instance-backup-created", "instance-backup-deleted", "instance-backup-renamed", "instance-backup-retrieved",
        "instance-snapshot-created", "instance-snapshot-deleted", "instance-snapshot-renamed", "instance-snapshot-updated",
    ]

    /// Whether the event may mean the instance is no longer what a copy read before it says.
    public var changesInstance: Bool { !Self.unchanging.contains(action) }

    /// The event's instance, from a lifecycle event's `source` (`/1.0/instances/c1`,
    /// `/1.0/instances/c1/snapshots/s`, `/1.0/instances/c1?project=p`); nil when it is about something else.
    public static func instanceName(source: String) -> String? {
        let prefixes = ["/1.0/instances/", "/1.0/containers/", "/1.0/virtual-machines/"]
        guard let prefix = prefixes.first(where: source.hasPrefix) else { return nil }
        let rest = source.dropFirst(prefix.count)
        let name = rest.prefix { $0 != "/" && $0 != "?" }
        return name.isEmpty ? nil : String(name).removingPercentEncoding ?? String(name)
    }
}

/// What an LXD lifecycle event may have changed, as far as the gateway's copies go.
public enum LXDChange: Sendable, Equatable {
    /// One instance.
    case instance(InstanceEvent)
    /// An image or image alias (what `verifyImage` checked may no longer hold).
    case images
    /// Possibly any instance (one was renamed: its old name is gone too).
    case everything
}

/// What LXD says changed. The gateway follows it to know when a copy of an instance it read is out of
/// date (``InstanceCache``). `LXDClient` is the real one.
public protocol InstanceEventSource: Sendable {
    /// Subscribes to LXD's lifecycle events. Calls `subscribed` once LXD took the subscription (events
    /// that come meanwhile wait), then `changed` for every event that may change what the gateway reads,
    /// in LXD's order. Returns when LXD closes the stream; throws when it fails.
    func followInstanceEvents(subscribed: @Sendable () async -> Void, changed: @Sendable (LXDChange) async -> Void) async throws
}

extension LXDClient: InstanceEventSource {
    public func followInstanceEvents(subscribed: @Sendable () async -> Void, changed: @Sendable (LXDChange) async -> Void) async throws {
        try await withEvents([.lifecycle]) { events in
            await subscribed()
            for try await e in events {
                guard let action = e.action else { continue }
                if let source = e.source, let name = InstanceEvent.instanceName(source: source) {
                    await changed(.instance(InstanceEvent(name: name, action: action)))
                    if action == "instance-renamed" { await changed(.everything) }  // the old name changed too
                } else if action.hasPrefix("image-") {
                    await changed(.images)
                }
                // Profile events change only what profiles give instances (their expanded config), which
                // reconcile never compares: it owns what it sets on the instance itself.
            }
        }
    }
}
