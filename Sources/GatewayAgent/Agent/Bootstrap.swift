import AsyncHTTPClient
import Foundation
import GatewayProtocol
import Logging
import LXD

/// Loads or creates the gateway's key pair (created on first start, kept 0600 in the state directory).
public enum IdentityStore {
    public static func loadOrCreate(stateDirectory: String) throws -> GatewayIdentity {
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let path = (stateDirectory as NSString).appendingPathComponent("gateway.key")
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            return GatewayIdentity(key: try Keys.decodePrivate(text))
        }
        let identity = GatewayIdentity(key: .init())
        // Write to a temp file and rename, so a crash never leaves a half-written key behind.
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data((identity.privateKeyBase64 + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw ConfigError("cannot write \(tmp)")
        }
        guard rename(tmp, path) == 0 else { throw ConfigError("cannot create \(path) (errno \(errno))") }
        return identity
    }
}

extension GatewayAgent {
    /// Wires an agent from a configuration: state directory, database, identity, LXD and vendor clients.
    public static func make(config: GatewayConfig, http: HTTPClient, logger: Logger) throws -> GatewayAgent {
        let identity = try IdentityStore.loadOrCreate(stateDirectory: config.stateDirectory)
        let store = try GatewayStore(path: (config.stateDirectory as NSString).appendingPathComponent("gateway.sqlite"))
        // LXD may not be running yet: the path is fixed now and calls fail (and are retried) until it is.
        let socket = config.lxd.socket ?? (try? LXDSocket.discover(environment: ProcessInfo.processInfo.environment))
            ?? "/var/lib/lxd/unix.socket"
        let lxd = try LXDClient(socketPath: socket, httpClient: http, logger: logger)
        return GatewayAgent(config: config, store: store, identity: identity, lxd: lxd,
                            vendors: VendorClient(http: http, identity: identity, logger: logger), logger: logger)
    }
}
