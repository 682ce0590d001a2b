import Foundation
import GatewayProtocol
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import VendorService

/// A gateway whose key is valid but which sends hostile fields: every one is refused with 400
/// `invalidField` before anything is looked up or stored, and the answer quotes it escaped.
@Suite("Hostile gateway input")
struct HostileInputTests {
    /// Checks a refusal: 400 `invalidField`, and no raw control or bidi character in the answer.
    static func expectInvalidField(_ response: TestResponse, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(response.status == .badRequest, "\(what)", sourceLocation: sourceLocation)
        #expect(errorCode(response) == "invalidField", "\(what)", sourceLocation: sourceLocation)
        let text = String(decoding: response.body.readableBytesView, as: UTF8.self)
        #expect(!text.unicodeScalars.contains { $0 == "\u{1B}" || $0 == "\u{202E}" || $0 == "\u{07}" }, "\(what)",
                sourceLocation: sourceLocation)
        // The JSON carries the message; decoded, it must be showable as is.
        let message = try decode(ErrorBody.self, response).error.message
        #expect(Fields.isShowable(message, max: 4096), "\(what): \(message.debugDescription)", sourceLocation: sourceLocation)
    }

    static let hostileDevices: [(String, DeviceIdentity)] = [
        ("escape sequence in serial", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1\u{1B}[2J", subsystem: "tty")),
        ("newline in serial", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1\nFT2", subsystem: "tty")),
        ("NUL in serial", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1\u{0}", subsystem: "tty")),
        ("over-long serial", DeviceIdentity(vendorID: "0403", productID: "6001", serial: String(repeating: "A", count: 65), subsystem: "tty")),
        ("path in serial", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "../../etc/passwd", subsystem: "tty")),
        ("option as serial", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "-rf", subsystem: "tty")),
        ("empty serial", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "", subsystem: "tty")),
        ("bad vendor ID", DeviceIdentity(vendorID: "04g3", productID: "6001", serial: "FT1", subsystem: "tty")),
        ("long product ID", DeviceIdentity(vendorID: "0403", productID: "60011", serial: "FT1", subsystem: "tty")),
        ("OSC in manufacturer", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1", manufacturer: "FTDI\u{1B}]0;owned\u{07}",
                                               subsystem: "tty")),
        ("bidi override in product", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1", product: "Thermo\u{202E}exe.txt",
                                                    subsystem: "tty")),
        ("over-long manufacturer", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1",
                                                  manufacturer: String(repeating: "F", count: 129), subsystem: "tty")),
        ("control character in subsystem", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1", subsystem: "tty\r")),
        ("path as subsystem", DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1", subsystem: "../tty")),
    ]

    @Test func hostileAnnouncementsAreRefusedAndNothingIsStored() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                for (what, device) in Self.hostileDevices {
                    let response = try await signedPost(client, h, "/v1/announce",
                                                        Announcement(gatewayID: h.gateway.id, device: device, currentPlanVersion: 0))
                    try Self.expectInvalidField(response, what)
                }
                for version in [-1, Int(Int32.max) + 1] {
                    let response = try await signedPost(client, h, "/v1/announce", Announcement(
                        gatewayID: h.gateway.id, device: DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1", subsystem: "tty"),
                        currentPlanVersion: version))
                    try Self.expectInvalidField(response, "version \(version)")
                }
                let foreign = try await signedPost(client, h, "/v1/announce", Announcement(
                    gatewayID: "gw-\u{1B}[31mowned", device: DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT1", subsystem: "tty"),
                    currentPlanVersion: 0))
                try Self.expectInvalidField(foreign, "gateway id")
                #expect(try decode(ErrorBody.self, foreign).error.message.contains("\\u{1B}"))
            }
            #expect(try await h.store.plan(gatewayID: h.gateway.id) == nil)
            #expect(try await h.store.gateways().first?.devices == [])
        }
    }

    @Test func anAnnouncementWithPrintableNamesIsAccepted() async throws {
        try await Harness.with { h in
            try await h.register("FT-1.2:3+4_5")
            try await h.app().test(.router) { client in
                let device = DeviceIdentity(vendorID: "0403", productID: "6001", serial: "FT-1.2:3+4_5", manufacturer: "Société Générale",
                                            product: String(repeating: "P", count: 128), subsystem: "tty")
                let response = try await signedPost(client, h, "/v1/announce", Announcement(gatewayID: h.gateway.id, device: device,
                                                                                            currentPlanVersion: 0))
                #expect(response.status == .ok)
            }
        }
    }

    @Test func hostileReportsAreRefusedAndNothingIsStored() async throws {
        try await Harness.with { h in
            @Sendable func report(_ change: (inout ProvisioningReport) -> Void) -> ProvisioningReport {
                var r = ProvisioningReport(gatewayID: h.gateway.id, vendor: "acme", planVersion: 1, outcome: .applied, container: "iotgw-acme",
                                           addresses: ["10.0.3.17"], attachedDevices: ["FT1"])
                change(&r)
                return r
            }
            @Sendable func delivery(_ change: (inout DeliverySummary) -> Void) -> DeliverySummary {
                var d = DeliverySummary(result: "applied", provisioner: "chef", convergeSummary: "2/2 resources updated",
                                        controls: ["thermo-1": "passed"], failingControls: [], restoredSnapshot: nil, message: "")
                change(&d)
                return d
            }
            let cases: [(String, ProvisioningReport)] = [
                ("escape sequence in error", report { $0.error = "boom\u{1B}[2J\u{1B}[H" }),
                ("newline in error", report { $0.error = "boom\nINFO all fine" }),
                ("over-long error", report { $0.error = String(repeating: "e", count: ProvisioningReport.maxTextLength + 1) }),
                ("path as container", report { $0.container = "../../etc" }),
                ("command in address", report { $0.addresses = ["10.0.3.17; rm -rf /"] }),
                ("over-long serial", report { $0.attachedDevices = [String(repeating: "A", count: 65)] }),
                ("escape in serial", report { $0.attachedDevices = ["FT1\u{1B}[8m"] }),
                ("uppercase vendor", report { $0.vendor = "ACME" }),
                ("negative version", report { $0.planVersion = -1 }),
                ("bad gateway id", report { $0.gatewayID = "gw-../../x" }),
                ("bidi override in failing control", report { $0.delivery = delivery { $0.failingControls = ["thermo-1\u{202E}"] } }),
                ("unknown control outcome", report { $0.delivery = delivery { $0.controls = ["thermo-1": "pwned"] } }),
                ("newline in control name", report { $0.delivery = delivery { $0.controls = ["thermo\n1": "passed"] } }),
                ("escape in converge summary", report { $0.delivery = delivery { $0.convergeSummary = "\u{1B}[1mok" } }),
                ("path as snapshot", report { $0.delivery = delivery { $0.restoredSnapshot = "../snap" } }),
            ]
            try await h.app().test(.router) { client in
                for (what, report) in cases {
                    try Self.expectInvalidField(try await signedPost(client, h, "/v1/report", report), what)
                }
                #expect(try await signedPost(client, h, "/v1/report", report { _ in }).status == .noContent)
            }
            #expect(try await h.store.reports().count == 1)
        }
    }

    @Test func hostilePlanAndBootstrapRequestsAreRefused() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                #expect(try await HTTPTests.announce(client, h, serial: "FT1").status == .ok)
                for version in [-1, Int(Int32.max) + 1] {
                    try Self.expectInvalidField(try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id,
                                                                                                     currentPlanVersion: version)),
                                                "plan version \(version)")
                    try Self.expectInvalidField(try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id,
                                                                                                               planVersion: version)),
                                                "bootstrap version \(version)")
                }
                for id in ["gw-\u{1B}[2J", "GW-0123456789ABCDEF", String(repeating: "g", count: 300)] {
                    try Self.expectInvalidField(try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: id, currentPlanVersion: 1)),
                                                "plan gateway \(id.debugDescription)")
                    try Self.expectInvalidField(try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: id, planVersion: 1)),
                                                "bootstrap gateway \(id.debugDescription)")
                }
            }
            #expect(try await h.store.plan(gatewayID: h.gateway.id)?.version == 1)
        }
    }
}
