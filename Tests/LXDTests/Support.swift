import Foundation
import Logging
import Testing
@testable import LXD

/// Shared access to the real LXD daemon that `scripts/setup` starts. No skipping: if LXD is not
/// reachable, tests fail and say how to start it.
enum TestLXD {
    static let busybox = "iotgw-busybox"

    static func client() throws -> LXDClient {
        var logger = Logger(label: "lxd-tests")
        logger.logLevel = .warning
        let client = try LXDClient(logger: logger)
        guard LXDSocket.isSocket(client.socketPath) else {
            Issue.record("LXD socket \(client.socketPath) is missing: run scripts/setup (it installs and starts LXD)")
            throw LXDError(code: .unreachable, message: "no LXD socket")
        }
        return client
    }

    /// A unique test instance name; `scripts/test` fails the run if any `t-` instance is left behind.

    /// Runs `body`, then force-deletes the named instances, whether `body` succeeded or not.
    static func cleaningUp<R>(_ names: [String], _ body: () async throws -> R) async throws -> R {
        let lxd = try client()
        do {
            let r = try await body()
            for n in names { try await lxd.forceDeleteInstance(n) }
            return r
        } catch {
            for n in names { try? await lxd.forceDeleteInstance(n) }
            throw error
        }
    }

    /// Runs `body` with a freshly created (and by default started) busybox container that is
    /// deleted afterwards, whether `body` succeeds or throws.
    static func withInstance<R>(_ tag: String = "lxd", start: Bool = true, config: [String: String] = [:],
                                devices: [String: Device] = [:],
                                _ body: (LXDClient, String) async throws -> R) async throws -> R {
        let lxd = try client()
        let name = "t-\(tag)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        do {
            try await lxd.createInstance(InstancesPost(name: name, source: .image(alias: busybox), profiles: ["default"],
                                                       config: config, devices: devices))
            if start { try await lxd.start(name) }
            let result = try await body(lxd, name)
            try await lxd.forceDeleteInstance(name)
            return result
        } catch {
            try? await lxd.forceDeleteInstance(name)
            throw error
        }
    }
}

enum Fixture {
    static func data(_ name: String) throws -> Data {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures") else {
            throw LXDError(code: .invalidArgument, message: "missing fixture \(name)")
        }
        return try Data(contentsOf: url)
    }

    static func metadata<T: Decodable>(_ name: String, as: T.Type) throws -> T {
        try #require(try JSONDecoder().decode(ResponseEnvelope<T>.self, from: data(name)).metadata)
    }
}
