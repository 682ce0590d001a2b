import AsyncHTTPClient
import Crypto
import Foundation
import GatewayProtocol
import Hummingbird
import Logging
import NIOCore
import NIOFoundationCompat
import Testing

@testable import HostUpdate

#if canImport(Glibc)
import Glibc
#endif

struct TestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Built products of this package (scripts/test builds them all before testing).
enum Bin {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func path(_ name: String) throws -> String {
        let candidates = [repo.appendingPathComponent(".build/debug/\(name)").path,
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path]
        guard let p = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("\(name) is not built (looked in \(candidates)); run 'swift build' first (scripts/test does)")
            throw TestError("missing \(name)")
        }
        return p
    }

    /// A program the tests need from the system; missing means a failed test that says what to install.
    static func system(_ name: String, package: String) throws -> String {
        guard let p = Subprocess.resolve(name) else {
            Issue.record("\(name) is not installed: apt-get install -y \(package) (scripts/setup does)")
            throw TestError("missing \(name)")
        }
        return p
    }
}

/// Runs a program to completion off the cooperative pool; stdout and stderr together.
func runTool(_ executable: String, _ args: [String], log: String) async throws -> (status: Int32, output: String) {
    try? FileManager.default.removeItem(atPath: log)
    let r = try await Subprocess.run(executable, args, output: .file(log), timeout: .seconds(600))
    let out = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    return (r.status, out)
}

/// What the operator's update server serves, by file name; a test swaps files between runs.
actor ServedFiles {
    private var files: [String: Data] = [:]
    func set(_ name: String, _ data: Data) { files[name] = data }
    func get(_ name: String) -> Data? { files[name] }
}

/// A local update server (Hummingbird on 127.0.0.1, a port the kernel picks) for the body's duration.
func withUpdateServer<T: Sendable>(_ files: ServedFiles, _ body: (Int) async throws -> T) async throws -> T {
    let router = Router()
    router.get("/{name}") { _, ctx -> Response in
        let name = try ctx.parameters.require("name")
        guard let data = await files.get(name) else { return Response(status: .notFound) }
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(data: data)))
    }
    let (ports, portSink) = AsyncStream<Int>.makeStream()
    var logger = Logger(label: "update-server")
    // Ending the server by cancelling its task logs errors that mean nothing; the tests judge what clients got.
    logger.logLevel = .critical
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                          onServerRunning: { channel in
                              portSink.yield(channel.localAddress?.port ?? 0)
                              portSink.finish()
                          }, logger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await app.runService() }
        var it = ports.makeAsyncIterator()
        guard let port = await it.next(), port > 0 else { throw TestError("the update server did not start") }
        let result = try await body(port)
        group.cancelAll()
        return result
    }
}

/// A gateway host for the updater: the installed agent binary, a process supervisor of our own (a
/// pidfile and a restart script, standing in for systemd) and the agent's configuration. The agent is
/// the real `iot-gateway-client` with no vendors and an LXD socket that does not exist: its control
/// socket answers `GET /v1/status` all the same, as it does on a gateway whose LXD is down.
final class GatewayHost: @unchecked Sendable {
    // @unchecked: immutable after init.
    let root: String
    let installPath: String
    let socket: String
    let pidfile: String
    let supervisor: String
    let stateDirectory: String
    let deviceDirectory: String
    let agentLog: String

    init() throws {
        // Short: the control socket's path must fit in sockaddr_un.
        let tag = UUID().uuidString.prefix(8).lowercased()
        root = "/tmp/hch-\(tag)"
        installPath = root + "/bin/iot-gateway-client"
        socket = root + "/run/control.sock"
        pidfile = root + "/agent.pid"
        supervisor = root + "/supervise"
        stateDirectory = root + "/state"
        deviceDirectory = "/dev/iotgw-hch-\(tag)"
        agentLog = root + "/agent.log"
        try FileManager.default.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        let config = root + "/gateway.yaml"
        try """
            stateDirectory: \(root)/agent-state
            controlSocket: \(socket)
            subsystems: [usb]
            deviceDirectory: \(deviceDirectory)
            lxd:
              socket: \(root)/no-lxd.sock
            caps: {cpus: 1, memoryMiB: 256, diskMiB: 1024, processes: 100, allowNesting: false}
            vendors: []
            """.write(toFile: config, atomically: true, encoding: .utf8)
        // restart = stop whatever the pidfile names (TERM, then KILL after 5 s), start the installed binary detached.
        try """
            #!/bin/sh
            set -u
            if [ -s '\(pidfile)' ]; then
              pid=$(cat '\(pidfile)')
              kill "$pid" 2>/dev/null || true
              i=0
              while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
              kill -9 "$pid" 2>/dev/null || true
            fi
            setsid '\(installPath)' run --config '\(config)' >>'\(agentLog)' 2>&1 </dev/null &
            echo $! >'\(pidfile)'

            """.write(toFile: supervisor, atomically: true, encoding: .utf8)
        chmod(supervisor, 0o755)
    }

    func config(manifestURL: String, publicKey: Curve25519.Signing.PublicKey, healthTimeout: Double = 60) -> HostctlConfig {
        HostctlConfig(manifestURL: manifestURL, publicKey: Keys.encode(publicKey), allowInsecureHTTP: true, stateDirectory: stateDirectory,
                      installPath: installPath, controlSocket: socket, restartCommand: [supervisor], healthTimeoutSeconds: healthTimeout)
    }

    func writeConfig(_ c: HostctlConfig) throws -> String {
        let path = root + "/hostctl.json"
        try JSONEncoder().encode(c).write(to: URL(fileURLWithPath: path))
        return path
    }

    var pid: Int32? { (try? String(contentsOfFile: pidfile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }

    /// Starts the installed binary as the supervisor would.
    func start() async throws {
        let r = try await runTool(supervisor, [], log: root + "/supervise.log")
        guard r.status == 0 else { throw TestError("supervisor failed: \(r.output)") }
    }

    /// A wedged agent: it holds the control socket (connections are queued) but never answers.
    func startWedged() async throws {
        try FileManager.default.createDirectory(atPath: (socket as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let python = try Bin.system("python3", package: "python3")
        let script = "import socket,time; s=socket.socket(socket.AF_UNIX); s.bind('\(socket)'); s.listen(16); time.sleep(600)"
        let r = try await runTool("/bin/sh", ["-c", "setsid '\(python)' -c \"\(script)\" </dev/null >/dev/null 2>&1 & echo $! >'\(pidfile)'"],
                                  log: root + "/wedged.log")
        guard r.status == 0 else { throw TestError("cannot start the wedged agent: \(r.output)") }
    }

    func healthy(http: HTTPClient, within: Duration = .seconds(60)) async -> Bool {
        await HealthCheck(socketPath: socket, http: http).waitHealthy(within: within) == nil
    }

    func installed() -> Data? { FileManager.default.contents(atPath: installPath) }
    func file(_ rel: String) -> Data? { FileManager.default.contents(atPath: root + "/" + rel) }

    func stop() {
        if let pid { kill(pid, SIGKILL) }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: deviceDirectory)
        try? FileManager.default.removeItem(atPath: root)
    }
}

/// The operator's side: a key and the files they publish, signed with the real `iot-gateway-hostctl sign-manifest`.
struct Operator {
    let dir: String
    let keyFile: String
    let key: Curve25519.Signing.PrivateKey

    init(dir: String) async throws {
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        keyFile = dir + "/operator.key"
        let r = try await runTool(try Bin.path("iot-gateway-hostctl"), ["generate-key", "-o", keyFile], log: dir + "/keygen.log")
        guard r.status == 0 else { throw TestError("generate-key failed: \(r.output)") }
        let text = try String(contentsOfFile: keyFile, encoding: .utf8)
        key = try Keys.decodePrivate(text)
        #expect(r.output.trimmingCharacters(in: .whitespacesAndNewlines) == Keys.encode(key.publicKey))
    }

    /// The packaged playbook (packaging/hostctl/playbook) as the operator ships it: a tar.gz made by tar.
    func playbookArchive() async throws -> String {
        let out = dir + "/playbook.tar.gz"
        if FileManager.default.fileExists(atPath: out) { return out }
        let src = Bin.repo.appendingPathComponent("packaging/hostctl/playbook").path
        let r = try await runTool(try Bin.system("tar", package: "tar"), ["-czf", out, "-C", src, "."], log: dir + "/tar.log")
        guard r.status == 0 else { throw TestError("tar failed: \(r.output)") }
        return out
    }

    /// Signs a manifest with the CLI; returns the envelope's bytes.
    func sign(version: String, client: String, clientURL: String, playbook: String, playbookURL: String = "playbook.tar.gz") async throws -> Data {
        let out = dir + "/manifest-\(version).json"
        let r = try await runTool(try Bin.path("iot-gateway-hostctl"),
                                  ["sign-manifest", "--key", keyFile, "--version", version, "--client", client, "--client-url", clientURL,
                                   "--playbook", playbook, "--playbook-url", playbookURL, "--valid-days", "1", "-o", out],
                                  log: dir + "/sign.log")
        guard r.status == 0 else { throw TestError("sign-manifest failed: \(r.output)") }
        return try Data(contentsOf: URL(fileURLWithPath: out))
    }
}

func sha256(_ d: Data?) -> String? { d.map { Keys.sha256Hex($0) } }
