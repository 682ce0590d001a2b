import Foundation
import Testing

/// One vendor's real mosquitto broker (TLS, certificate identities, ACL), made and run by
/// `scripts/mqtt-broker` in a directory of the test's own, on a free loopback port.
final class Broker: Sendable {
    let dir: URL
    let port: Int
    static var script: String { Bin.repo.appendingPathComponent("scripts/mqtt-broker").path }

    init(root: URL, name: String) throws {
        dir = root.appendingPathComponent("broker-\(name)")
        port = freePort()
        try Self.kit(["init", dir.path, String(port)])
    }

    @discardableResult
    static func kit(_ args: [String]) throws -> Output {
        let r = try run(script, args)
        guard r.status == 0 else {
            Issue.record("scripts/mqtt-broker \(args.joined(separator: " ")) failed: \(r.stderr)")
            throw HarnessError("mqtt-broker \(args.first ?? "") failed")
        }
        return r
    }

    func start() throws { try Self.kit(["start", dir.path]) }
    func stop() throws { try Self.kit(["stop", dir.path]) }

    /// SIGKILL: the broker crashes (persistence keeps retained messages and queued sessions).
    func kill9() throws {
        let pid = try String(contentsOf: dir.appendingPathComponent("mosquitto.pid"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let p = Int32(pid) else { throw HarnessError("no broker pid") }
        kill(p, SIGKILL)
        _ = try eventuallySync("broker gone") { kill(p, 0) != 0 }
    }

    var caFile: String { dir.appendingPathComponent("ca.crt").path }
    var vendorCert: String { dir.appendingPathComponent("vendor.crt").path }
    var vendorKey: String { dir.appendingPathComponent("vendor.key").path }

    /// The vendor configuration's `fleet` section: enrollment issues and revocation revokes through the kit.
    var vendorYAML: String {
        """
        fleet:
          host: 127.0.0.1
          port: \(port)
          caCertificate: \(caFile)
          certificate: \(vendorCert)
          key: \(vendorKey)
          certificateDirectory: \(dir.appendingPathComponent("issued").path)
          issueCommand: [\(Self.script), issue, \(dir.path), "{gateway}", "{publicKey}", "{out}"]
          revokeCommand: [\(Self.script), revoke, \(dir.path), "{gateway}"]
        """
    }

    /// Subscribes as the vendor with mosquitto_sub until `count` messages arrived or `seconds` passed.
    func receive(_ topic: String, count: Int, seconds: Int) throws -> [String] {
        let r = try run("/usr/bin/mosquitto_sub", vendorArgs + ["-t", topic, "-C", String(count), "-W", String(seconds), "-q", "1"])
        return r.stdout.split(separator: "\n").map(String.init)
    }

    /// Publishes as the vendor with mosquitto_pub.
    func publish(_ topic: String, _ payload: Data, retain: Bool = false) throws {
        let file = dir.appendingPathComponent("pub-\(UUID().uuidString).json")
        try payload.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let r = try run("/usr/bin/mosquitto_pub", vendorArgs + ["-t", topic, "-f", file.path, "-q", "1"] + (retain ? ["-r"] : []))
        guard r.status == 0 else { throw HarnessError("mosquitto_pub failed: \(r.stderr)") }
    }

    var vendorArgs: [String] {
        ["-h", "127.0.0.1", "-p", String(port), "--cafile", caFile, "--cert", vendorCert, "--key", vendorKey,
         "-i", "e2e-\(UInt32.random(in: 0...UInt32.max))"]
    }
}

/// Polls a synchronous condition (at most 10 s).
func eventuallySync(_ what: String, _ condition: () throws -> Bool) throws -> Bool {
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
        if try condition() { return true }
        usleep(50_000)
    }
    throw HarnessError("timed out waiting for \(what)")
}
