import Foundation
import GatewayAgent
import GatewayProtocol
import Logging
import LXD
import Testing
import UmockdevTesting

/// A vendor running a real `iot-daemon` on loopback with its own key, registry and catalog.
final class VendorFixture {
    let id: String
    let usbVendorID: String
    let productID: String
    let dir: URL
    let port: Int
    let configPath: String
    let publicKey: String
    var daemon: Daemon?
    /// Extra fields of the gateway's entry for this vendor (e.g. its `fleet`), as YAML flow-mapping items.
    var entryExtras = ""

    init(id: String, usbVendorID: String, productID: String = "6001", serials: [String], image: String, fingerprint: String,
         cpus: Int = 1, memoryMiB: Int = 128, runList: String = "recipe[sensor_agent]", extraYAML: String = "", root: URL) throws {
        self.id = id
        self.usbVendorID = usbVendorID
        self.productID = productID
        dir = root.appendingPathComponent("vendor-\(id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        port = freePort()
        configPath = dir.appendingPathComponent("vendor.yaml").path
        try """
            vendor: \(id)
            listen: {host: 127.0.0.1, port: \(port)}
            database: vendor.sqlite
            signingKey: vendor.key
            planTTLSeconds: 3600
            image: {alias: \(image), fingerprint: \(fingerprint)}
            container: {cpus: \(cpus), memoryMiB: \(memoryMiB), diskMiB: 512, processes: 200, network: nat}
            models:
              - {name: sensor-v1, vendorID: "\(usbVendorID)", productID: "\(productID)", devicePath: /dev/ttyUSB0, kind: unix-char, apps: [sensor-agent]}
            apps:
              - {name: sensor-agent, version: 1.0.0, runList: ["\(runList)"], inspecProfile: sensor-agent}
            \(extraYAML)
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let bin = try Bin.path("iot-daemon")
        let initOut = try run(bin, ["init", "--config", configPath])
        guard initOut.status == 0 else { throw HarnessError("iot-daemon init failed: \(initOut.stderr)") }
        publicKey = initOut.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        for s in serials { try register(serial: s) }
    }

    func register(serial: String) throws {
        let r = try run(try Bin.path("iot-daemon"), ["register-device", "--config", configPath, "--serial", serial, "--model", "sensor-v1"])
        guard r.status == 0 else { throw HarnessError("register-device failed: \(r.stderr)") }
    }

    /// Enrolls the gateway; with a broker configured, returns the path of the certificate issued for it.
    @discardableResult
    func enroll(_ gateway: (id: String, publicKey: String)) throws -> String {
        let r = try run(try Bin.path("iot-daemon"), ["enroll-gateway", "--config", configPath, "--gateway-id", gateway.id,
                                                     "--public-key", gateway.publicKey])
        guard r.status == 0 else { throw HarnessError("enroll-gateway failed: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func start() async throws {
        daemon = try Daemon(name: "iot-daemon-\(id)", executable: try Bin.path("iot-daemon"), args: ["serve", "--config", configPath],
                            env: [:], logDir: dir)
        _ = try await eventually("iot-daemon \(id) listening", timeout: .seconds(20)) { canConnect(port: port) ? true : nil }
    }

    func reports() throws -> [ProvisioningReport] {
        let r = try run(try Bin.path("iot-daemon"), ["reports", "--config", configPath, "--json"])
        guard r.status == 0 else { throw HarnessError("reports failed: \(r.stderr)") }
        struct Row: Decodable { var report: ProvisioningReport? }
        // Accept either an array of reports or of rows carrying one.
        if let plain = try? decodeJSON([ProvisioningReport].self, r.stdout) { return plain }
        return try decodeJSON([Row].self, r.stdout).compactMap(\.report)
    }

    var entryYAML: String {
        "  - {id: \(id), match: [{vendorID: \"\(usbVendorID)\"}], daemonURL: \"http://127.0.0.1:\(port)\", allowInsecureHTTP: true, publicKey: \"\(publicKey)\", policy: POLICY\(entryExtras)}"
    }
}

/// A gateway: its config, state directory and the real `iot-gateway-client` under a umockdev testbed.
final class GatewayFixture {
    let dir: URL
    let configPath: String
    let socket: String
    /// Where this gateway makes its device nodes (under /dev, as LXD requires; unique per test).
    let deviceDirectory: String
    var daemon: Daemon?
    var starts = 0
    /// Device nodes plugged by ``startAndPlug(_:serial:ttyName:)``.
    var nodes: [CharNode] = []

    init(vendors: [(VendorFixture, GatewayConfig.Policy)], root: URL, lxdSocket: String? = nil, capsCPUs: Int = 2,
         extraVendorsYAML: [String] = [], profiles: [String] = ["default", "iotgw-vendor"], storagePool: String = "default",
         projects: Bool = false, extraYAML: String = "") throws {
        dir = root.appendingPathComponent("gateway")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tag = UUID().uuidString.prefix(8).lowercased()
        socket = "/run/iotgw-e2e-\(tag)/control.sock"
        deviceDirectory = "/dev/iotgw-e2e-\(tag)"
        configPath = dir.appendingPathComponent("gateway.yaml").path
        let lxd = lxdSocket.map { "  socket: \($0)\n" } ?? ""
        try """
            stateDirectory: \(dir.appendingPathComponent("state").path)
            controlSocket: \(socket)
            subsystems: [usb, tty]
            deviceDirectory: \(deviceDirectory)
            retrySeconds: 0.5
            maxRetrySeconds: 2
            lxd:
            \(lxd)  profiles: [\(profiles.joined(separator: ", "))]
              network: iotgwbr0
              storagePool: \(storagePool)
              projects: \(projects)
            caps: {cpus: \(capsCPUs), memoryMiB: 512, diskMiB: 2048, processes: 500, allowNesting: false}
            vendors:
            \((vendors.map { $0.0.entryYAML.replacingOccurrences(of: "POLICY", with: $0.1.rawValue) } + extraVendorsYAML).joined(separator: "\n"))
            \(extraYAML)
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(atPath: deviceDirectory) }

    /// The node the gateway makes for a vendor's device.
    func node(vendor: String, serial: String) -> String { "\(deviceDirectory)/\(vendor)/\(ContainerPlanner.deviceName(serial: serial))" }

    func identity() throws -> (id: String, publicKey: String) {
        let r = try run(try Bin.path("iot-gateway-client"), ["identity", "--config", configPath, "--json"])
        guard r.status == 0 else { throw HarnessError("identity failed: \(r.stderr)") }
        struct ID: Decodable { var gatewayID: String; var publicKey: String }
        let id = try decodeJSON(ID.self, r.stdout)
        return (id.gatewayID, id.publicKey)
    }

    /// - Parameter extraEnv: added to the testbed's environment (a crash point, say).
    func start(testbed: Testbed, extraEnv: [String: String] = [:]) async throws {
        starts += 1
        daemon = try Daemon(name: "iot-gateway-client-\(starts)", executable: try Bin.path("iot-gateway-client"),
                            args: ["run", "--config", configPath, "--log-level", "debug"],
                            env: testbed.environment.merging(extraEnv) { $1 }, logDir: dir)
        _ = try await eventually("control socket", timeout: .seconds(20)) { FileManager.default.fileExists(atPath: socket) ? true : nil }
    }

    /// Starts `vendor`'s daemon and this gateway under a new testbed, then plugs one of the vendor's devices
    /// (a real char node, kept as long as the fixture). Returns the testbed, for later plugs and restarts.
    @discardableResult
    func startAndPlug(_ vendor: VendorFixture, serial: String, ttyName: String) async throws -> Testbed {
        try await vendor.start()
        let testbed = try Testbed()
        try await start(testbed: testbed)
        let node = try CharNode()
        nodes.append(node)
        try testbed.plug(vendorID: vendor.usbVendorID, productID: vendor.productID, serial: serial, ttyName: ttyName, devnode: node.path)
        return testbed
    }

    @discardableResult
    func cli(_ args: [String], stdin: String? = nil) throws -> Output {
        try run(try Bin.path("iot-gateway"), args + ["--socket", socket], stdin: stdin)
    }

    func json<T: Decodable>(_ args: [String], as: T.Type) throws -> T {
        let r = try cli(args + ["--json"])
        guard r.status == 0 else { throw HarnessError("iot-gateway \(args) failed: \(r.stderr)\(r.stdout)") }
        return try decodeJSON(T.self, r.stdout)
    }

    func approvals() throws -> [ControlAPI.Approval] { try json(["approvals"], as: [ControlAPI.Approval].self) }
    func devices() throws -> [ControlAPI.Device] { try json(["devices"], as: [ControlAPI.Device].self) }
    func status() throws -> ControlAPI.Status { try json(["status"], as: ControlAPI.Status.self) }
}

func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

enum E2E {
    /// A vendor delivering the sample sensor-agent with Ansible (real ansible-playbook in the container) on
    /// the Debian test image, and a gateway running it under `policy` that validates with InSpec (the
    /// image's stand-in), enforced, keeping two snapshots and syncing plans every second. Enrolled.
    static func ansibleVendor(_ tag: String, serial: String, policy: GatewayConfig.Policy = .auto, lxd: LXDClient,
                              root: URL) async throws -> (VendorFixture, GatewayFixture) {
        let image = image("iotgw-debian12-test")
        let playbook = Bin.repo.appendingPathComponent("cookbooks/ansible/sensor-agent").path
        let vendor = try VendorFixture(id: vendorID(tag), usbVendorID: "0403", serials: [serial], image: image,
                                       fingerprint: try await lxd.imageAlias(image).target, memoryMiB: 256,
                                       extraYAML: "ansible: {playbookDirectory: \(playbook)}", root: root)
        let gateway = try GatewayFixture(vendors: [(vendor, policy)], root: root, extraYAML: """
            planSyncSeconds: 1
            delivery: {inspecDirectory: \(Bin.repo.appendingPathComponent("inspec").path), environment: test, validationMode: enforced, keepSnapshots: 2}
            """)
        try vendor.enroll(try gateway.identity())
        return (vendor, gateway)
    }

    /// An image alias as `scripts/build-image` imported it: with `IOTGW_IMAGE_ALIAS_PREFIX` set (a
    /// branch testing its own images on a shared LXD), the prefixed alias.
    static func image(_ alias: String) -> String {
        (ProcessInfo.processInfo.environment["IOTGW_IMAGE_ALIAS_PREFIX"] ?? "") + alias
    }

    static func lxd() throws -> LXDClient {
        var logger = Logger(label: "e2e")
        logger.logLevel = .warning
        let c = try LXDClient(logger: logger)
        guard LXDSocket.isSocket(c.socketPath) else {
            Issue.record("LXD is not running at \(c.socketPath): run scripts/setup")
            throw HarnessError("no LXD")
        }
        return c
    }

    static func tempRoot() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iotgw-e2e-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        return root
    }

    /// A vendor id unique to this run (its container is `iotgw-<id>`; scripts/test checks none is left).
    static func vendorID(_ tag: String) -> String { "e2e\(tag)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))" }

    static func deviceInside(_ lxd: LXDClient, _ container: String, _ path: String) async throws -> Bool {
        try await lxd.exec(container, ["test", "-c", path]).exitCode == 0
    }
}
