import Foundation
import GatewayProtocol

/// What the owner's CLI receives over the control socket. Stable JSON for `--json`.
public enum ControlAPI {
    /// A pending (or decided) plan, shown exactly as the vendor would get it.
    public struct Approval: Sendable, Codable, Equatable {
        public struct DeviceLine: Sendable, Codable, Equatable {
            public var serial: String
            public var kind: String
            public var usbID: String
            /// Where it is on the gateway now (if plugged).
            public var hostNode: String?
            /// Where it appears inside the container.
            public var containerPath: String?
        }
        public struct AppLine: Sendable, Codable, Equatable {
            public var name: String
            public var version: String
            public var runList: [String]
            public var inspecProfile: String?
        }
        public var id: Int64
        public var vendor: String
        public var vendorName: String?
        public var planVersion: Int
        public var decision: String
        public var decidedBy: String?
        public var receivedAt: Date
        public var expiresAt: Date
        /// The vendor's signature was re-checked with the key in the gateway configuration.
        public var signatureVerified: Bool
        public var container: String
        public var image: String
        public var imageFingerprint: String
        public var cpus: Int
        public var memoryMiB: Int
        public var diskMiB: Int
        public var processes: Int
        public var network: String
        public var privileged: Bool
        public var nesting: Bool
        public var devices: [DeviceLine]
        public var apps: [AppLine]
        /// SHA-256 of the exact plan bytes shown: `approve` sends it back and the daemon approves only that.
        public var digest: String
        /// The plan version approved before, if any, and what this plan changes from it.
        public var approvedPlanVersion: Int?
        public var changes: [String]?
    }

    public struct Device: Sendable, Codable, Equatable {
        public var syspath: String
        public var subsystem: String
        public var devnode: String?
        public var usbID: String?
        public var serial: String?
        public var product: String?
        public var vendor: String?
        public var present: Bool
        public var state: String
        public var error: String?
    }

    public struct Vendor: Sendable, Codable, Equatable {
        public var id: String
        public var name: String?
        public var policy: String
        public var daemonURL: String
        public var lastPlanVersion: Int?
        public var approvedPlanVersion: Int?
        public var appliedPlanVersion: Int?
        public var container: String?
        /// LXD's view: `Running`, `Stopped`, `absent`, or `unknown` if LXD is unreachable.
        public var containerStatus: String?
        public var addresses: [String]
        public var attachedDevices: [String]
        public var error: String?
        /// Plan version whose apps were last delivered, and how it went.
        public var deliveredPlanVersion: Int?
        /// `applied`, `rolled-back` or `failed`, with the reason.
        public var delivery: String?
        public var failingControls: [String]
        /// Why the vendor's last plan or answer was refused, and when.
        public var rejection: String?
        public var rejectedAt: Date?
        /// A delivery under way (its phase) or waiting to retry (when).
        public var deliveryPhase: String?
        public var nextDeliveryAt: Date?
        /// The vendor's broker connection: `connected`, `disconnected`, or nil without a broker; and a log relay running.
        public var fleet: String? = nil
        public var logRelay: Bool? = nil
        /// The last delivery's phases and when it started (see ``DeliveryReport/phases``).
        public var deliveryPhases: [DeliveryPhase]? = nil
        public var deliveryStartedAt: Date? = nil
    }

    /// What `POST /v1/vendors/{id}/logs-stop` did.
    public struct Stopped: Sendable, Codable, Equatable {
        public var stopped: Bool
    }

    /// What `POST /v1/vendors/{id}/remove` deleted.
    public struct Removed: Sendable, Codable, Equatable {
        public var containers: [String]
    }

    public struct Status: Sendable, Codable, Equatable {
        public var gatewayID: String
        public var publicKey: String
        /// `up, LXD <version>`, or `down since <time> (<what failed>)`: the gateway's work on containers
        /// waits meanwhile and resumes when LXD answers again.
        public var lxd: String
        public var vendors: [Vendor]
        public var devices: [Device]
        public var pendingApprovals: [Approval]
        /// Vendor images being downloaded now (absent when none).
        public var imageDownloads: [ImageDownload]?
        /// Since when LXD is down, as the agent saw it (nil: up).
        public var lxdDownSince: Date? = nil
    }

    public struct Decision: Sendable, Codable, Equatable {
        public var approve: Bool
        /// Required to approve: the `digest` of the approval as shown to the owner.
        public var digest: String?
        public init(approve: Bool, digest: String? = nil) {
            self.approve = approve
            self.digest = digest
        }
    }

    public static func encoder() -> JSONEncoder {
        let e = WireJSON.encoder()
        e.outputFormatting.insert(.prettyPrinted)
        return e
    }
}
