import Chef
import Foundation
import Logging
import Testing
@testable import VendorService

/// The real goiardi that `scripts/start-goiardi` runs (127.0.0.1:4545, auth on, admin key in its conf
/// root). Never skipped: if it does not answer, the test fails and says how to start it.
enum Goiardi {
    // The same knobs as scripts/start-goiardi.
    static let env = ProcessInfo.processInfo.environment
    static let url = "http://\(env["IOTGW_GOIARDI_ADDR"] ?? "127.0.0.1"):\(env["IOTGW_GOIARDI_PORT"] ?? "4545")"
    static var adminKeyPath: String { (env["IOTGW_GOIARDI_CONF_ROOT"] ?? "/var/lib/iotgw-goiardi") + "/admin.pem" }

    /// A client signing as goiardi's `admin`, after checking goiardi answers to it.
    static func admin() async throws -> ChefClient {
        let pem: String
        do { pem = try String(contentsOfFile: adminKeyPath, encoding: .utf8) } catch {
            Issue.record("cannot read goiardi's admin key \(adminKeyPath) (\(error)): run scripts/start-goiardi")
            throw error
        }
        var admin = try ChefClient(serverURL: url, credentials: ChefCredentials(name: "admin", pemRepresentation: pem), logger: Harness.logger)
        admin.requestTimeout = .seconds(10)
        do {
            _ = try await admin.nodeNames()
        } catch let error as ChefError where error.code == .unreachable || error.code == .timeout {
            Issue.record("goiardi does not answer on \(url) (\(error)): run scripts/start-goiardi")
            throw error
        } catch let error as ChefError where error.code == .unauthorized {
            Issue.record("goiardi on \(url) refuses \(adminKeyPath) (\(error)): run scripts/start-goiardi")
            throw error
        }
        return admin
    }

    /// The `chef` section for goiardi.
    static var settings: VendorConfiguration.ChefSettings {
        .init(serverURL: url, adminName: "admin", adminKey: adminKeyPath)
    }

    /// A vendor id no other test (or earlier run) uses, so node names never collide.
    static func uniqueVendor() -> String { "t" + String(UInt32.random(in: 0...UInt32.max), radix: 36) }

    /// A harness with a unique vendor and a `chef` section for goiardi, its ``ChefProvisioner`` and an admin
    /// client; deletes the gateway's node and client afterwards, whether `body` succeeded or not.
    static func with(_ body: (Harness, ChefProvisioner, ChefClient) async throws -> Void) async throws {
        let admin = try await admin()
        try await Harness.with(configure: { $0.vendor = uniqueVendor(); $0.chef = settings }) { h in
            let provisioner = try #require(try ChefProvisioner.configured(by: h.configuration, store: h.store, logger: Harness.logger,
                                                                         now: { Harness.now }))
            let node = ChefProvisioner.nodeName(gatewayID: h.gateway.id, vendor: h.configuration.vendor)
            do {
                try await body(h, provisioner, admin)
            } catch {
                await clean(node, admin)
                throw error
            }
            await clean(node, admin)
        }
    }

    private static func clean(_ name: String, _ admin: ChefClient) async {
        try? await admin.deleteNode(named: name)
        try? await admin.deleteClient(named: name)
        let left = (try? await admin.nodeNames().contains(name)) ?? true
        #expect(!left, "node \(name) is still on goiardi after the test")
    }
}
