import LXD

/// One step of a container's life, timed over all containers of a round.
enum Phase: String, CaseIterable, Codable, Sendable {
    case create, start, exec, push, stop, delete
}

/// The two ways of talking to LXD that are compared.
enum DriverKind: String, CaseIterable, Codable, Sendable {
    case client, cli

    /// One letter for container names.
    var tag: String { self == .client ? "a" : "l" }
}

/// Performs one phase on one container. Both drivers must ask LXD for the same work:
///
/// | phase  | client                                    | cli                                   |
/// |--------|-------------------------------------------|---------------------------------------|
/// | create | `createInstance` (alias, profile default) | `lxc init IMAGE NAME`                 |
/// | start  | `start`                                   | `lxc start NAME`                      |
/// | exec   | `exec(NAME, ["true"])`                    | `lxc exec NAME -- true` (stdin null)  |
/// | push   | `pushFile` 1 MiB to /tmp/x, 0:0 0644      | `lxc file push FILE NAME/tmp/x`       |
/// | stop   | `stop(force: true)`                       | `lxc stop --force NAME`               |
/// | delete | `deleteInstance` (stopped)                | `lxc delete NAME` (stopped)           |
///
/// Stop is forced on both sides: a clean stop of busybox takes ~3 s of guest shutdown that neither
/// side controls and that would drown the difference being measured.
protocol Driver: Sendable {
    var kind: DriverKind { get }
    func perform(_ phase: Phase, on name: String) async throws
}

/// Drives LXD through our `LXDClient`.
struct ClientDriver: Driver {
    let client: LXDClient
    let image: String
    let payloadPath: String

    var kind: DriverKind { .client }

    func perform(_ phase: Phase, on name: String) async throws {
        switch phase {
        case .create:
            try await client.createInstance(InstancesPost(name: name, source: .image(alias: image)))
        case .start:
            try await client.start(name)
        case .exec:
            let result = try await client.exec(name, ["true"])
            guard result.succeeded else {
                throw BenchError(message: "client: exec true in \(name) exited \(result.exitCode): \(result.stderr)")
            }
        case .push:
            try await client.pushFile(name, localPath: payloadPath, to: Benchmark.remotePath,
                                      attributes: FileAttributes(uid: 0, gid: 0, mode: 0o644))
        case .stop:
            try await client.stop(name, force: true)
        case .delete:
            try await client.deleteInstance(name)
        }
    }
}

/// Drives LXD by spawning the `lxc` CLI, one process per call, as a shell script would.
struct CLIDriver: Driver {
    let lxc: CommandRunner
    let image: String
    let payloadPath: String

    var kind: DriverKind { .cli }

    func arguments(_ phase: Phase, _ name: String) -> [String] {
        switch phase {
        case .create: ["init", image, name]
        case .start: ["start", name]
        case .exec: ["exec", name, "--", "true"]
        case .push: ["file", "push", payloadPath, "\(name)\(Benchmark.remotePath)"]
        case .stop: ["stop", "--force", name]
        case .delete: ["delete", name]
        }
    }

    func perform(_ phase: Phase, on name: String) async throws {
        try await lxc.run(arguments(phase, name))
    }
}

/// A failure of the benchmark itself (not of the code under test's speed).
struct BenchError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
