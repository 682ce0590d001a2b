import Foundation

/// What the gateway tells a vendor about a plugged device (from udev).
public struct DeviceIdentity: Sendable, Hashable, Codable {
    /// USB vendor ID, 4 lowercase hex digits.
    public var vendorID: String
    /// USB product ID, 4 lowercase hex digits.
    public var productID: String
    /// USB serial number string; the key a vendor's registry knows its devices by.
    public var serial: String
    public var manufacturer: String?
    public var product: String?
    /// `tty` or `usb`: which kind of node the gateway saw.
    public var subsystem: String

    public init(vendorID: String, productID: String, serial: String, manufacturer: String? = nil, product: String? = nil,
                subsystem: String) {
        self.vendorID = vendorID.lowercased()
        self.productID = productID.lowercased()
        self.serial = serial
        self.manufacturer = manufacturer
        self.product = product
        self.subsystem = subsystem
    }
}

/// `POST /v1/announce`: the gateway asks the vendor what to provision for a device.
public struct Announcement: Sendable, Codable, Equatable {
    public var gatewayID: String
    public var device: DeviceIdentity
    /// The highest plan version this gateway holds from this vendor (0 if none).
    public var currentPlanVersion: Int

    public init(gatewayID: String, device: DeviceIdentity, currentPlanVersion: Int) {
        self.gatewayID = gatewayID
        self.device = device
        self.currentPlanVersion = currentPlanVersion
    }
}

/// `POST /v1/report`: what the gateway did with a plan.
public struct ProvisioningReport: Sendable, Codable, Equatable {
    public enum Outcome: String, Sendable, Codable {
        case applied, failed, denied, deviceDetached = "device-detached"
        /// Apps converged and validated (or validation skipped by policy).
        case delivered
        /// A converge or validation failed and the container was restored to its snapshot.
        case rolledBack = "rolled-back"
    }
    public var gatewayID: String
    public var vendor: String
    public var planVersion: Int
    public var outcome: Outcome
    public var container: String?
    public var addresses: [String]
    /// Serials of the vendor's devices attached to the container now.
    public var attachedDevices: [String]
    public var error: String?
    /// Present when apps were delivered (converge, validation, rollback).
    public var delivery: DeliverySummary?

    public init(gatewayID: String, vendor: String, planVersion: Int, outcome: Outcome, container: String? = nil,
                addresses: [String] = [], attachedDevices: [String] = [], error: String? = nil, delivery: DeliverySummary? = nil) {
        self.gatewayID = gatewayID
        self.vendor = vendor
        self.planVersion = planVersion
        self.outcome = outcome
        self.container = container
        self.addresses = addresses
        self.attachedDevices = attachedDevices
        self.error = error
        self.delivery = delivery
    }
}

/// An error a service answers with: `{"error": {"code": "...", "message": "..."}}`.
public struct ErrorBody: Sendable, Codable, Equatable {
    public struct Detail: Sendable, Codable, Equatable {
        public var code: String
        public var message: String
    }
    public var error: Detail

    public init(code: String, message: String) { error = Detail(code: code, message: message) }
}

extension ProvisioningReport {
    public static let maxTextLength = 2048
    public static let maxControls = 512

    /// Checks every field against ``Fields`` (the vendor validates what a gateway reports before
    /// storing or showing it; the gateway builds its reports from values that pass the same rules).
    public func validate() throws {
        try Fields.gatewayID.check(gatewayID, at: "gatewayID")
        try Fields.vendorID.check(vendor, at: "vendor")
        guard (0...Int(Int32.max)).contains(planVersion) else { throw ProtocolError(.invalidField, "planVersion is out of range") }
        if let container { try Fields.name.named("container").check(container, at: "container") }
        guard addresses.count <= 16, attachedDevices.count <= PlanValidator.maxDevices else {
            throw ProtocolError(.invalidField, "too many addresses or devices")
        }
        for a in addresses { try Fields.address.check(a, at: "addresses") }
        for s in attachedDevices { try Fields.serial.check(s, at: "attachedDevices") }
        if let error { try Self.checkText(error, at: "error") }
        if let d = delivery {
            try Fields.name.named("result").check(d.result, at: "delivery.result")
            try Fields.name.named("provisioner").check(d.provisioner, at: "delivery.provisioner")
            if let s = d.convergeSummary { try Self.checkText(s, at: "delivery.convergeSummary") }
            try Self.checkText(d.message, at: "delivery.message", allowEmpty: true)
            guard d.controls.count <= Self.maxControls, d.failingControls.count <= Self.maxControls else {
                throw ProtocolError(.invalidField, "too many controls")
            }
            for (k, v) in d.controls {
                try Self.checkText(k, at: "delivery.controls", max: 256)
                guard ["passed", "failed", "skipped"].contains(v) else { throw ProtocolError(.invalidField, "delivery.controls: unknown outcome") }
            }
            for c in d.failingControls { try Self.checkText(c, at: "delivery.failingControls", max: 256) }
            if let s = d.restoredSnapshot { try Fields.name.named("snapshot").check(s, at: "delivery.restoredSnapshot") }
        }
    }

    static func checkText(_ s: String, at path: String, max: Int = maxTextLength, allowEmpty: Bool = false) throws {
        guard (allowEmpty || !s.isEmpty), Fields.isShowable(s, max: max) else {
            throw ProtocolError(.invalidField, "\(path): text must be 1-\(max) printable characters")
        }
    }
}
