import AsyncHTTPClient
import Foundation
import Logging
import Testing
@testable import Chef

/// The real goiardi that `scripts/start-goiardi` runs on 127.0.0.1:4545 with auth on. No skipping:
/// if it does not answer, tests fail and say how to start it.
enum TestGoiardi {
    // The same knobs as scripts/start-goiardi.
    static let env = ProcessInfo.processInfo.environment
    static let url = "http://\(env["IOTGW_GOIARDI_ADDR"] ?? "127.0.0.1"):\(env["IOTGW_GOIARDI_PORT"] ?? "4545")"
    static let confRoot = env["IOTGW_GOIARDI_CONF_ROOT"] ?? "/var/lib/iotgw-goiardi"
    static var adminKeyPath: String { confRoot + "/admin.pem" }

    static var logger: Logger {
        var l = Logger(label: "chef-tests")
        l.logLevel = .warning
        return l
    }

    /// A client signing as goiardi's `admin` user.
    static func admin(_ proto: ChefSigningProtocol = .v1_1) async throws -> ChefClient {
        try await requireRunning()
        let pem: String
        do {
            pem = try String(contentsOfFile: adminKeyPath, encoding: .utf8)
        } catch {
            Issue.record("cannot read goiardi's admin key \(adminKeyPath) (\(error)): run scripts/start-goiardi")
            throw error
        }
        var chef = try ChefClient(serverURL: url, credentials: ChefCredentials(name: "admin", pemRepresentation: pem), logger: logger)
        chef.signingProtocol = proto
        chef.requestTimeout = .seconds(10)
        return chef
    }

    /// Fails the test (with what to run) unless goiardi answers.
    static func requireRunning() async throws {
        var request = HTTPClientRequest(url: url + "/")
        request.method = .GET
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(3))
            _ = try await response.body.collect(upTo: 1 << 20)
            guard response.headers.first(name: "X-Goiardi") == "yes" else {
                Issue.record("something that is not goiardi answers on \(url): run scripts/start-goiardi")
                throw ChefError(code: .unreachable, message: "not goiardi")
            }
        } catch let e as ChefError {
            throw e
        } catch {
            Issue.record("goiardi does not answer on \(url) (\(error)): run scripts/start-goiardi")
            throw ChefError(code: .unreachable, message: "goiardi not running")
        }
    }

    /// A unique object name for one test.
    static func uniqueName(_ tag: String) -> String {
        "t-\(tag)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    }

    /// Runs `body`, then deletes the named node and client as admin, whether `body` succeeded or not.
    static func cleaningUp<R>(node: String? = nil, client: String? = nil, _ body: () async throws -> R) async throws -> R {
        let admin = try await admin()
        func clean() async {
            if let node { try? await admin.deleteNode(named: node) }
            if let client { try? await admin.deleteClient(named: client) }
        }
        do {
            let r = try await body()
            await clean()
            return r
        } catch {
            await clean()
            throw error
        }
    }
}
