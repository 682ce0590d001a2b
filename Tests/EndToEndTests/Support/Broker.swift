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
        let r = try spawnAndWait([script] + args)
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
        let r = try spawnAndWait(["/usr/bin/mosquitto_sub"] + vendorArgs + ["-t", topic, "-C", String(count), "-W", String(seconds), "-q", "1"])
        return r.stdout.split(separator: "\n").map(String.init)
    }

    /// Publishes as the vendor with mosquitto_pub.
    func publish(_ topic: String, _ payload: Data, retain: Bool = false) throws {
        let file = dir.appendingPathComponent("pub-\(UUID().uuidString).json")
        try payload.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let r = try spawnAndWait(["/usr/bin/mosquitto_pub"] + vendorArgs + ["-t", topic, "-f", file.path, "-q", "1"] + (retain ? ["-r"] : []))
        guard r.status == 0 else { throw HarnessError("mosquitto_pub failed: \(r.stderr)") }
    }

    /// A gateway enrolled with this broker (its own fresh key, a certificate issued by the kit), as
    /// mosquitto_sub/pub arguments.
    func gatewayIdentity(_ id: String) throws -> (id: String, args: [String]) {
        let key = dir.appendingPathComponent("\(id).key").path, cert = dir.appendingPathComponent("\(id).crt").path
        guard try run("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", key]).status == 0 else { throw HarnessError("genpkey") }
        let der = try run("/bin/sh", ["-c", "openssl pkey -in '\(key)' -pubout -outform DER | tail -c 32 | base64"])
        try Self.kit(["issue", dir.path, id, der.stdout.trimmingCharacters(in: .whitespacesAndNewlines), cert])
        return (id, ["-h", "127.0.0.1", "-p", String(port), "--cafile", caFile, "--cert", cert, "--key", key, "-i", id])
    }

    var vendorArgs: [String] {
        ["-h", "127.0.0.1", "-p", String(port), "--cafile", caFile, "--cert", vendorCert, "--key", vendorKey,
         "-i", "e2e-\(UInt32.random(in: 0...UInt32.max))"]
    }
}

/// Runs a command with posix_spawn and reaps it with waitpid, its output in files. The test process
/// blocks signals that children rely on (SIGALRM ends `mosquitto_sub -W`, SIGHUP reloads a broker)
/// and Foundation's Process passes that mask on; here a child starts with a clean mask and default
/// handlers. Also for commands that leave a daemon behind (`mosquitto -d`), whose exit Process once
/// never noticed.
func spawnAndWait(_ argv: [String]) throws -> Output {
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("spawn-\(UUID().uuidString)")
    let (outPath, errPath) = (base.path + ".out", base.path + ".err")
    defer { unlink(outPath); unlink(errPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var none = sigset_t(), all = sigset_t()
    sigemptyset(&none)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &none)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let cargs = argv.map { strdup($0) } + [nil]
    defer { for a in cargs { free(a) } }
    let rc = posix_spawn(&pid, argv[0], &actions, &attr, cargs, environ)
    guard rc == 0 else { throw HarnessError("cannot run \(argv[0]): errno \(rc)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let read = { (p: String) in (try? String(contentsOfFile: p, encoding: .utf8)) ?? "" }
    let exited = status & 0x7f == 0
    return Output(status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), stdout: read(outPath), stderr: read(errPath))
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
