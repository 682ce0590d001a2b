import Crypto
import Foundation
import GatewayAgent
import GatewayProtocol
import Hummingbird
import Logging
import LXD
import NIOCore
import NIOFoundationCompat
import Testing
import UmockdevTesting

/// A vendor daemon that answers each device (by serial) with a crafted response, signed with the
/// vendor key the gateway trusts unless the case is about signatures.
struct HostileVendor: Sendable {
    let id: String
    let port: Int
    let rawKey: Data
    let fingerprint: String

    var key: Curve25519.Signing.PrivateKey {
        // Invariant: rawKey came from a valid key.
        try! Curve25519.Signing.PrivateKey(rawRepresentation: rawKey)
    }

    func validPlan(_ a: Announcement) -> ProvisioningPlan {
        ProvisioningPlan(vendor: id, gatewayID: a.gatewayID, version: max(1, a.currentPlanVersion), issuedAt: Date(),
                         expiresAt: Date().addingTimeInterval(600),
                         container: ContainerSpec(name: ProvisioningPlan.containerName(forVendor: id),
                                                  image: ImageRef(alias: "iotgw-busybox", fingerprint: fingerprint),
                                                  limits: ResourceLimits(cpus: 1, memoryMiB: 64, diskMiB: 256, processes: 100), network: .nat),
                         devices: [DeviceGrant(serial: a.device.serial, vendorID: a.device.vendorID, productID: a.device.productID,
                                               kind: .unixChar, path: "/dev/ttyUSB0")],
                         apps: [AppSpec(name: "x", version: "1", runList: ["recipe[x]"])])
    }

    func signed(_ p: ProvisioningPlan, with k: Curve25519.Signing.PrivateKey? = nil) throws -> Data {
        try WireJSON.encoder().encode(try PlanSigner(privateKey: k ?? key).sign(p))
    }

    /// The crafted answer for a device; the serial names the case.
    func answer(_ a: Announcement) throws -> Data {
        var p = validPlan(a)
        switch a.device.serial {
        case "BAD-MALFORMED": return Data("{\"payload\": 12, \"oops\"".utf8)
        case "BAD-OVERSIZED": return Data(("{\"pad\":\"" + String(repeating: "x", count: 80_000) + "\"}").utf8)
        case "BAD-KEY": return try signed(p, with: Curve25519.Signing.PrivateKey())
        case "BAD-TAMPERED":
            var env = try PlanSigner(privateKey: key).sign(p)
            p.container.limits.memoryMiB = 512  // the payload says more than what was signed
            env.payload = try WireJSON.encoder().encode(p).base64EncodedString()
            return try WireJSON.encoder().encode(env)
        case "BAD-OTHERGW": p.gatewayID = "gw-0000000000000000"
        case "BAD-FOREIGN": p.container.name = "iotgw-someone-else"
        case "BAD-NAME": p.container.name = "../../etc"
        case "BAD-EXPIRED": p.expiresAt = Date().addingTimeInterval(-60)
        case "BAD-CAPS": p.container.limits.cpus = 64
        case "BAD-PATH": p.devices[0].path = "/etc/shadow"
        case "BAD-SCHEMA": p.schema = 7
        case "BAD-FINGERPRINT": p.container.image.fingerprint = String(repeating: "0", count: 64)
        default: break
        }
        return try signed(p)
    }

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("/v1/announce") { req, _ -> Response in
            let body = try await req.body.collect(upTo: 16 * 1024)
            let a = try WireJSON.decoder().decode(Announcement.self, from: Data(buffer: body))
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: try answer(a))))
        }
        router.post("/v1/report") { _, _ in Response(status: .noContent) }
        var logger = Logger(label: "hostile-vendor")
        logger.logLevel = .warning
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
    }

    var entryYAML: String {
        "  - {id: \(id), match: [{vendorID: \"1d50\"}], daemonURL: \"http://127.0.0.1:\(port)\", allowInsecureHTTP: true, publicKey: \"\(Keys.encode(key.publicKey))\", policy: POLICY}"
    }
}

extension EndToEndTests {
    /// Every bad plan is refused with a clear reason, and nothing changes: no approval, no container.
    @Test func badPlansUnreachableVendorAndMissingLXDChangeNothing() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let fingerprint = try await lxd.imageAlias("iotgw-busybox").target
        let hostile = HostileVendor(id: E2E.vendorID("evil"), port: freePort(), rawKey: Curve25519.Signing.PrivateKey().rawRepresentation,
                                    fingerprint: fingerprint)
        let late = HostileVendor(id: E2E.vendorID("late"), port: freePort(), rawKey: Curve25519.Signing.PrivateKey().rawRepresentation,
                                 fingerprint: fingerprint)
        let containers = [hostile.id, late.id].map(ProvisioningPlan.containerName(forVendor:))

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hostile.application().runService() }
            _ = try await eventually("hostile vendor listening") { canConnect(port: hostile.port) ? true : nil }

            let gateway = try GatewayFixture(vendors: [], root: root, extraVendorsYAML: [
                hostile.entryYAML.replacingOccurrences(of: "POLICY", with: "auto"),
                late.entryYAML.replacingOccurrences(of: "POLICY", with: "ask").replacingOccurrences(of: "1d50", with: "1d51"),
            ])
            try await E2EContext.cleaningUp(lxd, containers, daemons: { [gateway.daemon] }) {
                let testbed = try Testbed()
                try await gateway.start(testbed: testbed)
                let cases: [(String, String)] = [
                    ("BAD-MALFORMED", "malformed"), ("BAD-OVERSIZED", "tooLarge"), ("BAD-KEY", "unknownKey"), ("BAD-TAMPERED", "badSignature"),
                    ("BAD-OTHERGW", "wrongGateway"), ("BAD-FOREIGN", "foreignContainer"), ("BAD-NAME", "foreignContainer"),
                    ("BAD-EXPIRED", "expired"), ("BAD-CAPS", "exceeds this gateway's caps"), ("BAD-PATH", "device path"),
                    ("BAD-SCHEMA", "unsupportedSchema"),
                ]
                var nodes: [CharNode] = []
                for (i, (serial, reason)) in cases.enumerated() {
                    let node = try CharNode()
                    nodes.append(node)
                    try testbed.plug(vendorID: "1d50", productID: "6018", serial: serial, ttyName: "ttyACM\(i)", devnode: node.path)
                    let rejected = try await eventually("\(serial) rejected") {
                        try gateway.devices().first { $0.serial == serial && $0.subsystem == "tty" && $0.state == "rejected" }
                    }
                    #expect(rejected.error?.contains(reason) == true, "\(serial): \(rejected.error ?? "no error")")
                }
                #expect(try gateway.json(["approvals", "--all"], as: [ControlAPI.Approval].self).isEmpty, "no bad plan was recorded")
                #expect(try await lxd.listInstances(userFilter: ["iotgw.vendor": hostile.id]).isEmpty)

                // A valid plan whose image fingerprint does not match the local image: approved (policy auto), but
                // checked before anything is created.
                let node = try CharNode()
                try testbed.plug(vendorID: "1d50", productID: "6018", serial: "BAD-FINGERPRINT", ttyName: "ttyACM50", devnode: node.path)
                let vendor = try await eventually("fingerprint error reported") {
                    try gateway.status().vendors.first { $0.id == hostile.id && $0.error?.contains("fingerprintMismatch") == true }
                }
                #expect(vendor.appliedPlanVersion == nil)
                #expect(try await lxd.instanceExists(ProvisioningPlan.containerName(forVendor: hostile.id)) == false)

                // An unreachable vendor: the device waits and is retried with backoff; when the vendor comes up, it proceeds.
                let lateNode = try CharNode()
                try testbed.plug(vendorID: "1d51", productID: "0001", serial: "LATE-1", ttyName: "ttyACM60", devnode: lateNode.path)
                let waiting = try await eventually("retrying an unreachable vendor") {
                    try gateway.devices().first { $0.serial == "LATE-1" && $0.state == "announcing" && ($0.error?.contains("unreachable") ?? false) }
                }
                #expect(waiting.present)
                try await Task.sleep(for: .seconds(2))
                #expect(try gateway.approvals().isEmpty)
                group.addTask { try await late.application().runService() }
                let pending = try await eventually("approval once the vendor is reachable", timeout: .seconds(30)) {
                    try gateway.approvals().first { $0.vendor == late.id }
                }
                #expect(pending.devices.map(\.serial) == ["LATE-1"])
                let denied = try gateway.cli(["deny", "\(pending.id)"])
                #expect(denied.status == 0)
                _ = try await eventually("device denied") { try gateway.devices().first { $0.serial == "LATE-1" && $0.state == "denied" } }
                #expect(try await lxd.instanceExists(ProvisioningPlan.containerName(forVendor: late.id)) == false)
                // A decision is made once.
                #expect(try gateway.cli(["approve", "--yes", "\(pending.id)"]).status != 0)
                _ = nodes
            }

            // LXD not running (here: a socket path where no LXD answers): the daemon says so and waits for it, recording
            // no failure of the vendor's (LXD being away is not the vendor's or the plan's fault).
            let root2 = try E2E.tempRoot()
            let noLXD = try GatewayFixture(vendors: [], root: root2, lxdSocket: "/run/iotgw-no-lxd-here.socket", extraVendorsYAML: [
                hostile.entryYAML.replacingOccurrences(of: "POLICY", with: "auto"),
            ])
            try await E2EContext.cleaningUp(lxd, containers, daemons: { [noLXD.daemon] }) {
                let testbed = try Testbed()
                try await noLXD.start(testbed: testbed)
                let node = try CharNode()
                try testbed.plug(vendorID: "1d50", productID: "6018", serial: "GOOD-1", ttyName: "ttyACM70", devnode: node.path)
                let status = try await eventually("LXD down shown") {
                    let s = try noLXD.status()
                    return s.lxdDownSince != nil && s.vendors.first(where: { $0.id == hostile.id })?.approvedPlanVersion != nil ? s : nil
                }
                #expect(status.lxd.hasPrefix("down since"), "\(status.lxd)")
                #expect(status.vendors.first { $0.id == hostile.id }?.error == nil)
                #expect(try noLXD.devices().contains { $0.serial == "GOOD-1" && $0.state == "attaching" })
                #expect(noLXD.daemon?.isRunning == true)
            }
            group.cancelAll()
        }
    }
}
