import Foundation
import Glibc
import Logging
import MQTT
import Testing

/// The repository root, found from this file's path (Tests/MQTTTests/Support/TestBroker.swift).
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A gateway's identity as the broker kit issues it: id (= certificate CN = MQTT username), its own
/// Ed25519 key and the certificate for it.
struct TestGateway: Sendable {
    var id: String
    var keyFile: String
    var certificateFile: String

    var planTopic: String { "iotgw/v1/\(id)/plan" }
    var commandsTopic: String { "iotgw/v1/\(id)/commands" }
    var statusTopic: String { "iotgw/v1/\(id)/status" }
}

/// One real mosquitto, set up and run by `scripts/mqtt-broker` in its own directory on a free
/// loopback port. Tests never skip: if the kit or mosquitto cannot be started, the test fails with
/// the script's output.
struct TestBroker: Sendable {
    static let script = repositoryRoot.appendingPathComponent("scripts/mqtt-broker").path

    /// Parent of the kit and the test clients' keys; removed by `remove()`.
    let root: URL
    /// The kit directory (DIR of scripts/mqtt-broker).
    let dir: String
    let port: Int

    var caFile: String { dir + "/ca.crt" }
    var vendorCertificate: String { dir + "/vendor.crt" }
    var vendorKey: String { dir + "/vendor.key" }
    var pidFile: String { dir + "/mosquitto.pid" }
    var logFile: String { dir + "/mosquitto.log" }
    private var clientsDir: String { root.appendingPathComponent("clients").path }

    /// Warnings only; `MQTT_TEST_LOG=debug` (or another level) shows more.
    static var logger: Logger {
        var logger = Logger(label: "mqtt-tests")
        logger.logLevel = ProcessInfo.processInfo.environment["MQTT_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }

    /// A new kit (CA, server and vendor certificates, config), not started.
    static func prepare() async throws -> TestBroker {
        for tool in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto_pub", "/usr/bin/openssl"] where !FileManager.default.isExecutableFile(atPath: tool) {
            Issue.record("\(tool) is missing: run scripts/setup (it installs mosquitto, mosquitto-clients, libmosquitto-dev, openssl)")
            throw MQTTError(code: .unreachable, message: "\(tool) missing")
        }
        // Under /tmp and world-searchable (0755): mosquitto drops to its own user and must reach the kit.
        let root = URL(fileURLWithPath: "/tmp/iotgw-mqtt-test-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("clients"), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let broker = TestBroker(root: root, dir: root.appendingPathComponent("broker").path, port: try freeLoopbackPort())
        try await Command.run([script, "init", broker.dir, String(broker.port)])
        return broker
    }

    /// A new kit with its broker running.
    static func start() async throws -> TestBroker {
        let broker = try await prepare()
        do {
            try await broker.startBroker()
        } catch {
            await broker.remove()
            throw error
        }
        return broker
    }

    func startBroker() async throws {
        try await Command.run([Self.script, "start", dir])
    }

    func stopBroker() async throws {
        try await Command.run([Self.script, "stop", dir])
    }

    /// SIGKILL, as a crash would: no database save at exit, no TLS close_notify to clients.
    func killBroker() async throws {
        let text = try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let pid = pid_t(text) else { throw MQTTError(code: .library, message: "no pid in \(pidFile): \(text.debugDescription)") }
        guard Glibc.kill(pid, SIGKILL) == 0 else { throw MQTTError(code: .library, message: "kill \(pid): errno \(errno)") }
        let deadline = ContinuousClock.now + .seconds(10)
        while Glibc.kill(pid, 0) == 0 || errno != ESRCH {
            guard ContinuousClock.now < deadline else { throw MQTTError(code: .timeout, message: "mosquitto \(pid) survived SIGKILL") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Stops the broker and deletes everything (kept with `MQTT_TEST_KEEP=1`, for its logs).
    func remove() async {
        _ = try? await Command.run([Self.script, "stop", dir], check: false)
        guard ProcessInfo.processInfo.environment["MQTT_TEST_KEEP"] != "1" else { return }
        try? FileManager.default.removeItem(at: root)
    }

    /// A fresh gateway: an Ed25519 key made here (it never leaves the "gateway"), its raw public key
    /// sent to `scripts/mqtt-broker issue`.
    func issueGateway() async throws -> TestGateway {
        let id = "gw-" + (0..<16).map { _ in String(Int.random(in: 0..<16), radix: 16) }.joined()
        let keyFile = "\(clientsDir)/\(id).key"
        try await Command.run(["/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", keyFile])
        return try await issue(id: id, keyFile: keyFile)
    }

    /// Issues a certificate for `id` and the public key of `keyFile`.
    func issue(id: String, keyFile: String) async throws -> TestGateway {
        let derFile = keyFile + ".pub.der"
        try await Command.run(["/usr/bin/openssl", "pkey", "-in", keyFile, "-pubout", "-outform", "DER", "-out", derFile])
        let der = try Data(contentsOf: URL(fileURLWithPath: derFile))
        let raw = der.suffix(32)  // SubjectPublicKeyInfo for Ed25519 ends with the 32-byte key
        let certificateFile = "\(clientsDir)/\(id)-\(UUID().uuidString.prefix(6)).crt"
        try await Command.run([Self.script, "issue", dir, id, Data(raw).base64EncodedString(), certificateFile])
        return TestGateway(id: id, keyFile: keyFile, certificateFile: certificateFile)
    }

    func revoke(_ gateway: TestGateway) async throws {
        try await Command.run([Self.script, "revoke", dir, gateway.id])
    }

    /// The gateway's client: its certificate, a persistent session keyed by its id.
    func configuration(for gateway: TestGateway, clientID: String? = nil) -> MQTTConfiguration {
        MQTTConfiguration(
            host: "127.0.0.1", port: port, clientID: clientID ?? gateway.id,
            tls: .init(caFile: caFile, certificateFile: gateway.certificateFile, keyFile: gateway.keyFile),
            reconnectDelay: .milliseconds(200) ... .seconds(1)
        )
    }

    /// The vendor's control plane (the kit's vendor certificate).
    func vendorConfiguration() -> MQTTConfiguration {
        MQTTConfiguration(
            host: "127.0.0.1", port: port, clientID: "vendor-\(UUID().uuidString.prefix(8))",
            tls: .init(caFile: caFile, certificateFile: vendorCertificate, keyFile: vendorKey),
            cleanSession: true,
            reconnectDelay: .milliseconds(100) ... .milliseconds(500)
        )
    }

    /// Waits until the broker's log has a line containing `text`.
    func waitForLog(containing text: String, timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let log = try? String(contentsOfFile: logFile, encoding: .utf8), log.contains(text) { return }
            guard ContinuousClock.now < deadline else {
                throw MQTTError(code: .timeout, message: "mosquitto did not log \(text.debugDescription) within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Runs `body` with a running broker of its own, removed afterwards whether `body` throws or not.
func withBroker<R>(_ body: (TestBroker) async throws -> R) async throws -> R {
    let broker = try await TestBroker.start()
    do {
        let result = try await body(broker)
        await broker.remove()
        return result
    } catch {
        await broker.remove()
        throw error
    }
}

/// Runs `body` with a started client, stopped afterwards whether `body` throws or not.
func withClient<R>(_ configuration: MQTTConfiguration, _ body: (MQTTClient, EventLog) async throws -> R) async throws -> R {
    let client = try MQTTClient(configuration: configuration, logger: TestBroker.logger)
    let log = EventLog.recording(client)
    try client.start()
    do {
        let result = try await body(client, log)
        await client.stop()
        return result
    } catch {
        await client.stop()
        throw error
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw MQTTError(code: .library, message: "socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw MQTTError(code: .library, message: "bind: errno \(errno)") }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw MQTTError(code: .library, message: "getsockname: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}
