import Foundation
import GatewayProtocol

/// Client certificates for gateways on the vendor's broker, issued through the vendor's own PKI
/// commands (`fleet.issueCommand`, `fleet.revokeCommand`). The certificate is for the key the gateway
/// enrolled with: no secret is made or sent, and the CN is the gateway id the broker's ACL uses.
public enum GatewayCertificates {
    /// Issues (or re-issues) the certificate of an enrolled gateway; returns its path.
    public static func issue(gatewayID: String, publicKey: String, settings: VendorConfiguration.FleetSettings) throws -> String? {
        guard let argv = settings.issueCommand, let dir = settings.certificateDirectory else { return nil }
        guard Fields.gatewayID.isValid(gatewayID) else { throw ConfigurationError(.invalidField, field: "gateway", "not a gateway id") }
        _ = try Keys.decodePublic(publicKey)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let out = (dir as NSString).appendingPathComponent("\(gatewayID).crt")
        try run(argv.map {
            $0.replacingOccurrences(of: "{gateway}", with: gatewayID).replacingOccurrences(of: "{publicKey}", with: publicKey)
                .replacingOccurrences(of: "{out}", with: out)
        }, what: "issueCommand")
        guard FileManager.default.fileExists(atPath: out) else {
            throw ConfigurationError(.invalidField, field: "fleet.issueCommand", "ran but wrote no certificate at \(out)")
        }
        return out
    }

    /// Runs a PKI command; its output goes to standard error, a failure throws with its exit status.
    public static func run(_ argv: [String], what: String) throws {
        guard let exe = argv.first else { return }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = Array(argv.dropFirst())
        p.standardOutput = FileHandle.standardError
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ConfigurationError(.invalidField, field: "fleet.\(what)", "\(exe) exited with status \(p.terminationStatus)")
        }
    }
}
