import Foundation
import Testing
@testable import GatewayProtocol

@Suite("ProvisioningReport.validate")
struct ReportValidationTests {
    static let gatewayID = "gw-0123456789abcdef"

    static func report(_ change: (inout ProvisioningReport) -> Void = { _ in }) -> ProvisioningReport {
        var r = ProvisioningReport(gatewayID: gatewayID, vendor: "acme", planVersion: 3, outcome: .rolledBack, container: "iotgw-acme",
                                   addresses: ["10.0.3.17", "fd42::17"], attachedDevices: ["FT1", "FT-2.b"],
                                   error: "validation failed: control thermo-2 — “temperature in range”",
                                   delivery: DeliverySummary(result: "rolled-back", provisioner: "chef", convergeSummary: "3/5 resources updated",
                                                             controls: ["thermo-1": "passed", "thermo-2": "failed", "thermo 3 (slow)": "skipped"],
                                                             failingControls: ["thermo-2"], restoredSnapshot: "iotgw-pre-v3", message: ""))
        change(&r)
        return r
    }

    @Test func aTruthfulReportPasses() throws {
        try Self.report().validate()
        try ProvisioningReport(gatewayID: Self.gatewayID, vendor: "acme", planVersion: 0, outcome: .denied).validate()
        try Self.report { $0.error = String(repeating: "e", count: ProvisioningReport.maxTextLength) }.validate()
    }

    static let hostile: [(String, @Sendable (inout ProvisioningReport) -> Void)] = [
        ("gateway id", { $0.gatewayID = "gw-../../etc" }),
        ("vendor", { $0.vendor = "Acme\u{1B}[2J" }),
        ("negative version", { $0.planVersion = -1 }),
        ("huge version", { $0.planVersion = Int(Int32.max) + 1 }),
        ("container", { $0.container = "../iotgw-globex" }),
        ("address", { $0.addresses = ["10.0.3.17\n"] }),
        ("too many addresses", { $0.addresses = Array(repeating: "10.0.3.17", count: 17) }),
        ("serial", { $0.attachedDevices = ["FT1\u{0}"] }),
        ("over-long serial", { $0.attachedDevices = [String(repeating: "S", count: 65)] }),
        ("too many devices", { $0.attachedDevices = (0...PlanValidator.maxDevices).map { "S\($0)" } }),
        ("escape in error", { $0.error = "\u{1B}[31mfailed" }),
        ("newline in error", { $0.error = "failed\nroot: ok" }),
        ("bidi override in error", { $0.error = "failed \u{202E}kO" }),
        ("empty error", { $0.error = "" }),
        ("over-long error", { $0.error = String(repeating: "e", count: ProvisioningReport.maxTextLength + 1) }),
        ("result", { $0.delivery?.result = "applied; rm" }),
        ("provisioner", { $0.delivery?.provisioner = "-chef" }),
        ("converge summary", { $0.delivery?.convergeSummary = "ok\u{7}" }),
        ("message", { $0.delivery?.message = "done\r\n" }),
        ("control name", { $0.delivery?.controls = ["thermo\u{1B}": "passed"] }),
        ("control outcome", { $0.delivery?.controls = ["thermo-1": "PASSED"] }),
        ("failing control", { $0.delivery?.failingControls = [String(repeating: "c", count: 257)] }),
        ("too many controls", { r in r.delivery?.controls = Dictionary(uniqueKeysWithValues: (0...ProvisioningReport.maxControls).map { ("c\($0)", "passed") }) }),
        ("snapshot", { $0.delivery?.restoredSnapshot = "snap/../../x" }),
    ]

    @Test(arguments: 0..<hostile.count)
    func everyFieldIsChecked(_ index: Int) {
        let (what, change) = Self.hostile[index]
        let error = #expect(throws: ProtocolError.self, "\(what)") { try Self.report(change).validate() }
        #expect(error?.code == .invalidField, "\(what)")
        #expect(error.map { Fields.isShowable($0.message, max: 1024) } == true, "\(what): \(error?.message.debugDescription ?? "")")
    }
}
