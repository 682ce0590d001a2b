import Foundation
import GatewayProtocol

/// What the gateway asks of a vendor's IoT Daemon. Every call is gateway-initiated (gateways sit
/// behind NAT) and returns the vendor's raw answer: nothing a vendor sends is trusted before the
/// caller validated it (`PlanValidator`, `BundleValidator`).
public protocol VendorAPI: Sendable {
    /// Announces a device; the raw answer is a signed plan.
    func announce(_ announcement: Announcement, to vendor: GatewayConfig.VendorEntry) async throws -> Data
    /// Asks for the vendor's current plan for this gateway (raw signed plan).
    func currentPlan(_ request: PlanRequest, from vendor: GatewayConfig.VendorEntry) async throws -> Data
    /// Fetches the signed bootstrap bundle for a plan version (raw `SignedBootstrap`).
    func bootstrap(_ request: BootstrapRequest, from vendor: GatewayConfig.VendorEntry) async throws -> Data
    /// Reports what was done with a plan.
    func report(_ report: ProvisioningReport, to vendor: GatewayConfig.VendorEntry) async throws
}

/// Why talking to a vendor's IoT Daemon failed.
public struct VendorError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Network or server trouble: worth retrying with backoff.
        case unreachable
        /// The vendor refused (not genuine, gateway not enrolled...): retrying will not help.
        case refused(code: String)
    }
    public var kind: Kind
    /// Safe to show: anything the vendor said in it is escaped.
    public var message: String

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String {
        switch kind {
        case .unreachable: message
        case .refused(let code): "\(code): \(message)"
        }
    }

    public var isRetryable: Bool { kind == .unreachable }
    public var refusalCode: String? { if case .refused(let c) = kind { c } else { nil } }
}
